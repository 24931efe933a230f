//! Replicas on a PostgreSQL state: the standby's forwarding thread, which commits the
//! conversations its callbacks concern to the state's queue, and the active replica's taking
//! thread, which takes them from there at once and enqueues them under its own rules.
//!
//! Every replica accepts callbacks; the one holding the state's lock deletes. A standby answers
//! a callback only once what it concerns is committed to the queue (at most
//! [`FORWARD_WAIT`](super::enforcer::FORWARD_WAIT) later; past that, or while the state is
//! unreachable, the forwarding thread keeps the conversations, up to the queue's capacity, and
//! commits them when it can), so a callback any replica answered survives that replica.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use crate::ids::UserId;
use crate::ledger::history::EventReason;
use crate::ledger::postgres::PgLocation;
use crate::ledger::postgres::queue::{QueueItem, QueueSession};

use super::enforcer::{Cause, Enforcer, Enqueued, Forward, Forwarded};
use super::reload::{Current, Pending, current};

/// How long a failed session waits before it is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// The most rows taken, or pushed, in one transaction.
const BATCH: usize = 1000;

/// How long the taking thread waits for a notification before it looks at the queue anyway
/// (a notification sent while its session was being replaced is not lost for longer).
const LOOK_AGAIN: Duration = Duration::from_millis(500);

/// Which state's queue.
#[derive(Clone, Debug)]
pub struct QueueTarget {
    /// The database.
    pub location: PgLocation,
    /// The state's name.
    pub name: String,
    /// The state's app.
    pub sdkappid: u64,
}

impl QueueTarget {
    fn connect(&self) -> Result<QueueSession, crate::ledger::PgError> {
        QueueSession::connect(&self.location, &self.name, self.sdkappid)
    }
}

/// Starts a standby's forwarding thread: at most `capacity` conversations wait for it, and
/// at most `capacity` rows are in the queue; past either, the users of what does not fit are
/// marked in `pending` (resynced once this replica is active). The thread ends, after one
/// last attempt to commit what it holds, when the returned [`Forward`] is dropped.
pub fn spawn_forwarder(target: QueueTarget, capacity: usize, pending: Arc<Pending>) -> Forward {
    let (tx, rx) = mpsc::sync_channel::<Forwarded>(capacity.max(1));
    let (committed_tx, committed_rx) = tokio::sync::watch::channel(0_u64);
    let _ = std::thread::Builder::new()
        .name("timctl-forward".to_owned())
        .spawn(move || forward_loop(&target, capacity.max(1), &pending, &rx, &committed_tx));
    Forward::new(tx, committed_rx)
}

fn forward_loop(
    target: &QueueTarget,
    capacity: usize,
    pending: &Pending,
    rx: &mpsc::Receiver<Forwarded>,
    committed: &tokio::sync::watch::Sender<u64>,
) {
    let mut session: Option<QueueSession> = None;
    let mut backlog: Vec<Forwarded> = Vec::new();
    let mut failed_at: Option<Instant> = None;
    let mut closed = false;
    while !closed || !backlog.is_empty() {
        if !closed {
            let next = if backlog.is_empty() {
                rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected)
            } else {
                rx.recv_timeout(RETRY)
            };
            match next {
                Ok(f) => backlog.push(f),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => closed = true,
            }
            while backlog.len() < BATCH.max(capacity)
                && let Ok(f) = rx.try_recv()
            {
                backlog.push(f);
            }
        }
        if backlog.is_empty() {
            continue;
        }
        let highest = backlog.iter().map(|f| f.seq).max().unwrap_or(0);
        let may_try = failed_at.is_none_or(|t| t.elapsed() >= RETRY) || closed;
        if may_try && push_backlog(target, capacity, pending, &mut session, &mut backlog) {
            failed_at = None;
        } else {
            failed_at.get_or_insert_with(Instant::now);
            if closed {
                // The last attempt failed: what is left is resynced once this replica is
                // active, or by the active one's takeover resync.
                pending.mark(backlog.drain(..).map(|f| f.key.from));
            } else if backlog.len() > capacity {
                let excess = backlog.len() - capacity;
                pending.mark(backlog.drain(..excess).map(|f| f.key.from));
            }
        }
        // Callbacks waiting for these are answered now: committed, or remembered here.
        committed.send_replace(highest);
    }
}

/// Commits the backlog to the queue (connecting first when needed); true when it is empty.
fn push_backlog(
    target: &QueueTarget,
    capacity: usize,
    pending: &Pending,
    session: &mut Option<QueueSession>,
    backlog: &mut Vec<Forwarded>,
) -> bool {
    if session.is_none() {
        match target.connect() {
            Ok(s) => *session = Some(s),
            Err(e) => {
                tracing::warn!(
                    error = %crate::apply::executor::error_chain(&e),
                    "a standby cannot reach the state's queue; callbacks are kept until it can"
                );
                return false;
            }
        }
    }
    let Some(s) = session.as_mut() else {
        return false;
    };
    let now_ms = jiff::Timestamp::now().as_millisecond();
    while !backlog.is_empty() {
        let n = backlog.len().min(BATCH);
        let items: Vec<QueueItem> = backlog[..n]
            .iter()
            .map(|f| QueueItem {
                key: f.key.clone(),
                clear_roaming: f.clear_roaming,
                arrived_ms: now_ms.saturating_sub(
                    i64::try_from(f.cause.arrived.elapsed().as_millis()).unwrap_or(0),
                ),
                trigger: f.cause.trigger.clone(),
            })
            .collect();
        match s.push(&items, capacity) {
            Ok(queued) => {
                let done: Vec<Forwarded> = backlog.drain(..n).collect();
                if queued < n {
                    // The queue is full: the active replica resyncs these users instead.
                    tracing::debug!("the state's queue is full: users marked for a resync");
                    pending.mark(done.into_iter().skip(queued).map(|f| f.key.from));
                }
            }
            Err(e) => {
                tracing::warn!(
                    error = %crate::apply::executor::error_chain(&e),
                    "a standby could not queue conversations in the state; kept until it can"
                );
                *session = None;
                return false;
            }
        }
    }
    true
}

/// The active replica's taking thread; it ends soon after [`Taker::quit`].
pub struct Taker {
    quit: Arc<AtomicBool>,
}

impl Taker {
    /// Asks the thread to end (it is not waited for: its session may be stalled).
    pub fn quit(&self) {
        self.quit.store(true, Ordering::SeqCst);
    }
}

impl Drop for Taker {
    fn drop(&mut self) {
        self.quit();
    }
}

/// Starts the active replica's taking thread: it listens on the queue's channel and takes the
/// rows at once, each enqueued in `enforcer` when the manifests `adopted` name it (with their
/// `clear_roaming`), with reason `enforced`; a row past the enforcer's capacity marks its user
/// in `pending`. `runtime` is where the enforcer's deletions run.
pub fn spawn_taker<D: crate::apply::Deleter + Clone + 'static>(
    target: QueueTarget,
    enforcer: Enforcer<D>,
    adopted: Current,
    pending: Arc<Pending>,
    runtime: tokio::runtime::Handle,
) -> Taker {
    let quit = Arc::new(AtomicBool::new(false));
    let flag = quit.clone();
    let _ = std::thread::Builder::new()
        .name("timctl-take".to_owned())
        .spawn(move || {
            let mut session: Option<QueueSession> = None;
            let mut warned = false;
            while !flag.load(Ordering::SeqCst) {
                let s = match session.as_mut() {
                    Some(s) => s,
                    None => match target.connect() {
                        Ok(s) => session.insert(s),
                        Err(e) => {
                            if !warned {
                                tracing::warn!(
                                    error = %crate::apply::executor::error_chain(&e),
                                    "cannot reach the state's queue; trying again"
                                );
                                warned = true;
                            }
                            std::thread::sleep(RETRY);
                            continue;
                        }
                    },
                };
                let taken = s.take(BATCH as i64, |items| {
                    let _entered = runtime.enter();
                    hand(&enforcer, &adopted, &pending, items);
                });
                let looked = match taken {
                    Ok(n) if n >= BATCH => continue,
                    Ok(_) => s.wait(LOOK_AGAIN).map(|_| ()),
                    Err(e) => Err(e),
                };
                if let Err(e) = looked {
                    if !warned {
                        tracing::warn!(
                            error = %crate::apply::executor::error_chain(&e),
                            "the state's queue failed; trying again"
                        );
                        warned = true;
                    }
                    session = None;
                    std::thread::sleep(RETRY);
                } else {
                    warned = false;
                }
            }
        });
    Taker { quit }
}

/// Enqueues what was taken from the queue, under this replica's own manifests: a conversation
/// they do not name is dropped (serve never deletes what no manifest it adopted names), and
/// `clear_roaming` is theirs.
fn hand<D: crate::apply::Deleter + Clone + 'static>(
    enforcer: &Enforcer<D>,
    adopted: &Current,
    pending: &Pending,
    items: Vec<QueueItem>,
) {
    let generation = current(adopted);
    let entries = &generation.desired.entries;
    let now_ms = jiff::Timestamp::now().as_millisecond();
    for item in items {
        let Ok(i) = entries.binary_search_by(|e| e.key.cmp(&item.key)) else {
            tracing::debug!("a queued conversation the manifests no longer name is dropped");
            continue;
        };
        let waited = Duration::from_millis(u64::try_from(now_ms - item.arrived_ms).unwrap_or(0));
        let cause = Cause {
            arrived: Instant::now()
                .checked_sub(waited)
                .unwrap_or_else(Instant::now),
            reason: EventReason::Enforced,
            trigger: item.trigger,
        };
        let from = item.key.from.clone();
        if enforcer.enqueue(item.key, entries[i].clear_roaming, cause) == Enqueued::Overflow {
            pending.mark([from]);
        }
    }
}

/// On becoming a standby with users still to resync (their deletions were lost with the
/// state): each of their manifest entries goes to the queue, for the active replica to delete.
/// Returns how many were forwarded.
pub fn forward_users<D: crate::apply::Deleter + Clone + 'static>(
    enforcer: &Enforcer<D>,
    adopted: &Current,
    users: &std::collections::BTreeSet<UserId>,
) -> usize {
    let generation = current(adopted);
    let mut n = 0;
    for e in generation
        .desired
        .entries
        .iter()
        .filter(|e| users.contains(&e.key.from))
    {
        let cause = Cause {
            arrived: Instant::now(),
            reason: EventReason::Enforced,
            trigger: None,
        };
        if enforcer.enqueue(e.key.clone(), e.clear_roaming, cause) != Enqueued::Overflow {
            n += 1;
        }
    }
    n
}
