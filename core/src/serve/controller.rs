//! serve's controller once it has started: terms as the active replica (a client, recording
//! thread, resync loop and queue taker of the term's own, until a signal, a fatal answer or the
//! state lost), and between them the wait for the state's lock: a standby while another
//! replica holds it, held (callbacks kept, not ready) while the state cannot be reached. Also
//! the loops every replica runs: the resync (active only) and the manifest reload.
//!
//! The binary binds the listeners, reads the flags, the token and the credentials, and hands
//! the rest to [`Replica::run`].

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::callback::{ForbiddenIndex, TooManyEntries};
use crate::client::{Client, ClientConfig};
use crate::desired::DesiredState;
use crate::ledger::{
    AnyWriter, Ledger, LedgerError, LedgerWriter, LocatedStore, PgError, RunCommand, RunInfo,
    RunOrigin,
};
use crate::stop::{Stop, StopReason};

use super::enforcer::{Enforcer, Recorder, spawn_recorder};
use super::http::{Readiness, Role};
use super::metrics::Metrics;
use super::reload::{self, Adopted, Pending, Scope};
use super::replica::{self, QueueTarget, spawn_forwarder, spawn_taker};
use super::resync;

/// Why a term could not start on the state it locked.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum StartError {
    /// The state could not be read or written, or belongs to another app.
    #[error(transparent)]
    #[diagnostic(transparent)]
    State(#[from] LedgerError),
    /// The manifests have more entries than the callback index holds.
    #[error(transparent)]
    Index(#[from] TooManyEntries),
}

/// Whether `e` says another session holds a PostgreSQL state's lock.
pub fn is_locked(e: &LedgerError) -> bool {
    matches!(e, LedgerError::Postgres(PgError::Locked { .. }))
}

/// How long a lost term waits for its recording thread to end before it is left behind (a
/// stalled state's write may never return; its session, with the lock, goes when it does).
const LOST_JOIN: Duration = Duration::from_secs(2);

/// How long one attempt at the lock waits (polling) before it looks at the shutdown again.
const LOCK_POLL: Duration = Duration::from_secs(10);

/// How a term, or serve, ended.
pub enum Ended {
    /// A signal: the last batch's recording, if it failed, says why.
    Shutdown(Result<(), String>),
    /// A fatal answer.
    Fatal(String),
}

/// How one term as the active replica ended.
enum TermEnd {
    Shutdown(Result<(), String>),
    Fatal(String),
    /// The state was lost or stalled: wait for the lock again.
    StateLost,
}

/// What every term shares: the manifests and what readiness and the metrics say of them.
pub struct Shared {
    /// `-f`: what a reload reads again.
    pub manifests: Vec<PathBuf>,
    /// `--max-deletes`.
    pub max_deletes: Option<u64>,
    /// The manifests in force and their callback index.
    pub adopted: reload::Current,
    /// The digest of the manifests last refused for --max-deletes: the same content is not
    /// refused (and counted) again at every interval.
    pub refused: Arc<std::sync::Mutex<Option<String>>>,
    /// The counters.
    pub metrics: Arc<Metrics>,
    /// What `/readyz` says.
    pub readiness: Arc<Readiness>,
    /// Where the runs serve begins say it runs (host, user, CI job).
    pub origin: RunOrigin,
    /// Takes the run's secrets out of a text before it is logged (an invalid manifest's
    /// problems may quote anything).
    pub redact: fn(&str) -> String,
}

impl Shared {
    /// A term's start, under the lock `writer` holds: the state checked, a run begun, the
    /// manifests `desired` adopted (or, past --max-deletes, only what the state records of
    /// them), and the entries no manifest names forgotten.
    pub fn prepare_term(
        &self,
        mut writer: AnyWriter,
        desired: DesiredState,
    ) -> Result<(AnyWriter, RunInfo), StartError> {
        writer.check_app(desired.app.sdkappid)?;
        let entries = writer.entries()?;
        let run = RunInfo::start(
            RunCommand::Serve,
            desired.digest.clone(),
            self.origin.clone(),
        );
        writer.begin_run(&run)?;
        // Manifests that would add more deletions than --max-deletes are not adopted: serve
        // enforces what the state records of them until a reload brings acceptable ones.
        let mut desired = desired;
        if let Some(max) = self.max_deletes {
            let new = reload::new_deletions(&desired, &entries);
            if new as u64 > max {
                tracing::error!(
                    new_deletions = new,
                    max_deletes = max,
                    "the manifests would add more deletions than --max-deletes; serve enforces \
                     only the entries the state records until a reload brings acceptable \
                     manifests"
                );
                self.readiness.set_manifests_note(Some(format!(
                    "refused: {new} new deletions > --max-deletes {max}; enforcing the entries \
                     the state records"
                )));
                self.metrics.reload("refused");
                if let Ok(mut refused) = self.refused.lock() {
                    *refused = Some(desired.digest.clone());
                }
                desired = reload::recorded_only(desired, &entries);
            }
        }
        let index = ForbiddenIndex::new(&desired)?;
        self.metrics.set_entries(index.len());
        // Entries no manifest names any more are forgotten, as apply forgets them: serve
        // enforces exactly the manifests.
        let forgets = reload::forgets(&desired, &entries);
        if !forgets.is_empty() {
            writer.forget(&forgets)?;
            tracing::info!(
                forgotten = forgets.len(),
                "forgot entries no manifest names"
            );
        }
        *self.adopted.write().unwrap_or_else(|p| p.into_inner()) =
            Arc::new(Adopted { desired, index });
        Ok((writer, run))
    }

    /// The manifests a later term starts with: read again (as a restart would), else the
    /// ones in force.
    fn manifests_now(&self) -> DesiredState {
        let in_force = reload::current(&self.adopted).desired.clone();
        match crate::manifest::load(&self.manifests) {
            Ok(d) if d.app == in_force.app => d,
            _ => in_force,
        }
    }
}

/// The replica's life after start: terms as the active one, standby or held between them.
pub struct Replica {
    /// The manifests and what readiness and the metrics say of them.
    pub shared: Arc<Shared>,
    /// The state, whose lock makes this replica the active one.
    pub store: LocatedStore,
    /// The manifests' app.
    pub sdkappid: u64,
    /// The state's queue (PostgreSQL only).
    pub queue: Option<QueueTarget>,
    /// Each term's client is made from this, with the term's own stop signal.
    pub client_config: ClientConfig,
    /// The callback listener's enforcer: active, standby or held.
    pub enforcer: Enforcer<Arc<Client>>,
    /// Users waiting for a resync.
    pub pending: Arc<Pending>,
    /// The term's recorder while this replica is active (for the reload loop).
    pub term_recorder: Arc<std::sync::Mutex<Option<Recorder>>>,
    /// Users listed, and resync deletions made, at once.
    pub concurrency: usize,
    /// `--resync`.
    pub every: Duration,
    /// `--queue-capacity`.
    pub capacity: usize,
    /// `--shutdown-timeout`.
    pub shutdown_timeout: Duration,
    /// Raised at the first SIGTERM or SIGINT.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// Stops the callback listener's accepting.
    pub stop_accepting: tokio::sync::watch::Sender<bool>,
}

impl Replica {
    /// Runs until a signal (`shutdown`) or a fatal answer: `first` is the term whose lock
    /// was taken at start, if it was; otherwise, and after each term that lost its state, the
    /// wait for the lock.
    pub async fn run(mut self, first: Option<(AnyWriter, RunInfo)>) -> Ended {
        let mut next = first;
        loop {
            let (writer, run) = match next.take() {
                Some(term) => term,
                None => match self.wait_for_lock().await {
                    None => {
                        let _ = self.stop_accepting.send(true);
                        return Ended::Shutdown(Ok(()));
                    }
                    Some(term) => term,
                },
            };
            match self.term(writer, run).await {
                TermEnd::Shutdown(recorded) => return Ended::Shutdown(recorded),
                TermEnd::Fatal(message) => return Ended::Fatal(message),
                TermEnd::StateLost => {}
            }
        }
    }

    fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Waits for the state's lock: a standby while another replica holds it, held (callbacks
    /// remembered, not ready) while the state cannot be reached. `None` at shutdown.
    async fn wait_for_lock(&mut self) -> Option<(AnyWriter, RunInfo)> {
        let readiness = &self.shared.readiness;
        let mut standby = false;
        let mut last_error = String::new();
        loop {
            if self.shutting_down() {
                return None;
            }
            let store = self.store.clone();
            let sdkappid = self.sdkappid;
            // The first attempt does not wait: a replica that finds the lock held is a ready
            // standby at once, not after a poll's worth of 503s (a rolling update waits for it).
            let wait = if standby { LOCK_POLL } else { Duration::ZERO };
            let attempt = tokio::task::spawn_blocking(move || {
                store.create_or_open_writer(sdkappid, "serve", wait)
            });
            let mut shutdown = self.shutdown.clone();
            let attempt = tokio::select! {
                a = attempt => a,
                _ = shutdown.wait_for(|s| *s) => return None,
            };
            let error = match attempt {
                Ok(Ok(writer)) => {
                    let shared = self.shared.clone();
                    let prepared = tokio::task::spawn_blocking(move || {
                        let desired = shared.manifests_now();
                        shared.prepare_term(writer, desired)
                    })
                    .await;
                    match prepared {
                        Ok(Ok(term)) => return Some(term),
                        Ok(Err(e)) => format!("{e}"),
                        Err(e) => e.to_string(),
                    }
                }
                Ok(Err(e)) if self.queue.is_some() && is_locked(&e) => {
                    if !standby {
                        standby = true;
                        self.become_standby();
                    } else if readiness.role() != Role::Standby {
                        tracing::info!("the state is reachable again; this replica is a standby");
                    }
                    // The metrics first: whoever sees `ready: standby` sees them too.
                    self.shared.metrics.set_ready(true, false);
                    readiness.set_role(Role::Standby);
                    continue;
                }
                Ok(Err(e)) => crate::apply::executor::error_chain(&e),
                Err(e) => e.to_string(),
            };
            if error != last_error {
                tracing::warn!(error = %error, "the state cannot be reached; trying again");
                last_error = error;
            }
            readiness.set_role(Role::StateLost("the state cannot be reached".into()));
            self.shared.metrics.set_ready(false, false);
            let mut shutdown = self.shutdown.clone();
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.wait_for(|s| *s) => return None,
            }
        }
    }

    /// Callbacks go to the state's queue from now on; users whose deletions were lost with
    /// this replica's last term go there too, every entry of theirs.
    fn become_standby(&self) {
        let Some(queue) = self.queue.clone() else {
            return;
        };
        let forward = spawn_forwarder(queue, self.capacity, self.pending.clone());
        self.enforcer.standby(forward);
        match self.pending.take() {
            Some(Scope::Users(users)) => {
                let n = replica::forward_users(&self.enforcer, &self.shared.adopted, &users);
                tracing::info!(
                    users = users.len(),
                    conversations = n,
                    "the conversations of users whose deletions were lost go to the active replica"
                );
            }
            Some(Scope::Full) => {
                // Too many to forward: kept for when this replica is active again (the active
                // replica's own takeover resync read every list after this one lost the lock).
                self.pending.mark_full();
            }
            None => {}
        }
        tracing::info!("another replica holds the state's lock: this one is a standby");
    }

    /// One term as the active replica, until a signal, a fatal answer or the state lost.
    async fn term(&mut self, writer: AnyWriter, run: RunInfo) -> TermEnd {
        let shared = &self.shared;
        let stop = Stop::new();
        let mut config = self.client_config.clone();
        config.stop = stop.clone();
        let client = match Client::new(config) {
            Ok(c) => Arc::new(c),
            Err(e) => return TermEnd::Fatal(e.to_string()),
        };
        let (recorder, recorder_thread) =
            spawn_recorder(writer, run, stop.clone(), self.pending.clone());
        self.enforcer
            .activate(client.clone(), recorder.clone(), stop.clone());
        *lock(&self.term_recorder) = Some(recorder.clone());
        shared.metrics.set_ready(true, true);
        shared.readiness.set_role(Role::Active);
        tracing::info!("this replica holds the state's lock: it is the active one");
        let term_shutdown = Arc::new(AtomicBool::new(false));
        let context = Arc::new(resync::Context {
            client: client.clone(),
            enforcer: self.enforcer.clone(),
            recorder: recorder.clone(),
            stop: stop.clone(),
            shutdown: term_shutdown.clone(),
            concurrency: self.concurrency,
        });
        drop(recorder);
        // A fatal answer to a resync's listing stops serve too.
        let listing_fatal: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
        let (stop_resyncs, resyncs_stopping) = tokio::sync::watch::channel(false);
        let mut resyncs = tokio::spawn(resync_loop(
            Resyncing {
                context,
                adopted: shared.adopted.clone(),
                pending: self.pending.clone(),
                metrics: shared.metrics.clone(),
                readiness: shared.readiness.clone(),
                every: self.every,
                listing_fatal: listing_fatal.clone(),
            },
            resyncs_stopping,
        ));

        // The state's queue is drained from now on, beside the first resync.
        let taker = self.queue.clone().map(|queue| {
            spawn_taker(
                queue,
                self.enforcer.clone(),
                shared.adopted.clone(),
                self.pending.clone(),
                tokio::runtime::Handle::current(),
            )
        });
        let mut shutdown = self.shutdown.clone();
        let signalled = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => true,
            () = stop.stopped() => false,
        };
        drop(taker);
        if !signalled && stop.reason() != Some(StopReason::Fatal) {
            // Not ready from the moment calls stop, not after the teardown.
            shared
                .readiness
                .set_role(Role::StateLost("calls stopped".to_owned()));
            shared.metrics.set_ready(false, false);
        }
        term_shutdown.store(true, Ordering::SeqCst);
        let _ = stop_resyncs.send(true);
        if signalled {
            shared.readiness.set_role(Role::Starting);
            shared.metrics.set_ready(false, true);
            let _ = self.stop_accepting.send(true);
            let deadline = tokio::time::Instant::now() + self.shutdown_timeout;
            let idle = self.enforcer.wait_idle(self.shutdown_timeout).await;
            if !idle {
                tracing::warn!("deletions still in flight at the shutdown timeout were abandoned");
                stop.stop(StopReason::Terminated);
            }
            // A resync still running at the timeout is dropped, so that the recording thread
            // can write its last batch and end.
            if tokio::time::timeout_at(deadline, &mut resyncs)
                .await
                .is_err()
            {
                resyncs.abort();
                let _ = resyncs.await;
            }
        } else {
            // Calls have stopped (the client obeys `stop`); a resync waiting on its listing
            // is dropped.
            resyncs.abort();
            let _ = resyncs.await;
        }
        lock(&self.term_recorder).take();
        let unfinished = self.enforcer.hold();
        let fatal = stop.reason() == Some(StopReason::Fatal);
        // The recording thread writes its last batch and ends the run once every recorder is
        // dropped; dropping the writer releases the lock. A stalled state may never answer:
        // then the thread is left behind, and its session (with the lock) goes when it does.
        let joined = tokio::task::spawn_blocking(move || {
            let (writer, recorded) = recorder_thread.join();
            drop(writer);
            recorded
        });
        let wait = if signalled {
            self.shutdown_timeout
        } else {
            LOST_JOIN
        };
        let recorded = match tokio::time::timeout(wait, joined).await {
            Ok(Ok(recorded)) => recorded,
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("the state did not answer".to_owned()),
        };
        if fatal {
            return TermEnd::Fatal(
                self.enforcer
                    .fatal()
                    .or_else(|| lock(&listing_fatal).clone())
                    .or_else(|| client.fatal().map(|f| f.message.clone()))
                    .unwrap_or_else(|| "the server gave a fatal answer".to_owned()),
            );
        }
        if signalled {
            return TermEnd::Shutdown(recorded);
        }
        // The state is lost: what this term could not finish is resynced by the next one (or,
        // as a standby, sent to the active replica).
        self.pending.mark(unfinished);
        let why = match &recorded {
            Err(e) => e.clone(),
            Ok(()) => "a write stalled".to_owned(),
        };
        tracing::error!(error = %why, "the state is lost: calls stopped; reconnecting");
        TermEnd::StateLost
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the resync loop needs.
struct Resyncing {
    context: Arc<resync::Context>,
    adopted: reload::Current,
    pending: Arc<Pending>,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    /// `--resync`.
    every: Duration,
    /// Where a fatal answer to the listing is left for the exit message.
    listing_fatal: Arc<std::sync::Mutex<Option<String>>>,
}

/// The first resync at once, then one every `every` (±10%), and a targeted (or, past its
/// bound, full) one whenever users are marked: by a reload that changed their entries, or by
/// callbacks the full queue could not take.
async fn resync_loop(r: Resyncing, mut stopping: tokio::sync::watch::Receiver<bool>) {
    let Resyncing {
        context,
        adopted,
        pending,
        metrics,
        readiness,
        every,
        listing_fatal,
    } = r;
    let mut scope = Scope::Full;
    let mut first = true;
    loop {
        let started = Instant::now();
        let generation = reload::current(&adopted);
        match resync::resync(&context, &generation, &scope).await {
            Err(resync::Fatal(message)) => {
                if let Ok(mut slot) = listing_fatal.lock() {
                    slot.get_or_insert(message);
                }
                return;
            }
            Ok(done) => {
                let full = scope == Scope::Full;
                if done.unfinished == 0 {
                    if full {
                        metrics.resync_succeeded();
                    }
                    if first {
                        readiness.set_first_resync_done();
                    }
                    tracing::info!(
                        full,
                        users = done.users,
                        deletions = done.deletions,
                        seconds = started.elapsed().as_secs_f64(),
                        "{}",
                        if first {
                            "the first resync is done"
                        } else {
                            "a resync is done"
                        }
                    );
                    first = false;
                } else {
                    tracing::warn!(
                        full,
                        unfinished = done.unfinished,
                        "a resync left deletions unfinished"
                    );
                }
            }
        }
        if context.shutdown.load(Ordering::SeqCst) {
            return;
        }
        // A first resync that failed is tried again soon rather than in six hours.
        let wait = if first {
            Duration::from_secs(30).min(every)
        } else {
            resync::jittered(every)
        };
        let timer = tokio::time::sleep(wait);
        tokio::pin!(timer);
        scope = loop {
            tokio::select! {
                () = &mut timer => break Scope::Full,
                () = async { let _ = stopping.wait_for(|stop| *stop).await; } => return,
                () = pending.marked() => if let Some(marked) = pending.take() {
                    break marked;
                },
            }
        };
        if first {
            scope = Scope::Full;
        }
    }
}

/// What the reload loop needs.
pub struct Reloading {
    /// The manifests and what readiness and the metrics say of them.
    pub shared: Arc<Shared>,
    /// `--reload-interval`.
    pub every: Duration,
    /// The term's recorder while this replica is active; a standby (or a replica without its
    /// state) adopts manifests for its callbacks and writes nothing.
    pub recorder: Arc<std::sync::Mutex<Option<Recorder>>>,
    /// Where the users whose entries a reload changed go.
    pub pending: Arc<Pending>,
    /// Woken by SIGHUP: read the manifests now.
    pub hangup: Arc<tokio::sync::Notify>,
    /// The fingerprint of the files last parsed without a problem, and their digest: an
    /// interval that finds the same bytes skips parsing them.
    pub last_parsed: std::sync::Mutex<Option<(crate::manifest::Fingerprint, String)>>,
}

/// Every `every` and on SIGHUP: re-reads the manifests' content and adopts a changed, valid
/// set within `--max-deletes`.
pub async fn reload_loop(r: Reloading) {
    let mut ticks = tokio::time::interval(r.every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = r.hangup.notified() => {
                tracing::info!("SIGHUP: reading the manifests again");
            }
        }
        let outcome = reload_once(&r).await;
        r.shared.metrics.reload(outcome);
    }
}

async fn reload_once(r: &Reloading) -> &'static str {
    let shared = &r.shared;
    let old = reload::current(&shared.adopted);
    // Reading a million-entry manifest takes a while: not on the runtime's threads. The files'
    // bytes are compared first: when they are the ones last parsed, their digest is known and
    // parsing them again would only find it again.
    let paths = shared.manifests.clone();
    let fingerprint = tokio::task::spawn_blocking(move || crate::manifest::fingerprint(&paths))
        .await
        .ok()
        .flatten();
    let known = r.last_parsed.lock().ok().and_then(|last| last.clone());
    if let (Some(now), Some((then, digest))) = (fingerprint, known)
        && now == then
    {
        if digest == old.desired.digest {
            shared.readiness.set_manifests_note(None);
            return "unchanged";
        }
        if shared.refused.lock().ok().and_then(|d| d.clone()).as_ref() == Some(&digest) {
            return "unchanged";
        }
    }
    let paths = shared.manifests.clone();
    let loaded = tokio::task::spawn_blocking(move || crate::manifest::load(&paths)).await;
    let desired = match loaded {
        Ok(Ok(d)) => {
            // The fingerprint was taken before this read: if the files changed in between,
            // the next reload sees other bytes and parses again.
            if let (Some(now), Ok(mut last)) = (fingerprint, r.last_parsed.lock()) {
                *last = Some((now, d.digest.clone()));
            }
            d
        }
        Ok(Err(report)) => {
            // One `file:line:column: message` a problem, without the run's secrets: a log line
            // is read by people and collectors, and a manifest may quote anything.
            let problems: Vec<String> = report
                .problems()
                .iter()
                .map(|p| (shared.redact)(&format!("{}: {}", p.place(), p.message)))
                .collect();
            tracing::error!(
                problems = %problems.join("; "),
                "the manifests are invalid; the ones in force stay"
            );
            shared.readiness.set_manifests_note(Some(
                "the last reload was invalid; the previous manifests are enforced".into(),
            ));
            return "invalid";
        }
        Err(e) => {
            tracing::error!(error = %e, "reading the manifests failed; the ones in force stay");
            return "invalid";
        }
    };
    let refused_before = shared.refused.lock().ok().and_then(|d| d.clone());
    if desired.digest == old.desired.digest {
        // Back to the manifests in force (after an invalid or refused edit, say).
        shared.readiness.set_manifests_note(None);
        return "unchanged";
    }
    if refused_before.as_ref() == Some(&desired.digest) {
        return "unchanged";
    }
    if desired.app != old.desired.app {
        tracing::error!(
            "the manifests now name another app (sdkappid, region or admin); restart serve to \
             change apps. The manifests in force stay"
        );
        shared.readiness.set_manifests_note(Some(
            "the last reload names another app; the previous manifests are enforced".into(),
        ));
        return "invalid";
    }
    let index = match ForbiddenIndex::new(&desired) {
        Ok(i) => i,
        Err(e) => {
            tracing::error!(error = %e, "the manifests cannot be indexed; the ones in force stay");
            return "invalid";
        }
    };
    // A standby (or a replica that lost its state) adopts the manifests for its callbacks
    // only; the active replica checks them against the state and forgets what they drop.
    let recorder = r.recorder.lock().ok().and_then(|g| g.clone());
    let entries = match &recorder {
        Some(recorder) => match recorder.entries().await {
            Ok(e) => Some(e),
            Err(e) => {
                tracing::warn!(error = %e, "a reload could not read the state; tried again later");
                return "invalid";
            }
        },
        None => None,
    };
    let new = entries
        .as_ref()
        .map_or(0, |entries| reload::new_deletions(&desired, entries));
    if let Some(max) = shared.max_deletes
        && new as u64 > max
    {
        tracing::error!(
            new_deletions = new,
            max_deletes = max,
            digest = %desired.digest,
            "the new manifests would add more deletions than --max-deletes; they are not \
             adopted and the previous ones stay enforced"
        );
        shared.readiness.set_manifests_note(Some(format!(
            "refused: {new} new deletions > --max-deletes {max}; the previous manifests are \
             enforced"
        )));
        if let Ok(mut refused) = shared.refused.lock() {
            *refused = Some(desired.digest.clone());
        }
        return "refused";
    }
    let forgets = entries
        .as_ref()
        .map(|entries| reload::forgets(&desired, entries))
        .unwrap_or_default();
    drop(entries);
    let changed = reload::changed_users(&old.desired.entries, &desired.entries);
    let run = RunInfo::start(
        RunCommand::Serve,
        desired.digest.clone(),
        shared.origin.clone(),
    );
    tracing::info!(
        run = %run.run_id,
        entries = desired.entries.len(),
        changed_users = changed.len(),
        forgotten = forgets.len(),
        "adopted new manifests"
    );
    shared.metrics.set_entries(index.len());
    if let Some(recorder) = &recorder {
        recorder.new_run(run, forgets);
    }
    *shared.adopted.write().unwrap_or_else(|p| p.into_inner()) =
        Arc::new(Adopted { desired, index });
    shared.readiness.set_manifests_note(None);
    if let Ok(mut refused) = shared.refused.lock() {
        *refused = None;
    }
    r.pending.mark(changed);
    "adopted"
}
