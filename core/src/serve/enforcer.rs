//! From queued conversations to recorded deletions.
//!
//! A conversation is in the queue once however many messages arrive for it (a map from its
//! key to one slot). The first message's deletion starts at once; messages that arrive while
//! it runs, or within `settle` of its start, mark the slot, and one more deletion follows at
//! the window's end; so a conversation costs at most one call per window, and the last message
//! is always followed by a deletion. Deletions go through the apply's
//! [`Deleter`](crate::apply::Deleter) (the same client, limiter, retries and fatal stop), and
//! every confirmed one goes to a recording thread that commits a batch at most
//! [`RECORD_INTERVAL`] after it, with its history event.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::apply::{Deleter, Deletion, DeletionOutcome};
use crate::ids::ConversationKey;
use crate::ledger::history::EventReason;
use crate::ledger::{Deleted, DetailedDeletion, LedgerWriter, Origin, RunInfo, StateEntry};
use crate::stop::{Stop, StopReason};

use super::metrics::Metrics;
use super::reload::Pending;

/// A confirmed deletion is in the state at most this long after its confirmation (plus the
/// write itself): README's "within a second".
pub const RECORD_INTERVAL: Duration = Duration::from_millis(200);

/// Why a deletion is made.
#[derive(Clone, Debug, PartialEq)]
pub struct Cause {
    /// When the callback (or the resync's decision) arrived.
    pub arrived: Instant,
    /// The history's reason.
    pub reason: EventReason,
    /// The callback that triggered it, for an enforced deletion.
    pub trigger: Option<serde_json::Value>,
}

/// What [`Enforcer::enqueue`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enqueued {
    /// A deletion starts now.
    Started,
    /// A deletion runs or waits for its window: one more is scheduled at the window's end.
    Merged,
    /// The queue is full; nothing was queued.
    Overflow,
}

struct Slot {
    /// A message arrived during the current deletion's window: delete once more at its end,
    /// for this (the earliest waiting) cause.
    again: Option<Cause>,
}

/// What an active replica deletes with: the term's client, recording thread and stop signal.
/// A term ends when the state is lost (or serve stops); the next one brings its own.
struct Term<D> {
    deleter: D,
    /// Taken out by [`Enforcer::hold`], so that the recording thread can end even while a
    /// deletion abandoned at the shutdown timeout still runs.
    recorder: Mutex<Option<Recorder>>,
    stop: Stop,
}

/// Where an enqueued conversation goes.
enum Route<D> {
    /// This replica is active: it deletes.
    Active(Arc<Term<D>>),
    /// This replica is a standby: the conversations go to the state's queue, for the active
    /// replica.
    Standby(Forward),
    /// No state (starting, or lost): conversations are kept, up to the capacity, for whichever
    /// of the two this replica becomes next.
    Held(Vec<(ConversationKey, bool, Cause)>),
}

/// A conversation a standby forwards to the state's queue, numbered in the order given.
#[derive(Debug)]
pub struct Forwarded {
    /// Its number: the forwarding thread reports the highest one committed.
    pub seq: u64,
    /// Which conversation, as the standby's manifests name it.
    pub key: ConversationKey,
    /// As the standby's manifests say.
    pub clear_roaming: bool,
    /// Why (the callback's arrival and trigger).
    pub cause: Cause,
}

/// The way from a standby's enforcer to its forwarding thread (see `replica`).
pub struct Forward {
    tx: Mutex<(u64, mpsc::SyncSender<Forwarded>)>,
    committed: tokio::sync::watch::Receiver<u64>,
}

impl Forward {
    /// A forward through `tx`, whose thread reports on `committed` the highest number it has
    /// committed (or given up on, having remembered it).
    pub fn new(
        tx: mpsc::SyncSender<Forwarded>,
        committed: tokio::sync::watch::Receiver<u64>,
    ) -> Self {
        Forward {
            tx: Mutex::new((0, tx)),
            committed,
        }
    }

    fn send(&self, key: ConversationKey, clear_roaming: bool, cause: Cause) -> bool {
        let mut tx = lock(&self.tx);
        let seq = tx.0 + 1;
        let sent =
            tx.1.try_send(Forwarded {
                seq,
                key,
                clear_roaming,
                cause,
            })
            .is_ok();
        if sent {
            tx.0 = seq;
        }
        sent
    }
}

/// The longest a standby's callback waits for its conversations to be committed to the
/// state's queue before it is answered anyway (they stay remembered by the forwarding thread).
pub const FORWARD_WAIT: Duration = Duration::from_secs(2);

struct Inner<D> {
    settle: Duration,
    capacity: usize,
    slots: Mutex<HashMap<ConversationKey, Slot>>,
    route: std::sync::RwLock<Route<D>>,
    metrics: Arc<Metrics>,
    fatal: Mutex<Option<String>>,
    running: AtomicUsize,
    idle: Notify,
}

/// The queue and its workers. Cheap to clone.
pub struct Enforcer<D> {
    inner: Arc<Inner<D>>,
}

impl<D> Clone for Enforcer<D> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

/// What the recording thread is asked to do.
enum ToRecorder {
    /// Record a confirmed deletion (or an absence a resync saw) within [`RECORD_INTERVAL`].
    Record(DetailedDeletion),
    /// A new manifest generation is adopted: write what is pending, end the current run,
    /// begin `run`, and forget `forgets` (entries no manifest names any more) in it.
    NewRun {
        run: RunInfo,
        forgets: Vec<ConversationKey>,
    },
    /// Read the state's entries (for a resync's plan, or a reload's `--max-deletes` check).
    Entries(tokio::sync::oneshot::Sender<Result<Vec<StateEntry>, String>>),
}

/// The way to the recording thread. Cheap to clone; the thread ends (writing its last batch and
/// ending the run) once every clone is dropped.
#[derive(Clone)]
pub struct Recorder(mpsc::Sender<ToRecorder>);

impl Recorder {
    /// Records `deletion` within [`RECORD_INTERVAL`].
    pub fn record(&self, deletion: DetailedDeletion) {
        let _ = self.0.send(ToRecorder::Record(deletion));
    }

    /// Ends the current run and begins `run`, in which `forgets` are forgotten.
    pub fn new_run(&self, run: RunInfo, forgets: Vec<ConversationKey>) {
        let _ = self.0.send(ToRecorder::NewRun { run, forgets });
    }

    /// The state's entries, read by the thread that holds the writer.
    pub async fn entries(&self) -> Result<Vec<StateEntry>, String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.0
            .send(ToRecorder::Entries(tx))
            .map_err(|_| "the recording thread has stopped".to_owned())?;
        rx.await
            .map_err(|_| "the recording thread has stopped".to_owned())?
    }
}

#[cfg(test)]
impl Recorder {
    /// A recorder whose messages the test reads: the deletions it was given.
    fn for_test() -> (Recorder, impl Fn() -> Vec<DetailedDeletion>) {
        let (tx, rx) = mpsc::channel();
        let read = move || {
            rx.try_iter()
                .filter_map(|m| match m {
                    ToRecorder::Record(d) => Some(d),
                    _ => None,
                })
                .collect()
        };
        (Recorder(tx), read)
    }
}

/// The recording thread: it owns the state's writer (and so its lock) until every
/// [`Recorder`] is dropped, then ends the run and hands the writer back.
pub struct RecorderThread<W> {
    handle: std::thread::JoinHandle<(W, Result<(), String>)>,
}

impl<W> RecorderThread<W> {
    /// Waits for the last batch; the writer comes back with the first failure, if any.
    pub fn join(self) -> (W, Result<(), String>) {
        match self.handle.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

/// Starts the recording thread for `run` (already begun) on `writer`. A failed write raises
/// `stop` (as apply's recorder does: no call may be made whose result cannot be recorded).
pub fn spawn_recorder<W: LedgerWriter + Send + 'static>(
    mut writer: W,
    mut run: RunInfo,
    stop: Stop,
    lost: Arc<Pending>,
) -> (Recorder, RecorderThread<W>) {
    let (tx, rx) = mpsc::channel::<ToRecorder>();
    // When the current write started (milliseconds since `epoch`, plus one), 0 when none runs:
    // the watchdog's view of a state that stalls.
    let busy_since = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let epoch = Instant::now();
    spawn_stall_watchdog(busy_since.clone(), finished.clone(), epoch, stop.clone());
    let handle = std::thread::spawn(move || {
        let mut failure: Option<String> = None;
        let mut recorded = 0_u64;
        let mut batch: Vec<DetailedDeletion> = Vec::new();
        let fail = |what: &str, e: &crate::ledger::LedgerError, failure: &mut Option<String>| {
            let message = crate::apply::executor::error_chain(e);
            tracing::error!(error = %message, "{what} failed: the state is lost; calls stop");
            stop.stop(StopReason::RecordFailed);
            failure.get_or_insert(message);
        };
        let write = |writer: &mut W,
                     run: &RunInfo,
                     batch: &mut Vec<DetailedDeletion>,
                     recorded: &mut u64,
                     failure: &mut Option<String>| {
            if batch.is_empty() {
                return;
            }
            if failure.is_some() {
                // Confirmed, never to be recorded by this term: their users are resynced.
                lost.mark(batch.drain(..).map(|d| d.deleted.key.from));
                return;
            }
            let users: Vec<crate::ids::UserId> =
                batch.iter().map(|d| d.deleted.key.from.clone()).collect();
            busy_since.store(epoch.elapsed().as_millis() as u64 + 1, Ordering::SeqCst);
            // Absences a refresh saw (no call made; reason `absent`) are recorded as such.
            let (absent, deleted): (Vec<_>, Vec<_>) = batch
                .drain(..)
                .partition(|d| d.reason == EventReason::Plan(crate::plan::Reason::Absent));
            let written = writer
                .record_detailed(run, Origin::Deleted, &deleted)
                .and_then(|_| writer.record_detailed(run, Origin::Absent, &absent));
            busy_since.store(0, Ordering::SeqCst);
            match written {
                Ok(_) => *recorded += deleted.len() as u64,
                Err(e) => {
                    lost.mark(users);
                    fail("recording deletions", &e, failure);
                }
            }
        };
        let mut closed = false;
        while !closed {
            let Ok(first) = rx.recv() else { break };
            let mut pending = Some(first);
            let deadline = Instant::now() + RECORD_INTERVAL;
            loop {
                match pending.take() {
                    Some(ToRecorder::Record(d)) => batch.push(d),
                    Some(ToRecorder::Entries(reply)) => {
                        // What is pending is written first, so that the answer includes it.
                        write(&mut writer, &run, &mut batch, &mut recorded, &mut failure);
                        let _ = reply.send(
                            writer
                                .entries()
                                .map_err(|e| crate::apply::executor::error_chain(&e)),
                        );
                    }
                    Some(ToRecorder::NewRun { run: next, forgets }) => {
                        write(&mut writer, &run, &mut batch, &mut recorded, &mut failure);
                        run.end([("deleted", recorded)]);
                        if let Err(e) = writer.end_run(&run) {
                            fail("ending the run", &e, &mut failure);
                        }
                        run = next;
                        recorded = 0;
                        if let Err(e) = writer.begin_run(&run) {
                            fail("beginning a run", &e, &mut failure);
                        } else if !forgets.is_empty()
                            && let Err(e) = writer.forget(&forgets)
                        {
                            fail("forgetting entries", &e, &mut failure);
                        }
                    }
                    None => {}
                }
                match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                    Ok(next) => pending = Some(next),
                    Err(mpsc::RecvTimeoutError::Timeout) => break,
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
            }
            write(&mut writer, &run, &mut batch, &mut recorded, &mut failure);
        }
        run.end([("deleted", recorded)]);
        if let Err(e) = writer.end_run(&run)
            && failure.is_none()
        {
            failure = Some(crate::apply::executor::error_chain(&e));
        }
        finished.store(true, Ordering::SeqCst);
        (writer, failure.map_or(Ok(()), Err))
    });
    (Recorder(tx), RecorderThread { handle })
}

/// A write to the state that takes longer than this is a stalled state: calls stop, as when
/// the state is lost (a server stopped mid-statement answers nothing, and neither its
/// statement timeout nor TCP ever fires).
pub const STALL: Duration = Duration::from_millis(1500);

/// Raises `stop` (`RecordFailed`) once a write has been running for [`STALL`]; ends with the
/// recording thread.
fn spawn_stall_watchdog(
    busy_since: Arc<std::sync::atomic::AtomicU64>,
    finished: Arc<std::sync::atomic::AtomicBool>,
    epoch: Instant,
    stop: Stop,
) {
    let _ = std::thread::Builder::new()
        .name("timctl-state-watchdog".to_owned())
        .spawn(move || {
            while !finished.load(Ordering::SeqCst) && !stop.is_stopped() {
                std::thread::sleep(Duration::from_millis(100));
                let since = busy_since.load(Ordering::SeqCst);
                if since == 0 {
                    continue;
                }
                let now = epoch.elapsed().as_millis() as u64 + 1;
                if now.saturating_sub(since) >= STALL.as_millis() as u64 {
                    tracing::error!(
                        seconds = STALL.as_secs_f64(),
                        "a write to the state has not finished: the state stalled; calls stop"
                    );
                    stop.stop(StopReason::RecordFailed);
                    return;
                }
            }
        });
}

impl<D: Deleter + Clone + 'static> Enforcer<D> {
    /// An active enforcer deleting through `deleter`, recording through `recorder`, with at
    /// most `capacity` conversations queued. `stop` is the client's: a fatal answer raises it.
    pub fn new(
        deleter: D,
        recorder: Recorder,
        settle: Duration,
        capacity: usize,
        metrics: Arc<Metrics>,
        stop: Stop,
    ) -> Self {
        let enforcer = Self::held(settle, capacity, metrics);
        enforcer.activate(deleter, recorder, stop);
        enforcer
    }

    /// An enforcer with no state yet: it keeps what it is given (up to `capacity`) until it
    /// is made active ([`Self::activate`]) or a standby ([`Self::standby`]).
    pub fn held(settle: Duration, capacity: usize, metrics: Arc<Metrics>) -> Self {
        Enforcer {
            inner: Arc::new(Inner {
                settle,
                capacity,
                slots: Mutex::new(HashMap::new()),
                route: std::sync::RwLock::new(Route::Held(Vec::new())),
                metrics,
                fatal: Mutex::new(None),
                running: AtomicUsize::new(0),
                idle: Notify::new(),
            }),
        }
    }

    /// Starts a term: from now on conversations are deleted through `deleter` and recorded
    /// through `recorder`, until `stop` is raised. What was held meanwhile is enqueued now.
    pub fn activate(&self, deleter: D, recorder: Recorder, stop: Stop) {
        let term = Arc::new(Term {
            deleter,
            recorder: Mutex::new(Some(recorder)),
            stop,
        });
        let previous = std::mem::replace(&mut *self.route_mut(), Route::Active(term));
        if let Route::Held(held) = previous {
            for (key, clear_roaming, cause) in held {
                self.enqueue(key, clear_roaming, cause);
            }
        }
    }

    /// Makes this a standby's enforcer: conversations go to `forward`; what was held meanwhile
    /// goes first.
    pub fn standby(&self, forward: Forward) {
        let previous = std::mem::replace(&mut *self.route_mut(), Route::Standby(forward));
        if let Route::Held(held) = previous {
            for (key, clear_roaming, cause) in held {
                self.enqueue(key, clear_roaming, cause);
            }
        }
    }

    /// Ends the current term or standby: conversations are held from now on. The term's stop
    /// must have been raised first (no deletion starts after it). Returns the users of the
    /// conversations still queued or being deleted, whose deletion may now never be made or
    /// recorded: they need a resync.
    pub fn hold(&self) -> Vec<crate::ids::UserId> {
        let previous = std::mem::replace(&mut *self.route_mut(), Route::Held(Vec::new()));
        if let Route::Active(term) = previous {
            lock(&term.recorder).take();
        }
        lock(&self.inner.slots)
            .keys()
            .map(|k| k.from.clone())
            .collect()
    }

    /// Whether this enforcer deletes (its replica is active).
    pub fn is_active(&self) -> bool {
        matches!(&*self.route(), Route::Active(_))
    }

    fn route(&self) -> std::sync::RwLockReadGuard<'_, Route<D>> {
        self.inner.route.read().unwrap_or_else(|p| p.into_inner())
    }

    fn route_mut(&self) -> std::sync::RwLockWriteGuard<'_, Route<D>> {
        self.inner.route.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues the deletion of `key` for `cause` (see the module's settle rule); on a standby,
    /// forwards it to the state's queue ([`Self::flush`] waits for that to be committed).
    /// Must be called within the Tokio runtime.
    pub fn enqueue(&self, key: ConversationKey, clear_roaming: bool, cause: Cause) -> Enqueued {
        let active = match &*self.route() {
            Route::Active(term) => Some(term.clone()),
            Route::Standby(forward) => {
                return if forward.send(key, clear_roaming, cause) {
                    Enqueued::Started
                } else {
                    Enqueued::Overflow
                };
            }
            Route::Held(_) => None,
        };
        let Some(term) = active else {
            let mut route = self.route_mut();
            return match &mut *route {
                Route::Held(held) if held.len() < self.inner.capacity => {
                    held.push((key, clear_roaming, cause));
                    Enqueued::Merged
                }
                Route::Held(_) => Enqueued::Overflow,
                // Made active or a standby meanwhile: go round again.
                _ => {
                    drop(route);
                    self.enqueue(key, clear_roaming, cause)
                }
            };
        };
        let inner = &self.inner;
        let mut slots = lock(&inner.slots);
        if let Some(slot) = slots.get_mut(&key) {
            slot.again.get_or_insert(cause);
            return Enqueued::Merged;
        }
        if slots.len() >= inner.capacity {
            return Enqueued::Overflow;
        }
        slots.insert(key.clone(), Slot { again: None });
        inner.metrics.set_queue_depth(slots.len());
        inner.running.fetch_add(1, Ordering::SeqCst);
        drop(slots);
        let worker = self.inner.clone();
        tokio::spawn(async move {
            work(&worker, &term, key, clear_roaming, cause).await;
            if worker.running.fetch_sub(1, Ordering::SeqCst) == 1 {
                worker.idle.notify_waiters();
            }
        });
        Enqueued::Started
    }

    /// On a standby: waits (at most [`FORWARD_WAIT`]) until everything forwarded so far is
    /// committed to the state's queue, so that a callback is answered only once what it
    /// concerns is durable. Elsewhere it returns at once.
    pub async fn flush(&self) {
        let (target, mut committed) = match &*self.route() {
            Route::Standby(forward) => (lock(&forward.tx).0, forward.committed.clone()),
            _ => return,
        };
        let _ = tokio::time::timeout(FORWARD_WAIT, committed.wait_for(|c| *c >= target)).await;
    }

    /// How many conversations are queued or being deleted.
    pub fn depth(&self) -> usize {
        lock(&self.inner.slots).len()
    }

    /// The fatal answer that stopped serve, if one did.
    pub fn fatal(&self) -> Option<String> {
        lock(&self.inner.fatal).clone()
    }

    /// Waits until no deletion runs or waits (at most `timeout`); true when idle.
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.inner.idle.notified();
            if self.inner.running.load(Ordering::SeqCst) == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.inner.running.load(Ordering::SeqCst) == 0;
            }
        }
    }

    /// The resync's deletions (the plan's, without refresh: what the state does not record yet),
    /// `concurrency` at a time through `deleter`, each confirmed one sent to `recorder` with its
    /// plan reason. Stops starting new ones when the term's stop or `shutdown` is raised.
    /// Returns how many failed or were not made (0: the resync succeeded).
    ///
    /// `deleter` is the enforcement's client in its limiter's background lane
    /// (`adapters::deleter::Background`), so that enforcement goes first.
    pub async fn resync<R: Deleter>(
        &self,
        deleter: &R,
        deletions: Vec<(Deletion, EventReason)>,
        recorder: &Recorder,
        concurrency: usize,
        shutdown: &std::sync::atomic::AtomicBool,
    ) -> usize {
        use futures::StreamExt;
        let stop = match &*self.route() {
            Route::Active(term) => term.stop.clone(),
            _ => return deletions.len(),
        };
        let (metrics, stop) = (&*self.inner.metrics, &stop);
        let results = futures::stream::iter(deletions)
            .map(|(d, reason)| async move {
                if stop.is_stopped() || shutdown.load(Ordering::SeqCst) {
                    return (d, reason, DeletionOutcome::NotSent);
                }
                let outcome = deleter.delete(&d).await;
                (d, reason, outcome)
            })
            .buffer_unordered(concurrency.max(1));
        futures::pin_mut!(results);
        let mut unfinished = 0;
        while let Some((d, reason, outcome)) = results.next().await {
            let label = reason.as_str();
            let confirmed = match &outcome {
                DeletionOutcome::Deleted => {
                    metrics.deletion(label, "deleted");
                    true
                }
                DeletionOutcome::AlreadyAbsent { .. } => {
                    metrics.deletion(label, "already_absent");
                    true
                }
                DeletionOutcome::ItemFailed { .. } => {
                    metrics.deletion(label, "failed");
                    false
                }
                DeletionOutcome::Fatal { message } => {
                    metrics.deletion(label, "fatal");
                    lock(&self.inner.fatal).get_or_insert_with(|| message.clone());
                    stop.stop(StopReason::Fatal);
                    false
                }
                DeletionOutcome::NotSent => false,
            };
            if confirmed {
                recorder.record(DetailedDeletion {
                    deleted: Deleted {
                        key: d.key,
                        clear_roaming: d.clear_roaming,
                        deleted_at: jiff::Timestamp::now(),
                    },
                    reason,
                    trigger: None,
                    latency_ms: None,
                });
            } else {
                unfinished += 1;
            }
        }
        unfinished
    }

    /// Closes the recording channel (once every worker has dropped its use of it): the
    /// recording thread then writes its last batch and ends the run.
    pub fn close(&self) {
        self.hold();
    }
}

/// Deletes `key` for `cause`, then once more at the end of each window a message arrived in.
async fn work<D: Deleter>(
    inner: &Inner<D>,
    term: &Term<D>,
    key: ConversationKey,
    clear_roaming: bool,
    mut cause: Cause,
) {
    let deletion = Deletion {
        key: key.clone(),
        clear_roaming,
    };
    loop {
        let window_end = tokio::time::Instant::now() + inner.settle;
        let outcome = term.deleter.delete(&deletion).await;
        let reason = cause.reason.as_str();
        let confirmed = match &outcome {
            DeletionOutcome::Deleted => {
                inner.metrics.deletion(reason, "deleted");
                true
            }
            DeletionOutcome::AlreadyAbsent { .. } => {
                inner.metrics.deletion(reason, "already_absent");
                true
            }
            DeletionOutcome::ItemFailed { message, .. } => {
                inner.metrics.deletion(reason, "failed");
                tracing::warn!(
                    from = %key.from.as_str(),
                    peer = %key.peer.id(),
                    error = %message,
                    "a deletion failed"
                );
                false
            }
            DeletionOutcome::NotSent => false,
            DeletionOutcome::Fatal { message } => {
                inner.metrics.deletion(reason, "fatal");
                lock(&inner.fatal).get_or_insert_with(|| message.clone());
                term.stop.stop(StopReason::Fatal);
                false
            }
        };
        if confirmed {
            let latency = cause.arrived.elapsed();
            let enforced = cause.trigger.is_some();
            if enforced {
                inner.metrics.enforcement_latency(latency.as_secs_f64());
            }
            let record = DetailedDeletion {
                deleted: Deleted {
                    key: key.clone(),
                    clear_roaming,
                    deleted_at: jiff::Timestamp::now(),
                },
                reason: cause.reason,
                trigger: cause.trigger.clone(),
                latency_ms: enforced.then_some(latency.as_millis() as u64),
            };
            if let Some(recorder) = lock(&term.recorder).as_ref() {
                recorder.record(record);
            }
        }
        if !term.stop.is_stopped() {
            tokio::time::sleep_until(window_end).await;
        }
        let mut slots = lock(&inner.slots);
        let again = if term.stop.is_stopped() {
            None
        } else {
            slots.get_mut(&key).and_then(|s| s.again.take())
        };
        match again {
            Some(next) => cause = next,
            None => {
                slots.remove(&key);
                inner.metrics.set_queue_depth(slots.len());
                return;
            }
        }
    }
}

/// An enforcer and a resync share one client.
impl<T: Deleter> Deleter for Arc<T> {
    fn delete(&self, deletion: &Deletion) -> impl Future<Output = DeletionOutcome> + Send {
        (**self).delete(deletion)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests;
