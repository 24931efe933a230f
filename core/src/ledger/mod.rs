//! The ledger: timctl's memory of what it has deleted.
//!
//! The planner and apply see the ledger only through the [`Ledger`] (read) and
//! [`LedgerWriter`] (write) traits, which both backends implement: [`sqlite`], the embedded
//! default (one SQLite file, mode 0600), and [`postgres`]; [`location`] picks one from
//! `--state`.
//!
//! Writes need the exclusive [`lock::StateLock`]; a [`sqlite::SqliteLedgerWriter`] cannot be
//! made without one, so a write without the lock is not representable. Reads need neither a
//! lock nor credentials.

use std::path::PathBuf;

use crate::ids::ConversationKey;

pub mod history;
pub mod location;
pub mod lock;
pub mod migrate;
pub mod postgres;
pub mod sqlite;

pub use location::{
    AnyLedger, AnyWriter, LocatedStore, LocationError, StateLocation, StateName, open_read,
    prune_history,
};
pub use lock::{LockError, LockHolder, StateLock, StatePathError};
pub use postgres::{PgError, PgLedger, PgLedgerWriter};
pub use sqlite::{SqliteLedger, SqliteLedgerWriter};

/// Which state a plan was made against: the ledger's lineage and serial.
///
/// The lineage is a UUID fixed when the ledger is created; the serial grows by one with every
/// write. A saved plan is valid only against exactly the state it names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct StateRef {
    /// Fixed at creation; a ledger deleted and created again has another one.
    pub lineage: uuid::Uuid,
    /// Bumped by every write.
    pub serial: u64,
}

/// What a ledger knows about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    /// Lineage and serial.
    pub state: StateRef,
    /// The one app this ledger is bound to.
    pub sdkappid: u64,
    /// When the ledger was created.
    pub created_at: jiff::Timestamp,
    /// The timctl version that created it.
    pub created_by: String,
    /// The schema version of the store.
    pub schema_version: u32,
}

/// How an entry came to be in the state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Origin {
    /// timctl deleted the conversation (a confirmed `recentcontact/delete`, or a user that does
    /// not exist).
    Deleted,
    /// A refresh saw the conversation absent from the user's list; no call was made.
    Absent,
}

impl Origin {
    /// `"deleted"` or `"absent"`, as `state list --json` and the SQLite column spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Deleted => "deleted",
            Origin::Absent => "absent",
        }
    }

    /// The origin spelled `s`, if any.
    pub fn parse(s: &str) -> Option<Origin> {
        match s {
            "deleted" => Some(Origin::Deleted),
            "absent" => Some(Origin::Absent),
            _ => None,
        }
    }
}

/// One recorded deletion, or observed absence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateEntry {
    /// Which conversation.
    pub key: ConversationKey,
    /// Whether the last deletion also cleared roaming messages (for an observed absence: what
    /// the manifest asked then).
    pub clear_roaming: bool,
    /// When the entry was last changed: the first deletion of a conversation the state records
    /// the same way since (or the absence observed), to the second.
    pub deleted_at: jiff::Timestamp,
    /// The run that recorded it (see [`Ledger::runs`]).
    pub run_id: uuid::Uuid,
    /// Whether timctl deleted it or saw it absent.
    pub origin: Origin,
}

/// A confirmed deletion to record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deleted {
    /// Which conversation.
    pub key: ConversationKey,
    /// Whether ClearRamble was sent.
    pub clear_roaming: bool,
    /// When the API confirmed it.
    pub deleted_at: jiff::Timestamp,
}

/// A confirmed deletion with what the history says about it beyond the entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DetailedDeletion {
    /// The deletion.
    pub deleted: Deleted,
    /// Why (`enforced` for serve's callback work).
    pub reason: history::EventReason,
    /// For an enforced deletion: the callback that triggered it, a JSON object.
    pub trigger: Option<serde_json::Value>,
    /// For an enforced deletion: from the callback's arrival to the confirmed deletion.
    pub latency_ms: Option<u64>,
}

/// Which command a run was (`state runs` shows it exactly so).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RunCommand {
    /// `timctl apply`.
    Apply,
    /// `timctl serve` (a run per manifest generation it adopts).
    Serve,
    /// `timctl state rm`.
    StateRm,
    /// `timctl state migrate`.
    StateMigrate,
    /// `timctl state prune-history`.
    StatePruneHistory,
}

impl RunCommand {
    /// Every command, for parsing.
    pub const ALL: [RunCommand; 5] = [
        RunCommand::Apply,
        RunCommand::Serve,
        RunCommand::StateRm,
        RunCommand::StateMigrate,
        RunCommand::StatePruneHistory,
    ];

    /// `apply`, `serve`, `state rm`, `state migrate` or `state prune-history`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunCommand::Apply => "apply",
            RunCommand::Serve => "serve",
            RunCommand::StateRm => "state rm",
            RunCommand::StateMigrate => "state migrate",
            RunCommand::StatePruneHistory => "state prune-history",
        }
    }

    /// The command spelled `s`, if any.
    pub fn parse(s: &str) -> Option<RunCommand> {
        RunCommand::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// Where a run ran and who ran it: plain data the binary gathers (it alone reads the
/// environment), for the audit trail.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunOrigin {
    /// The git commit timctl was built from, when known.
    pub commit: Option<String>,
    /// The host's name.
    pub host: Option<String>,
    /// The operating system user.
    pub os_user: Option<String>,
    /// The CI job's URL (see [`RunOrigin::ci_job_url`]).
    pub ci_job_url: Option<String>,
}

impl RunOrigin {
    /// The CI job's URL from the CI's environment, read through `var` (a variable set but
    /// empty counts as unset): GitHub Actions (`GITHUB_ACTIONS=true`):
    /// `$GITHUB_SERVER_URL/$GITHUB_REPOSITORY/actions/runs/$GITHUB_RUN_ID`; GitLab CI
    /// (`GITLAB_CI=true`): `$CI_JOB_URL`. `None` elsewhere, or when a variable is missing.
    pub fn ci_job_url(var: impl Fn(&str) -> Option<String>) -> Option<String> {
        let get = |name: &str| var(name).filter(|v| !v.is_empty());
        if get("GITHUB_ACTIONS").as_deref() == Some("true") {
            let server = get("GITHUB_SERVER_URL")?;
            let repository = get("GITHUB_REPOSITORY")?;
            let run = get("GITHUB_RUN_ID")?;
            return Some(format!(
                "{}/{repository}/actions/runs/{run}",
                server.trim_end_matches('/')
            ));
        }
        if get("GITLAB_CI").as_deref() == Some("true") {
            return get("CI_JOB_URL");
        }
        None
    }
}

/// A run of the audit trail: which command, which timctl, where and by whom, when, and what
/// it counted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunInfo {
    /// A fresh UUID per run.
    pub run_id: uuid::Uuid,
    /// Which command.
    pub command: RunCommand,
    /// `env!("CARGO_PKG_VERSION")` of the binary.
    pub timctl_version: String,
    /// The digest of the manifests (or the saved plan's) the run carried out; empty for a
    /// command that reads no manifest.
    pub manifest_digest: String,
    /// Where and by whom.
    pub origin: RunOrigin,
    /// When the run started.
    pub started_at: jiff::Timestamp,
    /// When it ended; `None` while it runs, or when it was killed.
    pub ended_at: Option<jiff::Timestamp>,
    /// What it did, by name (`deleted`, `recorded`, `forgotten`, `failed`, `removed`, …);
    /// `None` until it ended.
    pub counts: Option<std::collections::BTreeMap<String, u64>>,
}

impl RunInfo {
    /// A new `apply` run of this timctl version for this manifest digest, starting now, with no
    /// origin (see [`RunInfo::start`]).
    pub fn new(manifest_digest: impl Into<String>) -> Self {
        Self::start(RunCommand::Apply, manifest_digest, RunOrigin::default())
    }

    /// A new run of `command` of this timctl version, starting now.
    pub fn start(
        command: RunCommand,
        manifest_digest: impl Into<String>,
        origin: RunOrigin,
    ) -> Self {
        Self {
            run_id: uuid::Uuid::new_v4(),
            command,
            timctl_version: env!("CARGO_PKG_VERSION").to_owned(),
            manifest_digest: manifest_digest.into(),
            origin,
            started_at: jiff::Timestamp::now(),
            ended_at: None,
            counts: None,
        }
    }

    /// Marks the run ended now with `counts`.
    pub fn end(&mut self, counts: impl IntoIterator<Item = (&'static str, u64)>) {
        self.ended_at = Some(jiff::Timestamp::now());
        self.counts = Some(counts.into_iter().map(|(k, v)| (k.to_owned(), v)).collect());
    }

    /// The counts as stored: a JSON object, or `None`.
    pub(crate) fn counts_json(&self) -> Option<String> {
        self.counts
            .as_ref()
            .map(|c| serde_json::to_string(c).unwrap_or_else(|_| "{}".to_owned()))
    }

    /// Reads stored counts; anything but a JSON object of counts reads as none.
    pub(crate) fn counts_from_json(
        text: Option<&str>,
    ) -> Option<std::collections::BTreeMap<String, u64>> {
        text.and_then(|t| serde_json::from_str(t).ok())
    }
}

/// The result of a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Written {
    /// The state after the write (the serial is bumped when anything changed).
    pub state: StateRef,
    /// How many entries were inserted, updated or removed.
    pub affected: usize,
}

/// Everything a ledger holds, read at one instant.
///
/// The meta, the runs and the entries come from one read transaction, so a writer committing
/// meanwhile is either wholly in it or wholly absent: the serial always describes exactly these
/// entries, and every entry's run is among `runs`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// Lineage, serial and app at that instant.
    pub meta: Meta,
    /// The runs of the audit trail, oldest first.
    pub runs: Vec<RunInfo>,
    /// Every entry, sorted by (`from`, `peer`) in the same order as
    /// [`crate::desired::DesiredEntry`].
    pub entries: Vec<StateEntry>,
}

/// Read access to a ledger. Needs no lock and no credentials.
pub trait Ledger {
    /// Where the ledger is, for messages.
    fn location(&self) -> String;
    /// The ledger's meta as it was when it was opened (a writer's stays current, since it
    /// holds the lock), or `None` when there was no state yet. To read the meta together with
    /// the entries, use [`Ledger::snapshot`].
    fn meta(&self) -> Option<&Meta>;
    /// The meta, the runs and the entries read in one transaction; `None` when there is no
    /// state. Every read of the entries goes through here, so that no caller can pair a serial
    /// with entries of another one.
    fn snapshot(&self) -> Result<Option<Snapshot>, LedgerError>;

    /// Every entry of a [`Ledger::snapshot`], sorted by [`ConversationKey`] (the order of
    /// [`crate::desired::DesiredState::entries`]); empty when there is no state.
    fn entries(&self) -> Result<Vec<StateEntry>, LedgerError> {
        Ok(self.snapshot()?.map(|s| s.entries).unwrap_or_default())
    }
    /// The runs of a [`Ledger::snapshot`], oldest first; empty when there is no state.
    fn runs(&self) -> Result<Vec<RunInfo>, LedgerError> {
        Ok(self.snapshot()?.map(|s| s.runs).unwrap_or_default())
    }

    /// Lineage and serial, or `None` when there is no state yet.
    fn state_ref(&self) -> Option<StateRef> {
        self.meta().map(|m| m.state)
    }

    /// Refuses a manifest of another app than the one this ledger is bound to.
    fn check_app(&self, sdkappid: u64) -> Result<(), LedgerError> {
        check_app(self.meta(), &self.location(), sdkappid)
    }
}

/// Refuses a manifest of another app than the one `meta` is bound to (no meta: no state yet,
/// bound to nothing).
pub fn check_app(meta: Option<&Meta>, location: &str, sdkappid: u64) -> Result<(), LedgerError> {
    match meta {
        Some(meta) if meta.sdkappid != sdkappid => Err(LedgerError::OtherApp {
            location: location.to_owned(),
            bound: meta.sdkappid,
            requested: sdkappid,
        }),
        _ => Ok(()),
    }
}

/// Write access to a ledger; holding one means holding the exclusive lock.
///
/// Each call is one transaction: it commits entirely (and bumps the serial once, when the
/// entries changed) or not at all, with the history events describing it. A process killed at
/// any moment leaves every committed batch in place.
pub trait LedgerWriter: Ledger {
    /// Writes `run`'s row of the audit trail now, in a transaction of its own, so that a state
    /// that cannot be written (full disk, read-only) is found before anything is called. The
    /// serial stays: the entries did not change. Writing the same run again writes nothing.
    /// Later [`LedgerWriter::forget`]s are attributed to this run.
    fn begin_run(&mut self, run: &RunInfo) -> Result<(), LedgerError>;
    /// Writes `run`'s end and counts ([`RunInfo::end`]) into its row.
    fn end_run(&mut self, run: &RunInfo) -> Result<(), LedgerError>;
    /// Records conversations with `origin`, attributed to `run`, each with the history event
    /// `reason(key)` says (action `deleted` for [`Origin::Deleted`], `recorded` for
    /// [`Origin::Absent`]; at the batch item's `deleted_at`). An entry is inserted, or
    /// replaced when it says something else (its `clear_roaming` or origin); one the state
    /// already records the same way is left as it was, and only the event is appended. The
    /// serial is bumped only when an entry changed. An empty batch writes nothing.
    fn record(
        &mut self,
        run: &RunInfo,
        origin: Origin,
        batch: &[Deleted],
        reason: &dyn Fn(&ConversationKey) -> history::EventReason,
    ) -> Result<Written, LedgerError>;
    /// Drops entries from the state (no call is made), each with an event of `action` and
    /// `reason`, attributed to the run last begun or recorded (an error when there is none).
    /// Entries not in the state are skipped; `affected` says how many were there. An empty
    /// batch, or one that removes nothing, writes nothing.
    fn remove(
        &mut self,
        action: history::EventAction,
        reason: history::EventReason,
        batch: &[ConversationKey],
    ) -> Result<Written, LedgerError>;

    /// Records confirmed deletions (reason `new`; apply passes the plan's reasons through
    /// [`LedgerWriter::record`]).
    fn record_deleted(&mut self, run: &RunInfo, batch: &[Deleted]) -> Result<Written, LedgerError> {
        self.record(run, Origin::Deleted, batch, &|_| {
            history::EventReason::Plan(crate::plan::Reason::New)
        })
    }
    /// Records conversations with `origin` (confirmed deletions, or absences a refresh saw),
    /// each with its own reason and, for serve's enforcement, the
    /// callback that triggered it and the latency from its arrival (history's `trigger` and
    /// `latency_ms`). A backend that cannot store the details records the deletions with their
    /// reasons only; SQLite stores them, in the same transaction.
    fn record_detailed(
        &mut self,
        run: &RunInfo,
        origin: Origin,
        batch: &[DetailedDeletion],
    ) -> Result<Written, LedgerError> {
        let reasons: std::collections::HashMap<&ConversationKey, history::EventReason> =
            batch.iter().map(|d| (&d.deleted.key, d.reason)).collect();
        let deleted: Vec<Deleted> = batch.iter().map(|d| d.deleted.clone()).collect();
        self.record(run, origin, &deleted, &|k| {
            reasons
                .get(k)
                .copied()
                .unwrap_or(history::EventReason::Enforced)
        })
    }
    /// Records conversations a refresh saw absent from their user's list (no call was made):
    /// origin [`Origin::Absent`], reason `absent`; `deleted_at` is when the absence was
    /// observed.
    fn record_absent(&mut self, run: &RunInfo, batch: &[Deleted]) -> Result<Written, LedgerError> {
        self.record(run, Origin::Absent, batch, &|_| {
            history::EventReason::Plan(crate::plan::Reason::Absent)
        })
    }
    /// Forgets entries no longer in the manifest (action `forgotten`, reason
    /// `not_in_manifest`), as [`LedgerWriter::remove`] says.
    fn forget(&mut self, batch: &[ConversationKey]) -> Result<Written, LedgerError> {
        self.remove(
            history::EventAction::Forgotten,
            history::EventReason::Plan(crate::plan::Reason::NotInManifest),
            batch,
        )
    }
}

/// Why the ledger could not be read or written.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum LedgerError {
    /// An I/O error on the ledger's file or directory.
    #[error("cannot {doing} {path}")]
    #[diagnostic(code(timctl::state::io))]
    Io {
        /// What timctl was doing.
        doing: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The state's directory or file is refused (a link, a special file, a directory another
    /// user could change).
    #[error(transparent)]
    #[diagnostic(transparent)]
    Path(#[from] StatePathError),
    /// SQLite failed.
    #[error("the state database {path} failed while {doing}")]
    #[diagnostic(code(timctl::state::sqlite))]
    Sqlite {
        /// What timctl was doing.
        doing: &'static str,
        /// The database.
        path: PathBuf,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
    /// The file exists and is not a timctl ledger.
    #[error("{path} is not a timctl state database ({why})")]
    #[diagnostic(
        code(timctl::state::not_a_ledger),
        help(
            "point --state (TIMCTL_STATE) at a timctl state file, or at a path that does not exist yet"
        )
    )]
    NotALedger {
        /// The file.
        path: PathBuf,
        /// What gave it away.
        why: String,
    },
    /// The ledger was written by a newer timctl.
    #[error(
        "the state database {path} has schema version {found}; this timctl ({version}) knows up to {supported}"
    )]
    #[diagnostic(
        code(timctl::state::newer_format),
        help("upgrade timctl; the state was written by a newer version and is left untouched")
    )]
    NewerFormat {
        /// The file.
        path: PathBuf,
        /// Its schema version.
        found: u32,
        /// The newest this timctl knows.
        supported: u32,
        /// This timctl's version.
        version: &'static str,
    },
    /// The ledger belongs to another app.
    #[error("the state {location} belongs to SDKAppID {bound}, not {requested}")]
    #[diagnostic(
        code(timctl::state::other_app),
        help(
            "each app needs its own state: pass --state (TIMCTL_STATE) with another path for this manifest"
        )
    )]
    OtherApp {
        /// The ledger.
        location: String,
        /// The app it is bound to.
        bound: u64,
        /// The app that was asked for.
        requested: u64,
    },
    /// The stored data breaks an invariant (edited by hand, or corrupted).
    #[error("the state database {path} holds invalid data: {what}")]
    #[diagnostic(code(timctl::state::corrupt))]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// The PostgreSQL backend failed (see [`postgres::PgError`]).
    #[error(transparent)]
    #[diagnostic(transparent)]
    Postgres(#[from] PgError),
    /// The state's lock file could not be taken.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Lock(#[from] LockError),
    /// The state location or name was refused.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Location(#[from] LocationError),
    /// A forget or removal came before any run was begun on this writer.
    #[error("the state {location} was asked to remove entries outside of any run")]
    #[diagnostic(code(timctl::state::no_run))]
    NoRun {
        /// The state.
        location: String,
    },
    /// A writer was asked to open a ledger with a lock taken for another path.
    #[error("the lock held is for {locked}, not for the state {path}")]
    #[diagnostic(code(timctl::state::wrong_lock))]
    WrongLock {
        /// The state.
        path: PathBuf,
        /// The state the lock is for.
        locked: PathBuf,
    },
}

/// The `format_version` of `state list --json`: fields may be added without a change.
pub const LIST_FORMAT_VERSION: u32 = 1;

/// Writes the `state list --json` document (README.md, "State and plans"):
/// `{"format_version", "lineage", "serial", "sdkappid", "entries": [{"from", "type", "peer", "clear_roaming",
/// "deleted_at", "origin"}…]}`; with no state, `null` meta fields and no entries.
pub fn write_list_json(
    meta: Option<&Meta>,
    entries: &[StateEntry],
    out: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    use serde::ser::{SerializeStruct, Serializer};

    struct Entries<'a>(&'a [StateEntry]);
    impl serde::Serialize for Entries<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq(self.0.iter().map(Entry))
        }
    }
    struct Entry<'a>(&'a StateEntry);
    impl serde::Serialize for Entry<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let e = self.0;
            let mut st = s.serialize_struct("Entry", 6)?;
            st.serialize_field("from", e.key.from.as_str())?;
            st.serialize_field("type", e.key.peer.kind().as_str())?;
            st.serialize_field("peer", e.key.peer.id())?;
            st.serialize_field("clear_roaming", &e.clear_roaming)?;
            st.serialize_field("deleted_at", &e.deleted_at)?;
            st.serialize_field("origin", e.origin.as_str())?;
            st.end()
        }
    }
    struct Doc<'a>(Option<&'a Meta>, &'a [StateEntry]);
    impl serde::Serialize for Doc<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut st = s.serialize_struct("State", 5)?;
            st.serialize_field("format_version", &LIST_FORMAT_VERSION)?;
            st.serialize_field("lineage", &self.0.map(|m| m.state.lineage))?;
            st.serialize_field("serial", &self.0.map(|m| m.state.serial))?;
            st.serialize_field("sdkappid", &self.0.map(|m| m.sdkappid))?;
            st.serialize_field("entries", &Entries(self.1))?;
            st.end()
        }
    }
    serde_json::to_writer(&mut *out, &Doc(meta, entries)).map_err(std::io::Error::from)?;
    out.write_all(b"\n")
}
