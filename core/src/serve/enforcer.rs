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

/// A confirmed deletion is in the state at most this long after its confirmation (plus the
/// write itself): the contract's "within a second".
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

struct Inner<D> {
    deleter: D,
    settle: Duration,
    capacity: usize,
    slots: Mutex<HashMap<ConversationKey, Slot>>,
    recorder: Mutex<Option<Recorder>>,
    metrics: Arc<Metrics>,
    stop: Stop,
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
) -> (Recorder, RecorderThread<W>) {
    let (tx, rx) = mpsc::channel::<ToRecorder>();
    let handle = std::thread::spawn(move || {
        let mut failure: Option<String> = None;
        let mut recorded = 0_u64;
        let mut batch: Vec<DetailedDeletion> = Vec::new();
        let fail = |what: &str, e: &crate::ledger::LedgerError, failure: &mut Option<String>| {
            let message = crate::apply::executor::error_chain(e);
            tracing::error!(error = %message, "{what} failed; serve stops");
            stop.stop(StopReason::RecordFailed);
            failure.get_or_insert(message);
        };
        let write = |writer: &mut W,
                     run: &RunInfo,
                     batch: &mut Vec<DetailedDeletion>,
                     recorded: &mut u64,
                     failure: &mut Option<String>| {
            if batch.is_empty() || failure.is_some() {
                batch.clear();
                return;
            }
            // Absences a refresh saw (no call made; reason `absent`) are recorded as such.
            let (absent, deleted): (Vec<_>, Vec<_>) = batch
                .drain(..)
                .partition(|d| d.reason == EventReason::Plan(crate::plan::Reason::Absent));
            let written = writer
                .record_detailed(run, Origin::Deleted, &deleted)
                .and_then(|_| writer.record_detailed(run, Origin::Absent, &absent));
            match written {
                Ok(_) => *recorded += deleted.len() as u64,
                Err(e) => fail("recording deletions", &e, failure),
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
        (writer, failure.map_or(Ok(()), Err))
    });
    (Recorder(tx), RecorderThread { handle })
}

impl<D: Deleter + 'static> Enforcer<D> {
    /// An enforcer deleting through `deleter`, recording through `recorder`, with at most
    /// `capacity` conversations queued. `stop` is the client's: a fatal answer raises it.
    pub fn new(
        deleter: D,
        recorder: Recorder,
        settle: Duration,
        capacity: usize,
        metrics: Arc<Metrics>,
        stop: Stop,
    ) -> Self {
        Enforcer {
            inner: Arc::new(Inner {
                deleter,
                settle,
                capacity,
                slots: Mutex::new(HashMap::new()),
                recorder: Mutex::new(Some(recorder)),
                metrics,
                stop,
                fatal: Mutex::new(None),
                running: AtomicUsize::new(0),
                idle: Notify::new(),
            }),
        }
    }

    /// Queues the deletion of `key` for `cause` (see the module's settle rule). Must be called
    /// within the Tokio runtime.
    pub fn enqueue(&self, key: ConversationKey, clear_roaming: bool, cause: Cause) -> Enqueued {
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
            work(&worker, key, clear_roaming, cause).await;
            if worker.running.fetch_sub(1, Ordering::SeqCst) == 1 {
                worker.idle.notify_waiters();
            }
        });
        Enqueued::Started
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
    /// plan reason. Stops starting new ones when `stop` or `shutdown` is raised. Returns how many
    /// failed or were not made (0: the resync succeeded).
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
        let (metrics, stop) = (&*self.inner.metrics, &self.inner.stop);
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
        lock(&self.inner.recorder).take();
    }
}

/// Deletes `key` for `cause`, then once more at the end of each window a message arrived in.
async fn work<D: Deleter>(
    inner: &Inner<D>,
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
        let outcome = inner.deleter.delete(&deletion).await;
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
                inner.stop.stop(StopReason::Fatal);
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
            if let Some(recorder) = lock(&inner.recorder).as_ref() {
                recorder.record(record);
            }
        }
        if !inner.stop.is_stopped() {
            tokio::time::sleep_until(window_end).await;
        }
        let mut slots = lock(&inner.slots);
        let again = if inner.stop.is_stopped() {
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
