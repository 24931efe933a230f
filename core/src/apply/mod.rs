//! The apply operation: a plan carried out against the state, in the order that keeps it safe.
//!
//! It runs in three steps, so that the binary keeps only flags, rendering, the prompt and exit
//! codes (as cargo's commands end in `ops::…`):
//!
//! 1. [`prepare`]: the plan, made (or a saved one checked) against the state read without the
//!    lock. A refusal here (bad input, another app, a stale saved plan) creates nothing, not
//!    even the lock file. The binary shows the plan and asks.
//! 2. [`Prepared::lock`]: the state's lock, then the state checked again under it. If another
//!    apply moved it on meanwhile, a saved plan is refused as stale, and a plan made from
//!    manifests is made again under the lock and handed back ([`Locking::Replanned`]) to be
//!    shown and approved again; the lock stays held, so it cannot move on a second time.
//! 3. [`Locked::run`]: the run's row is written first, so a state that cannot be written is
//!    refused before anything is called; then the [`executor`] carries the plan out under the
//!    run's one [`Stop`].
//!
//! [`prepare`] reads the state the caller opened once, without the lock: with `--refresh`, the
//! same reader the listing phase ([`crate::listing::users_to_list`]) checked the app on, so the
//! state is opened once before the lock. [`Prepared::lock`] locks the state where a
//! [`LocatedStore`] says, the one lock-and-open path, which `state rm` and `state migrate` use
//! too; the operation never names a backend ([`AnyWriter`] is either), and the
//! [`Ledger`]/[`LedgerWriter`] traits stay the seam that tests write fakes against.

use std::time::Duration;

use crate::desired::DesiredState;
use crate::ids::ConversationKey;
use crate::ledger::history::{EventAction, EventReason};
use crate::ledger::{
    AnyWriter, Deleted, Ledger, LedgerError, LedgerWriter, LocatedStore, Meta, Origin, RunCommand,
    RunInfo, RunOrigin, Snapshot, StateRef, ToRecord, Written,
};
use crate::plan::observed::Observations;
use crate::plan::{self, Action, Filter, Plan, PlanError, Reason, StalePlan};
use crate::stop::Stop;

pub mod executor;

pub use executor::{
    Conversation, Deleter, Deletion, DeletionOutcome, EVENT_FORMAT_VERSION, Event, EventLine,
    ExecOptions, Executed, Execution, FAILED_USERS_SHOWN, FAILURES_SHOWN_PER_CODE, FailureGroup,
    FailureRecap, LedgerRecorder, MISSING_USERS_SHOWN, RecordError, Recorder, RunSummary,
    error_chain, event_line, execute, progress_figures,
};

/// What a plan is made from.
#[derive(Debug)]
pub enum Source {
    /// A plan saved by `timctl plan --out`: carried out exactly, or refused when stale.
    Saved(Plan),
    /// The manifests and the filter: planned now, and again under the lock if the state moved.
    Manifests {
        /// The merged manifests.
        desired: DesiredState,
        /// `--user`, `--exclude-user`, `--reassert`.
        filter: Filter,
        /// What the server's conversation lists held (`--refresh`), or `None` to plan from the
        /// state alone. Planning again under the lock reuses it: the lists were read once.
        seen: Option<Observations>,
    },
}

/// Why the apply operation refused or failed before the executor ran.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ApplyError {
    /// The state could not be opened, locked or read.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Store(#[from] LedgerError),
    /// The plan could not be made.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Plan(#[from] PlanError),
    /// A saved plan no longer matches the state.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Stale(#[from] StalePlan),
    /// The run's row could not be written: nothing was called.
    #[error("the state {location} cannot be written, so nothing was called: {cause}")]
    #[diagnostic(
        code(timctl::state::unwritable),
        help("free space on its disk, or make it writable, then run apply again")
    )]
    Unwritable {
        /// The state.
        location: String,
        /// The whole chain of causes, in one line (`database or disk is full`).
        cause: String,
    },
}

/// A plan ready to be shown and approved; [`Prepared::lock`] goes ahead with it.
#[derive(Debug)]
pub struct Prepared {
    plan: Plan,
    from: PlannedFrom,
}

/// What a prepared plan was made from, which decides what happens when the state moved on.
#[derive(Debug)]
// One per apply, moved a few times: the size of its variants costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
enum PlannedFrom {
    /// A saved plan: carried out exactly, or refused as stale; never made again.
    Saved,
    /// The manifests: made again under the lock when the state moved on.
    Manifests {
        /// The merged manifests.
        desired: DesiredState,
        /// `--user`, `--exclude-user`, `--reassert`.
        filter: Filter,
        /// What the server's lists held (`--refresh`), reused when planning again.
        seen: Option<Observations>,
        /// The state, locked, when the plan was made again under the lock.
        held: Option<AnyWriter>,
    },
}

/// Makes the plan (or checks a saved one) against `state`, the state as it is now, read
/// without the lock. The caller opens it once (for the source's app) and drops it after.
pub fn prepare(source: Source, state: &dyn Ledger) -> Result<Prepared, ApplyError> {
    match source {
        Source::Saved(plan) => {
            state.check_app(plan.app.sdkappid)?;
            plan::check_state(plan.state, state.state_ref())?;
            Ok(Prepared {
                plan,
                from: PlannedFrom::Saved,
            })
        }
        Source::Manifests {
            desired,
            filter,
            seen,
        } => {
            let plan = plan::make(&desired, state, &filter, seen.as_ref())?;
            Ok(Prepared {
                plan,
                from: PlannedFrom::Manifests {
                    desired,
                    filter,
                    seen,
                    held: None,
                },
            })
        }
    }
}

/// What [`Prepared::lock`] came to.
#[derive(Debug)]
// One per apply, matched at once: the size of its variants costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
pub enum Locking {
    /// The state is as planned, and locked: go ahead.
    Ready(Locked),
    /// The state moved on while this apply planned, asked or waited for the lock. The plan was
    /// made again under the lock, which it still holds: show it and ask again (or, with
    /// `--auto-approve`, check `--max-deletes` again), then lock it (at once) and run it.
    Replanned(Prepared),
}

impl Prepared {
    /// The plan, to show.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Whether the plan was made from a saved plan file.
    pub fn is_saved(&self) -> bool {
        matches!(self.from, PlannedFrom::Saved)
    }

    /// Takes the state's lock (waiting up to `lock_timeout`) and checks the state again under
    /// it. A state that does not exist yet is created only once the plan is known to be
    /// current.
    pub fn lock(
        mut self,
        store: &LocatedStore,
        lock_timeout: Duration,
    ) -> Result<Locking, ApplyError> {
        let sdkappid = self.plan.app.sdkappid;
        if let PlannedFrom::Manifests { held, .. } = &mut self.from
            && let Some(writer) = held.take()
        {
            return Ok(Locking::Ready(self.ready(writer)));
        }
        let writer = match store.open_existing_writer(sdkappid, OPERATION, lock_timeout)? {
            Some(writer) => writer,
            None => {
                // No state (any more): refuse a saved plan made against one before creating
                // anything; otherwise create it empty. Another apply may create and write one
                // between the two opens: the check below sees it.
                if let PlannedFrom::Saved = self.from {
                    plan::check_state(self.plan.state, None)?;
                }
                store.create_or_open_writer(sdkappid, OPERATION, lock_timeout)?
            }
        };
        writer.check_app(sdkappid)?;
        let now = writer.state_ref();
        if !is_current(self.plan.state, now) {
            match self.from {
                // A saved plan runs only on the state it was made against; `check_state` passes
                // nothing else, so this refuses it as stale.
                PlannedFrom::Saved => plan::check_state(self.plan.state, now)?,
                PlannedFrom::Manifests {
                    desired,
                    filter,
                    seen,
                    held: _,
                } => {
                    let plan = plan::make(&desired, &writer, &filter, seen.as_ref())?;
                    return Ok(Locking::Replanned(Prepared {
                        plan,
                        from: PlannedFrom::Manifests {
                            desired,
                            filter,
                            seen,
                            held: Some(writer),
                        },
                    }));
                }
            }
        }
        Ok(Locking::Ready(self.ready(writer)))
    }

    fn ready(self, writer: AnyWriter) -> Locked {
        let run = RunInfo::start(
            RunCommand::Apply,
            self.plan.manifest_digest.clone(),
            RunOrigin::default(),
        );
        Locked {
            plan: self.plan,
            writer,
            run,
        }
    }
}

/// What the lock file and messages say the holder is doing.
const OPERATION: &str = "apply";

/// Whether the state under the lock is the one the plan was made against. A state created and
/// never written (serial 1, perhaps by another apply between the two opens) is as empty as
/// no state.
fn is_current(planned: Option<StateRef>, now: Option<StateRef>) -> bool {
    planned == now || (planned.is_none() && now.is_some_and(|s| s.serial == 1))
}

/// A plan with the state locked and current: [`Locked::run`] carries it out.
#[derive(Debug)]
pub struct Locked {
    plan: Plan,
    writer: AnyWriter,
    run: RunInfo,
}

/// How an apply went.
#[derive(Debug)]
pub struct Applied {
    /// The executor's summary (the last event).
    pub summary: RunSummary,
}

impl Locked {
    /// The plan about to run.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Says where and by whom the run runs (host, OS user, commit, CI job), for the history.
    pub fn ran_from(mut self, origin: RunOrigin) -> Self {
        self.run.origin = origin;
        self
    }

    /// Gives the run the ID its events already carry (the binary makes it before planning, so
    /// that every `--json` event of one apply, refusals included, names the same run).
    pub fn with_run_id(mut self, run_id: uuid::Uuid) -> Self {
        self.run.run_id = run_id;
        self
    }

    /// The run's ID, as the history will name it.
    pub fn run_id(&self) -> uuid::Uuid {
        self.run.run_id
    }

    /// Writes the run's row, then carries the plan out through `deleter`, stopping when `stop`
    /// is raised (by a signal, or by the executor itself). `deleter` must obey the same `stop`.
    pub async fn run<D: Deleter>(
        mut self,
        deleter: &D,
        stop: &Stop,
        opts: &ExecOptions,
        on_event: &mut (dyn FnMut(&Event) + Send),
    ) -> Result<Applied, ApplyError> {
        // One real write before the first call: on a full disk or a read-only state, nothing
        // is called whose result could not be recorded.
        if let Err(e) = self.writer.begin_run(&self.run) {
            return Err(ApplyError::Unwritable {
                location: self.writer.location(),
                cause: error_chain(&e),
            });
        }
        let (deletions, records, forgets, reasons) = split(self.plan);
        // Records need no call: they are written first, in one transaction, so that a run
        // stopped later still keeps what the refresh saw.
        if let Err(e) = self.writer.record_absent(&self.run, &records) {
            return Err(ApplyError::Unwritable {
                location: self.writer.location(),
                cause: error_chain(&e),
            });
        }
        let recorded = records.len();
        for r in &records {
            on_event(&Event::Recorded {
                conversation: Conversation::of(&r.key),
                clear_roaming: r.clear_roaming,
            });
        }
        drop(records);
        let recorder = LedgerRecorder {
            writer: WithReasons {
                writer: self.writer,
                reasons,
            },
            run: self.run,
        };
        // The executor's summary counts the records written before it ran.
        let mut with_records = |e: &Event| match e {
            Event::Summary(s) => on_event(&Event::Summary(RunSummary {
                recorded,
                ..s.clone()
            })),
            e => on_event(e),
        };
        let mut executed = execute(
            Execution {
                deletions,
                forgets,
                deleter,
                recorder,
                opts,
                stop,
            },
            &mut with_records,
        )
        .await;
        executed.summary.recorded = recorded;
        // The run's end and counts, for `state runs`. A state that fails here has recorded
        // every deletion already; the run's row simply stays without an end, as a killed
        // run's does.
        let LedgerRecorder {
            mut writer,
            mut run,
        } = executed.recorder;
        let s = &executed.summary;
        run.end([
            ("deleted", s.deleted as u64),
            ("recorded", s.recorded as u64),
            ("forgotten", s.forgotten as u64),
            ("failed", s.failed as u64),
            ("not_started", s.not_started as u64),
        ]);
        if executed.record_error.is_none()
            && let Err(e) = writer.writer.end_run(&run)
        {
            tracing::warn!("the run's end could not be recorded: {}", error_chain(&e));
        }
        Ok(Applied {
            summary: executed.summary,
        })
    }
}

/// The plan's deletions, records (stamped with when the plan read the server), forgets and the
/// deletions' reasons, for the executor. Takes the plan so that its changes are moved, not
/// copied: at a million entries a copy is a hundred megabytes.
fn split(plan: Plan) -> (Vec<Deletion>, Vec<Deleted>, Vec<ConversationKey>, Reasons) {
    let seen_at = plan.refreshed_at.unwrap_or_else(jiff::Timestamp::now);
    let mut deletions = Vec::with_capacity(plan.summary.delete as usize);
    let mut records = Vec::with_capacity(plan.summary.record as usize);
    let mut forgets = Vec::with_capacity(plan.summary.forget as usize);
    let mut reasons = Reasons::default();
    for c in plan.changes {
        match c.action {
            Action::Delete => {
                reasons.push(&c.key, c.reason);
                deletions.push(Deletion {
                    key: c.key,
                    clear_roaming: c.clear_roaming,
                });
            }
            Action::Record => records.push(Deleted {
                key: c.key,
                clear_roaming: c.clear_roaming,
                deleted_at: seen_at,
            }),
            Action::Forget => forgets.push(c.key),
        }
    }
    (deletions, records, forgets, reasons)
}

/// The plan's reason for each deletion, kept as runs: the first key of each run of deletions
/// (in the plan's key order) that share a reason. A plan's reasons come in long runs (all
/// `new`, or one user's `came_back`s), so this holds a few keys where a map would hold every
/// one of them again.
#[derive(Debug, Default)]
struct Reasons {
    runs: Vec<(ConversationKey, Reason)>,
}

impl Reasons {
    /// Adds the next deletion, in key order.
    fn push(&mut self, key: &ConversationKey, reason: Reason) {
        if self.runs.last().is_none_or(|(_, r)| *r != reason) {
            self.runs.push((key.clone(), reason));
        }
    }

    /// The reason of the planned deletion `key`.
    fn of(&self, key: &ConversationKey) -> Reason {
        let after = self.runs.partition_point(|(first, _)| first <= key);
        after.checked_sub(1).map_or(Reason::New, |i| self.runs[i].1)
    }
}

/// The locked writer, recording each confirmed deletion with its plan's reason: the executor
/// hands over deletions, the history wants to know why.
struct WithReasons {
    writer: AnyWriter,
    reasons: Reasons,
}

impl Ledger for WithReasons {
    fn location(&self) -> String {
        self.writer.location()
    }
    fn meta(&self) -> Option<&Meta> {
        self.writer.meta()
    }
    fn snapshot(&self) -> Result<Option<Snapshot>, LedgerError> {
        self.writer.snapshot()
    }
}

impl LedgerWriter for WithReasons {
    fn begin_run(&mut self, run: &RunInfo) -> Result<(), LedgerError> {
        self.writer.begin_run(run)
    }
    fn end_run(&mut self, run: &RunInfo) -> Result<(), LedgerError> {
        self.writer.end_run(run)
    }
    fn record_items(
        &mut self,
        run: &RunInfo,
        origin: Origin,
        batch: &[ToRecord<'_>],
    ) -> Result<Written, LedgerError> {
        self.writer.record_items(run, origin, batch)
    }
    fn remove(
        &mut self,
        action: EventAction,
        reason: EventReason,
        batch: &[ConversationKey],
    ) -> Result<Written, LedgerError> {
        self.writer.remove(action, reason, batch)
    }
    fn record_deleted(&mut self, run: &RunInfo, batch: &[Deleted]) -> Result<Written, LedgerError> {
        let reasons = &self.reasons;
        self.writer.record(run, Origin::Deleted, batch, &|key| {
            EventReason::Plan(reasons.of(key))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(from: &str, peer: &str) -> ConversationKey {
        ConversationKey::new(from.parse().unwrap(), peer.parse().unwrap())
    }

    #[test]
    fn each_deletion_gets_its_plans_reason_back() {
        let planned = [
            (key("a", "user:b"), Reason::New),
            (key("a", "user:c"), Reason::New),
            (key("b", "user:a"), Reason::CameBack),
            (key("b", "group:@TGS#g"), Reason::CameBack),
            (key("c", "user:a"), Reason::ClearRoaming),
            (key("d", "user:a"), Reason::New),
        ];
        let mut reasons = Reasons::default();
        assert!(
            planned.is_sorted_by(|a, b| a.0 < b.0),
            "in the plan's order"
        );
        for (k, r) in &planned {
            reasons.push(k, *r);
        }
        assert_eq!(reasons.runs.len(), 4, "one key per run of equal reasons");
        for (k, r) in &planned {
            assert_eq!(reasons.of(k), *r, "{k}");
        }
    }
}
