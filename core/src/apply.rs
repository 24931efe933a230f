//! Carries a plan out: deletions run concurrently through a [`Deleter`] (the client, with its one
//! shared rate limiter and its retries), and every confirmed deletion is handed to a
//! [`Recorder`] (the ledger) within a fraction of a second, in batches of one transaction each.
//!
//! The executor knows neither HTTP nor SQLite: it sees a deletion's outcome and a place to
//! record it. That keeps its rules in one place and readable:
//!
//! - A confirmed deletion (or an already-absent answer) is recorded within
//!   [`ExecOptions::flush_interval`], so a run killed at any moment loses at most that much.
//! - A fatal outcome stops new calls at once; calls in flight finish and are recorded.
//! - When most of the recent results are the same item failure, the run stops: that is a bug or
//!   a misconfiguration, not a million bad entries.
//! - A stop from outside ([`StopHandle`], e.g. Ctrl-C) works the same way as a fatal outcome.
//! - Memory stays flat: results are streamed to the recorder and to the event callback, never
//!   collected.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use futures::StreamExt;

use crate::ids::{ConversationKey, PeerKind, UserId};
use crate::ledger::{Deleted, LedgerWriter, RunInfo};

/// One conversation to delete.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Deletion {
    /// Which conversation.
    pub key: ConversationKey,
    /// Clear roaming messages too (ClearRamble).
    pub clear_roaming: bool,
}

/// What one deletion came to, after the client's retries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallOutcome {
    /// The server confirmed the deletion.
    Deleted,
    /// There was nothing to delete (e.g. 50001: the user does not exist). Counts as done.
    AlreadyAbsent {
        /// The code that said so.
        code: i64,
    },
    /// This deletion failed; others may not.
    ItemFailed {
        /// The server's code, or `None` for a transport failure that outlasted the retries.
        code: Option<i64>,
        /// What went wrong, with no secret in it.
        message: String,
    },
    /// Not sent: the run was already stopping (after a fatal answer, or Ctrl-C). Counts as
    /// not started; the next run makes it.
    NotSent,
    /// Every call would fail the same way (bad credentials, unknown app): stop the run.
    Fatal {
        /// One clear message saying what to check, with no secret in it.
        message: String,
    },
}

/// Makes one deletion call. The client implements it; the executor only sees outcomes.
pub trait Deleter: Send + Sync {
    /// Deletes `deletion`, retrying transient failures as the client's policy says.
    fn delete(&self, deletion: &Deletion) -> impl Future<Output = CallOutcome> + Send;
}

/// Why recording failed; the run stops, and what was not recorded is re-sent next time.
#[derive(Debug, thiserror::Error)]
#[error("recording in the state failed: {0}")]
pub struct RecordError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// Where confirmed deletions and forgotten entries go. The ledger implements it; each call is
/// one transaction.
pub trait Recorder: Send {
    /// Records confirmed deletions.
    fn record(&mut self, confirmed: &[Deleted]) -> Result<(), RecordError>;
    /// Drops entries that are no longer in the manifest.
    fn forget(&mut self, entries: &[ConversationKey]) -> Result<(), RecordError>;
}

/// Why a run stopped before the end of the plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// Ctrl-C (SIGINT).
    Interrupted = 1,
    /// SIGTERM, e.g. a cancelled CI job.
    Terminated = 2,
    /// A fatal answer: every call would fail.
    Fatal = 3,
    /// Most recent calls failed the same way.
    TooManyFailures = 4,
    /// The state could not be written.
    RecordFailed = 5,
}

/// Stops a run from outside (a signal handler) or inside (a fatal answer). The first reason
/// given wins; calls already in flight finish and are recorded.
#[derive(Clone, Debug, Default)]
pub struct StopHandle(Arc<AtomicU8>);

impl StopHandle {
    /// Asks the run to stop starting calls. Returns false when it had already been asked.
    pub fn stop(&self, reason: StopReason) -> bool {
        self.0
            .compare_exchange(0, reason as u8, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// Why the run was asked to stop, if it was.
    pub fn reason(&self) -> Option<StopReason> {
        match self.0.load(Ordering::SeqCst) {
            1 => Some(StopReason::Interrupted),
            2 => Some(StopReason::Terminated),
            3 => Some(StopReason::Fatal),
            4 => Some(StopReason::TooManyFailures),
            5 => Some(StopReason::RecordFailed),
            _ => None,
        }
    }
}

/// How the executor runs.
#[derive(Clone, Debug)]
pub struct ExecOptions {
    /// Calls in flight at once.
    pub concurrency: usize,
    /// A confirmed deletion is recorded at most this long after it arrives.
    pub flush_interval: Duration,
    /// Or as soon as this many are waiting.
    pub flush_batch: usize,
    /// How many recent results the failure check looks at.
    pub failure_window: usize,
    /// Stop when this many of them are the same item failure.
    pub failure_threshold: usize,
    /// How often a `progress` event is emitted.
    pub progress_interval: Duration,
}

impl Default for ExecOptions {
    fn default() -> Self {
        ExecOptions {
            concurrency: 32,
            // Well inside PRODUCT.md's "in the state within a second", leaving room for the
            // transaction's own fsync on a slow disk.
            flush_interval: Duration::from_millis(250),
            flush_batch: 1000,
            failure_window: 50,
            failure_threshold: 45,
            progress_interval: Duration::from_secs(2),
        }
    }
}

/// What the executor reports as it goes; `--json` prints one per line.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// Before the first call.
    Planned {
        /// Deletions to make.
        delete: usize,
        /// Entries to drop from the state.
        forget: usize,
    },
    /// A deletion was confirmed (or there was nothing to delete).
    Deleted {
        /// From_Account.
        from: String,
        /// `user` or `group`.
        #[serde(rename = "type")]
        kind: PeerKind,
        /// The other side's ID.
        peer: String,
        /// Whether roaming messages were cleared.
        clear_roaming: bool,
        /// The server said there was nothing to delete (the user does not exist).
        already_absent: bool,
    },
    /// A deletion failed.
    Failed {
        /// From_Account.
        from: String,
        /// `user` or `group`.
        #[serde(rename = "type")]
        kind: PeerKind,
        /// The other side's ID.
        peer: String,
        /// The server's code, if there was one.
        code: Option<i64>,
        /// What went wrong.
        message: String,
    },
    /// Every few seconds.
    Progress {
        /// Deletions finished (confirmed, absent or failed).
        done: usize,
        /// Deletions planned.
        total: usize,
        /// Of which failed.
        failed: usize,
        /// Deletions per second so far.
        rate: f64,
    },
    /// The last event.
    Summary(Summary),
}

/// How a run went.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Summary {
    /// Deletions the server confirmed.
    pub deleted: usize,
    /// Deletions with nothing to delete (counted as done, recorded).
    pub already_absent: usize,
    /// Users the server said do not exist (perhaps typos); at most [`MISSING_USERS_SHOWN`].
    pub missing_users: Vec<String>,
    /// How many distinct users did not exist.
    pub missing_user_count: usize,
    /// Entries recorded as seen absent by a refresh (no call).
    pub recorded: usize,
    /// Entries dropped from the state.
    pub forgotten: usize,
    /// Deletions that failed.
    pub failed: usize,
    /// Deletions never started because the run stopped.
    pub not_started: usize,
    /// Why the run stopped early, if it did.
    pub stopped: Option<StopReason>,
    /// The one message to show for a stop (fatal answer, failure pattern, state error).
    pub stop_message: Option<String>,
    /// Seconds from the first call to the last result.
    pub elapsed_seconds: f64,
}

/// How many missing users a summary names.
pub const MISSING_USERS_SHOWN: usize = 100;

impl Summary {
    /// True when everything planned was done.
    pub fn succeeded(&self) -> bool {
        self.failed == 0 && self.stopped.is_none() && self.not_started == 0
    }
}

/// Records into a ledger, attributing every batch to one run.
pub struct LedgerRecorder<W> {
    /// The ledger, locked.
    pub writer: W,
    /// The run recording.
    pub run: RunInfo,
}

impl<W: LedgerWriter + Send> Recorder for LedgerRecorder<W> {
    fn record(&mut self, confirmed: &[Deleted]) -> Result<(), RecordError> {
        match self.writer.record_deleted(&self.run, confirmed) {
            Ok(_) => Ok(()),
            Err(e) => Err(RecordError(Box::new(e))),
        }
    }

    fn forget(&mut self, entries: &[ConversationKey]) -> Result<(), RecordError> {
        match self.writer.forget(entries) {
            Ok(_) => Ok(()),
            Err(e) => Err(RecordError(Box::new(e))),
        }
    }
}

enum RecordMsg {
    Confirmed(Deleted),
    Forget(Vec<ConversationKey>),
}

/// Runs the recorder on a thread of its own (the ledger is blocking I/O), flushing a batch when
/// the oldest waiting confirmation is `flush_interval` old or `flush_batch` are waiting.
fn spawn_recorder<R: Recorder + 'static>(
    mut recorder: R,
    opts: &ExecOptions,
    stop: StopHandle,
    failure: Arc<Mutex<Option<RecordError>>>,
) -> (mpsc::Sender<RecordMsg>, std::thread::JoinHandle<R>) {
    let (tx, rx) = mpsc::channel::<RecordMsg>();
    let (interval, batch_size) = (opts.flush_interval, opts.flush_batch);
    let handle = std::thread::spawn(move || {
        let mut batch: Vec<Deleted> = Vec::new();
        let mut deadline: Option<Instant> = None;
        let mut failed = false;
        let run = |r: Result<(), RecordError>, failed: &mut bool| {
            if let Err(e) = r {
                *failed = true;
                stop.stop(StopReason::RecordFailed);
                let mut slot = failure.lock().unwrap_or_else(|p| p.into_inner());
                slot.get_or_insert(e);
            }
        };
        loop {
            let msg = match deadline {
                Some(d) => rx.recv_timeout(d.saturating_duration_since(Instant::now())),
                None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
            };
            match msg {
                Ok(RecordMsg::Confirmed(c)) => {
                    batch.push(c);
                    deadline.get_or_insert_with(|| Instant::now() + interval);
                    if batch.len() < batch_size {
                        continue;
                    }
                }
                Ok(RecordMsg::Forget(entries)) => {
                    if !failed {
                        run(recorder.forget(&entries), &mut failed);
                    }
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    if !failed && !batch.is_empty() {
                        run(recorder.record(&batch), &mut failed);
                    }
                    break;
                }
            }
            // A full batch, or the oldest waiting confirmation is due.
            if !failed && !batch.is_empty() {
                run(recorder.record(&batch), &mut failed);
            }
            batch.clear();
            deadline = None;
        }
        recorder
    });
    (tx, handle)
}

/// Watches the most recent results for one item failure that keeps repeating.
struct FailurePattern {
    window: VecDeque<Option<Option<i64>>>,
    counts: HashMap<Option<i64>, usize>,
    size: usize,
    threshold: usize,
}

impl FailurePattern {
    fn new(size: usize, threshold: usize) -> Self {
        FailurePattern {
            window: VecDeque::new(),
            counts: HashMap::new(),
            size,
            threshold,
        }
    }

    /// Adds a result (`Some(code)` for an item failure) and returns the repeating failure's
    /// code and count when it crosses the threshold.
    fn push(&mut self, failure: Option<Option<i64>>) -> Option<(Option<i64>, usize)> {
        if self.size == 0 {
            return None;
        }
        if self.window.len() == self.size
            && let Some(Some(old)) = self.window.pop_front()
            && let Some(n) = self.counts.get_mut(&old)
        {
            *n -= 1;
        }
        self.window.push_back(failure);
        let code = failure?;
        let n = self.counts.entry(code).or_default();
        *n += 1;
        (*n >= self.threshold).then_some((code, *n))
    }
}

/// Carries out `deletions` and `forgets`, reporting each step to `on_event`, and returns the
/// summary (also sent as the last event). Returns the recorder so the caller can close it.
pub async fn execute<D, R>(
    deletions: Vec<Deletion>,
    forgets: Vec<ConversationKey>,
    deleter: &D,
    recorder: R,
    opts: &ExecOptions,
    stop: &StopHandle,
    on_event: &mut (dyn FnMut(&Event) + Send),
) -> (Summary, R, Option<RecordError>)
where
    D: Deleter,
    R: Recorder + 'static,
{
    let total = deletions.len();
    on_event(&Event::Planned {
        delete: total,
        forget: forgets.len(),
    });
    let mut summary = Summary::default();
    let record_failure = Arc::new(Mutex::new(None));
    let (tx, recorder_thread) =
        spawn_recorder(recorder, opts, stop.clone(), Arc::clone(&record_failure));

    // Forgetting needs no call: it goes to the recorder first, in chunks of one transaction.
    summary.forgotten = forgets.len();
    for chunk in forgets.chunks(opts.flush_batch.max(1)) {
        // The recorder thread only ends when `tx` is dropped, so sending cannot fail here.
        let _ = tx.send(RecordMsg::Forget(chunk.to_vec()));
    }

    let started = Instant::now();
    let mut pattern = FailurePattern::new(opts.failure_window, opts.failure_threshold);
    // Every distinct user that does not exist; only the first few are named in the summary.
    let mut missing: BTreeSet<UserId> = BTreeSet::new();
    let mut stop_message: Option<String> = None;

    let mut results = futures::stream::iter(deletions)
        .map(|deletion| async move {
            // Checked as each call is about to start, so a stop takes effect at once.
            if stop.reason().is_some() {
                return (deletion, None);
            }
            let outcome = deleter.delete(&deletion).await;
            (deletion, Some(outcome))
        })
        .buffer_unordered(opts.concurrency.max(1));

    let mut ticker = tokio::time::interval(opts.progress_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        let next = tokio::select! {
            next = results.next() => next,
            _ = ticker.tick() => {
                let done = summary.deleted + summary.already_absent + summary.failed;
                let secs = started.elapsed().as_secs_f64();
                let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
                on_event(&Event::Progress { done, total, failed: summary.failed, rate });
                continue;
            }
        };
        let Some((deletion, outcome)) = next else {
            break;
        };
        let Some(outcome) = outcome.filter(|o| *o != CallOutcome::NotSent) else {
            summary.not_started += 1;
            continue;
        };
        let failure = match outcome {
            CallOutcome::Deleted | CallOutcome::AlreadyAbsent { .. } => {
                let absent = matches!(outcome, CallOutcome::AlreadyAbsent { .. });
                let event = Event::Deleted {
                    from: deletion.key.from.to_string(),
                    kind: deletion.key.peer.kind(),
                    peer: deletion.key.peer.id().to_owned(),
                    clear_roaming: deletion.clear_roaming,
                    already_absent: absent,
                };
                if absent {
                    summary.already_absent += 1;
                    missing.insert(deletion.key.from.clone());
                } else {
                    summary.deleted += 1;
                }
                // To the recorder first: however slow the event's reader is, a confirmed
                // deletion is never held up on its way to the state.
                let confirmed = Deleted {
                    key: deletion.key,
                    clear_roaming: deletion.clear_roaming,
                    deleted_at: jiff::Timestamp::now(),
                };
                let _ = tx.send(RecordMsg::Confirmed(confirmed));
                on_event(&event);
                None
            }
            CallOutcome::ItemFailed { code, message } => {
                summary.failed += 1;
                on_event(&Event::Failed {
                    from: deletion.key.from.to_string(),
                    kind: deletion.key.peer.kind(),
                    peer: deletion.key.peer.id().to_owned(),
                    code,
                    message,
                });
                Some(code)
            }
            CallOutcome::NotSent => None,
            CallOutcome::Fatal { message } => {
                summary.failed += 1;
                if stop.stop(StopReason::Fatal) {
                    stop_message = Some(message);
                }
                None
            }
        };
        if let Some((code, n)) = pattern.push(failure) {
            let what = code.map_or_else(|| "a transport error".to_owned(), |c| format!("code {c}"));
            if stop.stop(StopReason::TooManyFailures) {
                stop_message = Some(format!(
                    "{n} of the last {} calls failed with {what}; stopping rather than \
                     repeating it for every entry. Check the failures above.",
                    opts.failure_window
                ));
            }
        }
    }
    summary.elapsed_seconds = started.elapsed().as_secs_f64();
    drop(results);
    drop(tx);
    // The recorder thread flushes what is left and ends. A panic there is a bug in timctl:
    // propagate it (what it had not recorded is re-sent by the next run).
    let recorder = match recorder_thread.join() {
        Ok(r) => r,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    let record_error = record_failure
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    summary.stopped = stop.reason();
    if let Some(e) = &record_error {
        stop_message.get_or_insert_with(|| e.to_string());
    }
    summary.stop_message = stop_message;
    summary.missing_user_count = missing.len();
    summary.missing_users = missing
        .iter()
        .take(MISSING_USERS_SHOWN)
        .map(UserId::to_string)
        .collect();
    on_event(&Event::Summary(summary.clone()));
    (summary, recorder, record_error)
}

#[cfg(test)]
mod tests {
    //! The executor's rules, with a scripted deleter and an in-memory recorder. End-to-end
    //! tests of `timctl apply` (real HTTP, real ledger) live in `tests/`.

    use super::*;
    use crate::ids::Peer;
    use std::sync::atomic::AtomicUsize;

    /// Answers each deletion by its From_Account: `fatal*`, `bad*` (50002), `ghost*` (50001),
    /// anything else is deleted. Sleeps `delay` per call.
    struct Scripted {
        calls: AtomicUsize,
        delay: Duration,
    }

    impl Deleter for Scripted {
        async fn delete(&self, d: &Deletion) -> CallOutcome {
            self.calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(self.delay).await;
            let from = d.key.from.as_str();
            if from.starts_with("fatal") {
                CallOutcome::Fatal {
                    message: "the UserSig was rejected (70003)".into(),
                }
            } else if from.starts_with("bad") {
                CallOutcome::ItemFailed {
                    code: Some(50002),
                    message: "bad".into(),
                }
            } else if from.starts_with("ghost") {
                CallOutcome::AlreadyAbsent { code: 50001 }
            } else {
                CallOutcome::Deleted
            }
        }
    }

    #[derive(Default)]
    struct Memory {
        batches: Vec<(Instant, Vec<Deleted>)>,
        forgotten: Vec<ConversationKey>,
    }

    impl Recorder for Memory {
        fn record(&mut self, confirmed: &[Deleted]) -> Result<(), RecordError> {
            self.batches.push((Instant::now(), confirmed.to_vec()));
            Ok(())
        }
        fn forget(&mut self, entries: &[ConversationKey]) -> Result<(), RecordError> {
            self.forgotten.extend_from_slice(entries);
            Ok(())
        }
    }

    fn deletions(from: &str, n: usize) -> Vec<Deletion> {
        (0..n)
            .map(|i| Deletion {
                key: ConversationKey::new(
                    UserId::new(format!("{from}{i}")).unwrap(),
                    Peer::User(UserId::new("peer").unwrap()),
                ),
                clear_roaming: i % 2 == 0,
            })
            .collect()
    }

    struct Run {
        summary: Summary,
        recorder: Memory,
        events: Vec<Event>,
        calls: usize,
    }

    fn check(
        plan: Vec<Deletion>,
        forgets: Vec<ConversationKey>,
        opts: ExecOptions,
        stop: &StopHandle,
        delay: Duration,
    ) -> Run {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let deleter = Scripted {
            calls: AtomicUsize::new(0),
            delay,
        };
        let mut events = Vec::new();
        let (summary, recorder, err) = rt.block_on(execute(
            plan,
            forgets,
            &deleter,
            Memory::default(),
            &opts,
            stop,
            &mut |e: &Event| events.push(e.clone()),
        ));
        assert!(err.is_none());
        Run {
            summary,
            recorder,
            events,
            calls: deleter.calls.load(Ordering::SeqCst),
        }
    }

    fn recorded(r: &Run) -> usize {
        r.recorder.batches.iter().map(|(_, b)| b.len()).sum()
    }

    #[test]
    fn everything_deleted_is_recorded_once() {
        let plan = deletions("alice", 100);
        let r = check(
            plan,
            vec![],
            ExecOptions::default(),
            &StopHandle::default(),
            Duration::ZERO,
        );
        assert_eq!(
            (r.summary.deleted, r.summary.failed, r.calls),
            (100, 0, 100)
        );
        assert_eq!(recorded(&r), 100);
        assert!(r.summary.succeeded());
        assert!(matches!(
            r.events.first(),
            Some(Event::Planned {
                delete: 100,
                forget: 0
            })
        ));
        assert!(matches!(r.events.last(), Some(Event::Summary(_))));
    }

    #[test]
    fn confirmations_are_recorded_while_the_run_goes_on() {
        let opts = ExecOptions {
            concurrency: 1,
            flush_interval: Duration::from_millis(50),
            ..ExecOptions::default()
        };
        let plan = deletions("alice", 20);
        let start = Instant::now();
        let r = check(
            plan,
            vec![],
            opts,
            &StopHandle::default(),
            Duration::from_millis(20),
        );
        // 20 calls of 20 ms with a 50 ms flush interval: several batches, the first long
        // before the run ended.
        assert!(
            r.recorder.batches.len() >= 3,
            "{} batches",
            r.recorder.batches.len()
        );
        let first = r.recorder.batches[0].0.duration_since(start);
        assert!(
            first < Duration::from_millis(300),
            "first batch after {first:?}"
        );
        assert_eq!(recorded(&r), 20);
    }

    #[test]
    fn a_fatal_answer_stops_new_calls() {
        let mut plan = deletions("alice", 2);
        plan.extend(deletions("fatal", 1));
        plan.extend(deletions("carol", 50));
        let opts = ExecOptions {
            concurrency: 1,
            ..ExecOptions::default()
        };
        let r = check(plan, vec![], opts, &StopHandle::default(), Duration::ZERO);
        assert_eq!(r.calls, 3);
        assert_eq!(r.summary.stopped, Some(StopReason::Fatal));
        assert_eq!(
            r.summary.stop_message.as_deref(),
            Some("the UserSig was rejected (70003)")
        );
        assert_eq!((r.summary.deleted, r.summary.not_started), (2, 50));
        assert_eq!(recorded(&r), 2);
        assert!(!r.summary.succeeded());
    }

    #[test]
    fn one_item_failure_does_not_stop_the_rest() {
        let mut plan = deletions("alice", 10);
        plan.extend(deletions("bad", 3));
        plan.extend(deletions("carol", 10));
        let r = check(
            plan,
            vec![],
            ExecOptions::default(),
            &StopHandle::default(),
            Duration::ZERO,
        );
        assert_eq!(
            (r.summary.deleted, r.summary.failed, r.summary.stopped),
            (20, 3, None)
        );
        let failed: Vec<&Event> = r
            .events
            .iter()
            .filter(|e| matches!(e, Event::Failed { .. }))
            .collect();
        assert_eq!(failed.len(), 3);
        assert_eq!(recorded(&r), 20);
    }

    #[test]
    fn the_same_failure_everywhere_stops_the_run_early() {
        let plan = deletions("bad", 1000);
        let opts = ExecOptions {
            concurrency: 4,
            ..ExecOptions::default()
        };
        let r = check(plan, vec![], opts, &StopHandle::default(), Duration::ZERO);
        assert_eq!(r.summary.stopped, Some(StopReason::TooManyFailures));
        assert!(r.calls < 60, "{} calls", r.calls);
        assert!(
            r.summary
                .stop_message
                .unwrap()
                .contains("failed with code 50002")
        );
    }

    #[test]
    fn missing_users_count_as_done_and_are_named() {
        let mut plan = deletions("ghost", 3);
        plan.extend(deletions("ghost", 3)); // the same users again: named once
        plan.extend(deletions("alice", 2));
        let r = check(
            plan,
            vec![],
            ExecOptions::default(),
            &StopHandle::default(),
            Duration::ZERO,
        );
        assert_eq!((r.summary.deleted, r.summary.already_absent), (2, 6));
        assert_eq!(r.summary.missing_users, vec!["ghost0", "ghost1", "ghost2"]);
        assert_eq!(r.summary.missing_user_count, 3);
        assert_eq!(recorded(&r), 8);
        assert!(r.summary.succeeded());
    }

    #[test]
    fn every_missing_user_is_counted_once_and_the_first_hundred_named() {
        let mut plan = deletions("ghost", 150);
        plan.extend(deletions("ghost", 150));
        let r = check(
            plan,
            vec![],
            ExecOptions::default(),
            &StopHandle::default(),
            Duration::ZERO,
        );
        assert_eq!(r.summary.missing_user_count, 150);
        assert_eq!(r.summary.missing_users.len(), MISSING_USERS_SHOWN);
        assert_eq!(r.summary.already_absent, 300);
    }

    #[test]
    fn a_stop_from_outside_lets_nothing_new_start() {
        let stop = StopHandle::default();
        assert!(stop.stop(StopReason::Terminated));
        assert!(!stop.stop(StopReason::Interrupted), "the first reason wins");
        let r = check(
            deletions("alice", 10),
            vec![],
            ExecOptions::default(),
            &stop,
            Duration::ZERO,
        );
        assert_eq!((r.calls, r.summary.not_started), (0, 10));
        assert_eq!(r.summary.stopped, Some(StopReason::Terminated));
    }

    #[test]
    fn forgets_reach_the_recorder_without_calls() {
        let forgets = vec![ConversationKey::new(
            UserId::new("alice").unwrap(),
            Peer::User(UserId::new("bob").unwrap()),
        )];
        let r = check(
            vec![],
            forgets.clone(),
            ExecOptions::default(),
            &StopHandle::default(),
            Duration::ZERO,
        );
        assert_eq!(r.calls, 0);
        assert_eq!(r.recorder.forgotten, forgets);
        assert_eq!(r.summary.forgotten, 1);
    }
}
