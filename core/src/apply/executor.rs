//! Carries a plan out: deletions run concurrently through a [`Deleter`] (the client, with its one
//! shared rate limiter and its retries), and every confirmed deletion is handed to a
//! [`Recorder`] (the ledger) within a fraction of a second, in batches of one transaction each.
//!
//! The executor knows neither HTTP nor SQLite: it sees a deletion's outcome and a place to
//! record it. That keeps its rules in one place and readable:
//!
//! - A confirmed deletion (or an already-absent answer) is recorded within
//!   [`ExecOptions::flush_interval`], so a run killed at any moment loses at most that much.
//! - Calls never outrun the state: a call takes one of [`ExecOptions::max_unrecorded`] slots
//!   before it starts and gives it back once its result is recorded (or needs no recording). A
//!   state that stalls (a PostgreSQL backend stopped, a network black hole, an SQLite reader
//!   holding its lock) therefore stops the calls after at most that many, about a second of
//!   them, instead of piling confirmed deletions up in memory where a kill loses them.
//! - A fatal outcome stops new calls at once; calls in flight finish and are recorded.
//! - When most of the recent results are the same item failure, the run stops: that is a bug or
//!   a misconfiguration, not a million bad entries.
//! - Every stop goes through the run's one [`Stop`]: a fatal outcome, the failure pattern and a
//!   state write failing raise it here; a signal raises it from outside; the client watches the
//!   same signal, so no queued call goes out once any of them has stopped the run.
//! - Memory stays flat: results are streamed to the recorder and to the event callback, never
//!   collected.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::Semaphore;

use crate::ids::{ConversationKey, PeerKind, UserId};
use crate::ledger::{Deleted, LedgerWriter, RunInfo};
use crate::stop::{Stop, StopReason};

/// One conversation to delete.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Deletion {
    /// Which conversation.
    pub key: ConversationKey,
    /// Clear roaming messages too (ClearRamble).
    pub clear_roaming: bool,
}

/// What one deletion came to, after the client's retries: the executor's view of one
/// [`crate::client::Outcome`] (the outcome of one call of any endpoint), mapped in
/// `adapters/deleter.rs`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeletionOutcome {
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
    /// A fatal answer (the spec's `fatal` class): every call would fail the same way (bad
    /// credentials, unknown app), so the run stops with [`StopReason::Fatal`].
    Fatal {
        /// One clear message saying what to check, with no secret in it.
        message: String,
    },
}

/// Makes one deletion call. The client implements it; the executor only sees outcomes.
pub trait Deleter: Send + Sync {
    /// Deletes `deletion`, retrying transient failures as the client's policy says.
    fn delete(&self, deletion: &Deletion) -> impl Future<Output = DeletionOutcome> + Send;
}

/// `error: cause: its cause…`, each level once: the cause (`database or disk is full`) is what
/// a person needs to read, and it sits at the bottom of the chain.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        // Some errors repeat their source's text in their own (`transparent`): say it once.
        if !text.ends_with(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    text
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

/// How the executor runs.
#[derive(Clone, Debug)]
pub struct ExecOptions {
    /// Calls in flight at once.
    pub concurrency: usize,
    /// A confirmed deletion is recorded at most this long after it arrives.
    pub flush_interval: Duration,
    /// Or as soon as this many are waiting.
    pub flush_batch: usize,
    /// Calls in flight plus confirmed deletions not yet in the state, at most: a new call waits
    /// for the state to catch up beyond it. The binary sets it to one second of calls (the
    /// rate), so a stalled state leaves at most that much unrecorded.
    pub max_unrecorded: usize,
    /// How many recent results the failure check looks at.
    pub failure_window: usize,
    /// Stop when this many of them are the same item failure.
    pub failure_threshold: usize,
    /// How often a `progress` event is emitted.
    pub progress_interval: Duration,
}

impl ExecOptions {
    /// The executor's rules with `concurrency` calls in flight at once. The caller picks the
    /// concurrency from the rate (enough calls waiting to keep it up); the rest are fixed rules.
    pub fn new(concurrency: usize) -> Self {
        ExecOptions {
            concurrency,
            // Well inside the README's "in the state within a second", leaving room for the
            // transaction's own fsync on a slow disk.
            flush_interval: Duration::from_millis(250),
            flush_batch: 1000,
            // Four times the concurrency: the binary's concurrency is a quarter of the rate, so
            // this is one second of calls unless the caller says otherwise.
            max_unrecorded: concurrency.saturating_mul(4).max(1),
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
    /// A refresh saw this conversation absent; it was written to the state with no call.
    Recorded {
        /// The conversation: `from`, `type`, `peer` in the JSON line.
        #[serde(flatten)]
        conversation: Conversation,
        /// What the manifest asks (kept with the record).
        clear_roaming: bool,
    },
    /// Before the first call.
    Planned {
        /// Deletions to make.
        delete: usize,
        /// Entries to drop from the state.
        forget: usize,
    },
    /// A deletion was confirmed (or there was nothing to delete).
    Deleted {
        /// The conversation: `from`, `type`, `peer` in the JSON line.
        #[serde(flatten)]
        conversation: Conversation,
        /// Whether roaming messages were cleared.
        clear_roaming: bool,
        /// The server said there was nothing to delete (the user does not exist).
        already_absent: bool,
    },
    /// A deletion failed.
    Failed {
        /// The conversation: `from`, `type`, `peer` in the JSON line.
        #[serde(flatten)]
        conversation: Conversation,
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
        /// `done` as a whole percentage of `total` (100 when there is nothing to do).
        percent: u32,
        /// Seconds left at the rate so far; `None` before the first result.
        eta_seconds: Option<u64>,
    },
    /// Why a run was refused or ended in an error; `--json` prints it just before the
    /// `summary`, so that a pipeline's artifact says why even when nothing was called.
    Error {
        /// What went wrong and what to do, with no secret in it.
        message: String,
    },
    /// The last event.
    Summary(RunSummary),
}

/// The `format_version` of every line of apply's `--json` (and of the listing events it
/// prints with `--refresh`). Fields may be added, and new events may appear, without a
/// change; a field renamed, removed or given another meaning changes it.
pub const EVENT_FORMAT_VERSION: u32 = 1;

/// One line of `--json`: `format_version`, `at` (RFC 3339 UTC, milliseconds), `run` (the run's
/// ID, as `state runs` shows it), then the event's own fields, `event` first. Serve may print
/// its events through it too.
#[derive(Debug, serde::Serialize)]
pub struct EventLine<'a, E> {
    /// [`EVENT_FORMAT_VERSION`].
    pub format_version: u32,
    /// When the event happened.
    pub at: String,
    /// The run's ID.
    pub run: uuid::Uuid,
    /// The event (an internally tagged enum: its `event` field comes first).
    #[serde(flatten)]
    pub event: &'a E,
}

/// `event` as one JSON line (without the newline), stamped with the run and `at`.
pub fn event_line<E: serde::Serialize>(
    run: uuid::Uuid,
    at: jiff::Timestamp,
    event: &E,
) -> serde_json::Result<String> {
    serde_json::to_string(&EventLine {
        format_version: EVENT_FORMAT_VERSION,
        at: crate::ledger::history::millis(at),
        run,
        event,
    })
}

/// How many conversations each failure group names.
pub const FAILURES_SHOWN_PER_CODE: usize = 3;
/// How many failed users a summary names (for the command that retries them).
pub const FAILED_USERS_SHOWN: usize = 10;

/// A conversation as events and failure groups name it: `from`, `type`, `peer`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Conversation {
    /// From_Account.
    pub from: String,
    /// `user` or `group`.
    #[serde(rename = "type")]
    pub kind: PeerKind,
    /// The other side's ID.
    pub peer: String,
}

impl Conversation {
    /// The conversation `key` names.
    pub fn of(key: &ConversationKey) -> Self {
        Conversation {
            from: key.from.to_string(),
            kind: key.peer.kind(),
            peer: key.peer.id().to_owned(),
        }
    }
}

/// The failures that share one code, for the recap at the end of a run.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FailureGroup {
    /// The server's code; `None` for a transport failure that outlasted the retries.
    pub code: Option<i64>,
    /// The first failure's message.
    pub message: String,
    /// How many failed with this code.
    pub count: usize,
    /// The first [`FAILURES_SHOWN_PER_CODE`] of them.
    pub first: Vec<Conversation>,
}

/// Failures grouped by code, as a run goes: memory is a few conversations per code, whatever
/// the number of failures.
#[derive(Clone, Debug, Default)]
pub struct FailureRecap {
    groups: Vec<FailureGroup>,
    users: BTreeSet<String>,
}

impl FailureRecap {
    /// Adds one failure.
    pub fn add(
        &mut self,
        from: &str,
        kind: PeerKind,
        peer: &str,
        code: Option<i64>,
        message: &str,
    ) {
        let i = match self.groups.iter().position(|g| g.code == code) {
            Some(i) => i,
            None => {
                self.groups.push(FailureGroup {
                    code,
                    message: message.to_owned(),
                    count: 0,
                    first: Vec::new(),
                });
                self.groups.len() - 1
            }
        };
        let group = &mut self.groups[i];
        group.count += 1;
        if group.first.len() < FAILURES_SHOWN_PER_CODE {
            group.first.push(Conversation {
                from: from.to_owned(),
                kind,
                peer: peer.to_owned(),
            });
        }
        // Counted exactly up to one past the shown ones: enough to say "and more".
        if self.users.len() <= FAILED_USERS_SHOWN {
            self.users.insert(from.to_owned());
        }
    }

    /// The groups, the most frequent first (then by code, transport failures last).
    pub fn groups(&self) -> Vec<FailureGroup> {
        let mut groups = self.groups.clone();
        groups.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| a.code.is_none().cmp(&b.code.is_none()))
                .then(a.code.cmp(&b.code))
        });
        groups
    }

    /// The users with a failure: the first [`FAILED_USERS_SHOWN`] by ID, and whether there
    /// are more.
    pub fn users(&self) -> (Vec<String>, bool) {
        let more = self.users.len() > FAILED_USERS_SHOWN;
        (
            self.users
                .iter()
                .take(FAILED_USERS_SHOWN)
                .cloned()
                .collect(),
            more,
        )
    }
}

/// How a run went (not to be confused with [`crate::plan::Summary`], the plan's counts).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct RunSummary {
    /// Deletions the server confirmed.
    pub deleted: usize,
    /// Deletions with nothing to delete (counted as done, recorded).
    pub already_absent: usize,
    /// Users the server said do not exist (perhaps typos); at most [`MISSING_USERS_SHOWN`].
    pub missing_users: Vec<String>,
    /// How many distinct users did not exist.
    pub missing_user_count: usize,
    /// How many of the 50001 answers were to one-to-one deletions. The documentation says
    /// only "the requested UserID" does not exist: for these it may have been the other
    /// participant, whose conversation can then still be in the user's list.
    pub missing_in_one_to_one: usize,
    /// Entries recorded as seen absent by a refresh (no call).
    pub recorded: usize,
    /// Entries dropped from the state.
    pub forgotten: usize,
    /// Deletions that failed.
    pub failed: usize,
    /// The failures grouped by code, the most frequent first, each with its first few
    /// conversations: the recap at the end of a run.
    pub failures: Vec<FailureGroup>,
    /// Users with a failed deletion (at most [`FAILED_USERS_SHOWN`]), for the command that
    /// retries them.
    pub failed_users: Vec<String>,
    /// Whether more users than `failed_users` had a failure.
    pub more_failed_users: bool,
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

impl RunSummary {
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
/// Each batch written (or failed) gives its calls' slots back to `slots`.
fn spawn_recorder<R: Recorder + 'static>(
    mut recorder: R,
    opts: &ExecOptions,
    stop: Stop,
    failure: Arc<Mutex<Option<RecordError>>>,
    slots: Arc<Semaphore>,
) -> (mpsc::Sender<RecordMsg>, std::thread::JoinHandle<R>) {
    let (tx, rx) = mpsc::channel::<RecordMsg>();
    let (interval, batch_size) = (opts.flush_interval, opts.flush_batch);
    let handle = std::thread::spawn(move || {
        let mut batch: Vec<Deleted> = Vec::new();
        let mut deadline: Option<Instant> = None;
        let mut failed = false;
        // Time spent writing confirmed deletions, for `-vv` (and the benchmarks): the share of
        // a run the state's speed accounts for.
        let (mut batches, mut recorded, mut spent) = (0_usize, 0_usize, Duration::ZERO);
        let fail = |e: RecordError, failed: &mut bool| {
            *failed = true;
            stop.stop(StopReason::RecordFailed);
            let mut slot = failure.lock().unwrap_or_else(|p| p.into_inner());
            slot.get_or_insert(e);
        };
        let mut record = |recorder: &mut R, batch: &[Deleted], failed: &mut bool| {
            let started = Instant::now();
            let result = recorder.record(batch);
            spent += started.elapsed();
            match result {
                Ok(()) => {
                    batches += 1;
                    recorded += batch.len();
                }
                Err(e) => fail(e, failed),
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
                    if !failed && let Err(e) = recorder.forget(&entries) {
                        fail(e, &mut failed);
                    }
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    if !failed && !batch.is_empty() {
                        record(&mut recorder, &batch, &mut failed);
                    }
                    break;
                }
            }
            // A full batch, or the oldest waiting confirmation is due.
            if !failed && !batch.is_empty() {
                record(&mut recorder, &batch, &mut failed);
            }
            // Written, or lost with the run stopped: either way these calls no longer hold the
            // next ones back.
            slots.add_permits(batch.len());
            batch.clear();
            deadline = None;
        }
        tracing::debug!(
            batches,
            deletions = recorded,
            recording_ms = spent.as_millis() as u64,
            "recorded confirmed deletions"
        );
        recorder
    });
    (tx, handle)
}

/// How a call failed, as the "most calls fail the same way" stop compares failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum CallFailure {
    /// The server answered with this code.
    Code(i64),
    /// No answer after the retries (a transport failure).
    NoAnswer,
}

/// Watches the most recent results for one failure that keeps repeating: a [`CallFailure`]
/// for the executor, a kind of unreadable list for the listing phase
/// ([`crate::listing::list`]).
pub(crate) struct FailurePattern<K> {
    window: VecDeque<Option<K>>,
    counts: HashMap<K, usize>,
    size: usize,
    threshold: usize,
}

impl<K: Clone + Eq + std::hash::Hash> FailurePattern<K> {
    /// Watches the last `size` results for `threshold` of them failing the same way.
    pub(crate) fn new(size: usize, threshold: usize) -> Self {
        FailurePattern {
            window: VecDeque::new(),
            counts: HashMap::new(),
            size,
            threshold,
        }
    }

    /// Adds a result (`Some(kind)` for a failure) and returns the repeating failure's kind and
    /// count when it crosses the threshold.
    pub(crate) fn push(&mut self, failure: Option<K>) -> Option<(K, usize)> {
        if self.size == 0 {
            return None;
        }
        if self.window.len() == self.size
            && let Some(Some(old)) = self.window.pop_front()
            && let Some(n) = self.counts.get_mut(&old)
        {
            *n -= 1;
        }
        self.window.push_back(failure.clone());
        let kind = failure?;
        let n = self.counts.entry(kind.clone()).or_default();
        *n += 1;
        (*n >= self.threshold).then_some((kind, *n))
    }
}

/// The share done, as a whole percentage, and the seconds left at `rate` (`None` while
/// nothing is done yet, so no rate is known).
pub fn progress_figures(done: usize, total: usize, rate: f64) -> (u32, Option<u64>) {
    let percent = (done.min(total) * 100)
        .checked_div(total)
        .map_or(100, |p| p as u32);
    let eta = (rate > 0.0).then(|| (total.saturating_sub(done) as f64 / rate).ceil() as u64);
    (percent, eta)
}

/// What [`execute`] comes to.
#[derive(Debug)]
pub struct Executed<R> {
    /// How the run went (also sent as the last event).
    pub summary: RunSummary,
    /// The recorder, handed back so the caller can close it.
    pub recorder: R,
    /// The write that failed, if one did (the run stopped then); its message is already the
    /// summary's `stop_message`.
    pub record_error: Option<RecordError>,
}

/// What [`execute`] carries out, and with what.
pub struct Execution<'a, D, R> {
    /// The calls to make.
    pub deletions: Vec<Deletion>,
    /// The entries to drop from the state (no call).
    pub forgets: Vec<ConversationKey>,
    /// Makes the calls; obeys `stop`.
    pub deleter: &'a D,
    /// Writes what was confirmed; handed back in [`Executed`].
    pub recorder: R,
    /// Concurrency, batching, progress and the failure rule.
    pub opts: &'a ExecOptions,
    /// The run's one stop.
    pub stop: &'a Stop,
}

/// Carries out the deletions and forgets of `execution`, reporting each step to `on_event`.
pub async fn execute<D, R>(
    execution: Execution<'_, D, R>,
    on_event: &mut (dyn FnMut(&Event) + Send),
) -> Executed<R>
where
    D: Deleter,
    R: Recorder + 'static,
{
    let Execution {
        deletions,
        forgets,
        deleter,
        recorder,
        opts,
        stop,
    } = execution;
    let total = deletions.len();
    on_event(&Event::Planned {
        delete: total,
        forget: forgets.len(),
    });
    let mut summary = RunSummary::default();
    let record_failure = Arc::new(Mutex::new(None));
    let slots = Arc::new(Semaphore::new(
        opts.max_unrecorded.clamp(1, Semaphore::MAX_PERMITS),
    ));
    let (tx, recorder_thread) = spawn_recorder(
        recorder,
        opts,
        stop.clone(),
        Arc::clone(&record_failure),
        Arc::clone(&slots),
    );

    // Forgetting needs no call: it goes to the recorder first, in chunks of one transaction.
    summary.forgotten = forgets.len();
    for chunk in forgets.chunks(opts.flush_batch.max(1)) {
        // The recorder thread only ends when `tx` is dropped, so sending cannot fail here.
        let _ = tx.send(RecordMsg::Forget(chunk.to_vec()));
    }

    let started = Instant::now();
    let mut pattern: FailurePattern<CallFailure> =
        FailurePattern::new(opts.failure_window, opts.failure_threshold);
    // Every distinct user that does not exist; only the first few are named in the summary.
    let mut missing: BTreeSet<UserId> = BTreeSet::new();
    let mut stop_message: Option<String> = None;
    let mut recap = FailureRecap::default();

    let slots_ref = &slots;
    let mut results = futures::stream::iter(deletions)
        .map(|deletion| async move {
            // Checked as each call is about to start, so a stop takes effect at once.
            if stop.reason().is_some() {
                return (deletion, None);
            }
            // A slot first: with too many results not yet in the state, wait for it to catch
            // up (or for the run to stop). The slot goes back when the result is recorded, or
            // below when it needs no recording.
            let acquired = tokio::select! {
                biased;
                () = stop.stopped() => return (deletion, None),
                permit = slots_ref.acquire() => permit,
            };
            match acquired {
                Ok(permit) => permit.forget(),
                Err(_) => return (deletion, None),
            }
            if stop.reason().is_some() {
                slots_ref.add_permits(1);
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
                let (percent, eta_seconds) = progress_figures(done, total, rate);
                on_event(&Event::Progress { done, total, failed: summary.failed, rate, percent, eta_seconds });
                continue;
            }
        };
        let Some((deletion, outcome)) = next else {
            break;
        };
        // Only a confirmation goes to the recorder, which gives its slot back once written.
        if outcome.as_ref().is_some_and(|o| {
            !matches!(
                o,
                DeletionOutcome::Deleted | DeletionOutcome::AlreadyAbsent { .. }
            )
        }) {
            slots.add_permits(1);
        }
        let Some(outcome) = outcome.filter(|o| *o != DeletionOutcome::NotSent) else {
            summary.not_started += 1;
            continue;
        };
        let failure = match outcome {
            DeletionOutcome::Deleted | DeletionOutcome::AlreadyAbsent { .. } => {
                let absent = matches!(outcome, DeletionOutcome::AlreadyAbsent { .. });
                let event = Event::Deleted {
                    conversation: Conversation::of(&deletion.key),
                    clear_roaming: deletion.clear_roaming,
                    already_absent: absent,
                };
                if absent {
                    summary.already_absent += 1;
                    missing.insert(deletion.key.from.clone());
                    if deletion.key.peer.kind() == PeerKind::User {
                        summary.missing_in_one_to_one += 1;
                    }
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
                if tx.send(RecordMsg::Confirmed(confirmed)).is_err() {
                    // The recorder thread is gone (it panicked; joined below): its slot must
                    // not hold the remaining calls back forever.
                    slots.add_permits(1);
                }
                on_event(&event);
                None
            }
            DeletionOutcome::ItemFailed { code, message } => {
                summary.failed += 1;
                let conversation = Conversation::of(&deletion.key);
                recap.add(
                    &conversation.from,
                    conversation.kind,
                    &conversation.peer,
                    code,
                    &message,
                );
                on_event(&Event::Failed {
                    conversation,
                    code,
                    message,
                });
                Some(code.map_or(CallFailure::NoAnswer, CallFailure::Code))
            }
            DeletionOutcome::NotSent => None,
            DeletionOutcome::Fatal { message } => {
                summary.failed += 1;
                // The client may have raised the stop already, on the same answer: the first
                // fatal answer's message is the one shown, whoever raised it.
                stop.stop(StopReason::Fatal);
                if stop.reason() == Some(StopReason::Fatal) {
                    stop_message.get_or_insert(message);
                }
                None
            }
        };
        if let Some((code, n)) = pattern.push(failure) {
            let what = match code {
                CallFailure::Code(c) => format!("code {c}"),
                CallFailure::NoAnswer => "a transport error".to_owned(),
            };
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
        stop_message.get_or_insert_with(|| {
            format!(
                "{}. The deletions not recorded will be made again by the next apply.",
                error_chain(e)
            )
        });
    }
    summary.stop_message = stop_message;
    summary.failures = recap.groups();
    (summary.failed_users, summary.more_failed_users) = recap.users();
    summary.missing_user_count = missing.len();
    summary.missing_users = missing
        .iter()
        .take(MISSING_USERS_SHOWN)
        .map(UserId::to_string)
        .collect();
    on_event(&Event::Summary(summary.clone()));
    Executed {
        summary,
        recorder,
        record_error,
    }
}

#[cfg(test)]
mod tests;
