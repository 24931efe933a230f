//! One ledger conformance suite, run against both backends: SQLite on a temporary file and
//! PostgreSQL on a throwaway cluster (one per test binary, a fresh database per test).
//!
//! Each case is a function of a [`Backend`]; `conformance!` makes a test of it per backend.
//! Where the backends differ by design (a PostgreSQL database keeps several apps and named
//! states apart; an SQLite file is bound to one app and named by its path), the case says so.

use std::time::Duration;

use timctl_core::ids::{ConversationKey, UserId};
use timctl_core::ledger::history::{Event, EventReason, HistoryQuery};
use timctl_core::ledger::{
    self, AnyLedger, AnyWriter, Deleted, DetailedDeletion, Ledger, LedgerError, LedgerWriter,
    LocatedStore, LocationError, Origin, PgError, RunCommand, RunInfo, RunOrigin, StateLocation,
    StateName, migrate,
};
use timctl_core::plan::Reason;
use timctl_tests::pg::PgCluster;

const APP: u64 = 1_400_000_001;
const OTHER_APP: u64 = 1_400_000_002;

/// Where a case's state lives.
enum Backend {
    Sqlite(tempfile::TempDir),
    Postgres { db: String },
}

impl Backend {
    fn sqlite() -> Self {
        Self::Sqlite(tempfile::tempdir().unwrap())
    }

    fn postgres() -> Self {
        // The harness's role password reaches the ledger through the URL here; the
        // end-to-end tests use PGPASSWORD.
        Self::Postgres {
            db: PgCluster::shared().database(),
        }
    }

    fn location(&self) -> StateLocation {
        match self {
            Self::Sqlite(dir) => StateLocation::Sqlite(dir.path().join(".timctl/state.db")),
            Self::Postgres { db } => {
                StateLocation::parse(PgCluster::shared().url_with_password(db).as_ref()).unwrap()
            }
        }
    }

    /// The schema version this timctl writes: both backends' second added the entries'
    /// origin; PostgreSQL's third dropped the entries' foreign keys; the next (SQLite's third,
    /// PostgreSQL's fourth) added the history.
    fn current_schema(&self) -> u32 {
        match self {
            Self::Sqlite(_) => 3,
            Self::Postgres { .. } => 5,
        }
    }

    /// The schema version just before the history's, that of the frozen fixtures.
    fn before_history(&self) -> u32 {
        match self {
            Self::Sqlite(_) => 2,
            Self::Postgres { .. } => 3,
        }
    }

    fn store(&self) -> LocatedStore {
        LocatedStore::new(self.location(), StateName::default()).unwrap()
    }

    fn is_postgres(&self) -> bool {
        matches!(self, Self::Postgres { .. })
    }

    fn writer_named(&self, app: u64, name: &str) -> Result<AnyWriter, LedgerError> {
        LocatedStore::new(self.location(), StateName::new(name).unwrap())?.create_or_open_writer(
            app,
            "test",
            Duration::ZERO,
        )
    }

    fn writer(&self, app: u64) -> Result<AnyWriter, LedgerError> {
        self.writer_named(app, "default")
    }

    fn reader(&self, app: Option<u64>) -> Result<AnyLedger, LedgerError> {
        ledger::open_read(&self.location(), &StateName::default(), app)
    }

    /// Sets the stored schema version, as a newer timctl would have.
    fn set_schema_version(&self, version: u32) {
        match self {
            Self::Sqlite(dir) => {
                let conn = rusqlite::Connection::open(dir.path().join(".timctl/state.db")).unwrap();
                conn.pragma_update(None, "user_version", version).unwrap();
            }
            Self::Postgres { db } => {
                PgCluster::shared()
                    .admin_on(db)
                    .execute(
                        "UPDATE timctl.schema_version SET version = $1",
                        &[&(version as i32)],
                    )
                    .unwrap();
            }
        }
    }

    /// Leaves a store at schema version 0, as an operator may prepare it: an empty SQLite
    /// database, or an empty `timctl` schema.
    fn prepare_version_zero(&self) {
        match self {
            Self::Sqlite(dir) => {
                std::fs::create_dir_all(dir.path().join(".timctl")).unwrap();
                let conn = rusqlite::Connection::open(dir.path().join(".timctl/state.db")).unwrap();
                conn.execute_batch("VACUUM").unwrap();
            }
            Self::Postgres { db } => {
                PgCluster::shared()
                    .admin_on(db)
                    .batch_execute(&format!(
                        "CREATE SCHEMA timctl AUTHORIZATION {}",
                        timctl_tests::pg::ROLE
                    ))
                    .unwrap();
            }
        }
    }
}

fn deleted(from: &str, peer: &str, clear_roaming: bool, at: i64) -> Deleted {
    Deleted {
        key: key(from, peer),
        clear_roaming,
        deleted_at: jiff::Timestamp::from_second(at).unwrap(),
    }
}

fn key(from: &str, peer: &str) -> ConversationKey {
    ConversationKey::new(UserId::new(from).unwrap(), peer.parse().unwrap())
}

fn listing(l: &dyn Ledger) -> Vec<(String, String, bool, i64)> {
    l.entries()
        .unwrap()
        .into_iter()
        .map(|e| {
            (
                e.key.from.to_string(),
                e.key.peer.to_string(),
                e.clear_roaming,
                e.deleted_at.as_second(),
            )
        })
        .collect()
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(#[test] fn $case() { super::$case(super::Backend::sqlite()) })*
        }
        mod postgres {
            $(#[test] fn $case() { super::$case(super::Backend::postgres()) })*
        }
    };
}

conformance!(
    no_state_until_the_first_write,
    create_then_reopen_keeps_lineage,
    record_replaces_and_bumps_the_serial,
    forget_bumps_only_when_something_goes,
    entries_come_back_in_byte_order,
    runs_are_the_audit_trail,
    a_state_never_mixes_two_apps,
    a_newer_schema_is_refused_and_left_alone,
    an_older_schema_is_migrated,
    a_second_writer_is_refused_naming_the_holder,
    named_states_are_kept_apart,
    a_state_is_copied_whole,
    a_redeletion_recorded_the_same_way_changes_history_only,
    history_filters_narrow_and_order_newest_first,
    a_long_history_streams_whole_in_order,
    prune_removes_exactly_the_older_events_and_records_itself,
    runs_keep_their_origin_and_end,
    absences_keep_their_origin,
    a_batch_naming_recorded_entries_is_one_write,
    a_first_batch_naming_one_conversation_twice_keeps_the_last,
    enforced_deletions_keep_their_trigger_and_latency,
);

/// A writer's very first batch naming one conversation twice (the PostgreSQL writer has not
/// switched to upserts yet) keeps the later deletion, as two batches would, in one write.
fn a_first_batch_naming_one_conversation_twice_keeps_the_last(b: Backend) {
    let mut w = b.writer(APP).unwrap();
    let created = w.meta().unwrap().state.serial;
    let written = w
        .record_deleted(
            &RunInfo::new("d"),
            &[
                deleted("a", "user:b", false, 1),
                deleted("a", "user:c", false, 2),
                deleted("a", "user:b", true, 3),
            ],
        )
        .unwrap();
    assert_eq!(written.state.serial, created + 1, "one batch, one write");
    drop(w);
    let expected: Vec<(String, String, bool, i64)> = vec![
        ("a".into(), "user:b".into(), true, 3),
        ("a".into(), "user:c".into(), false, 2),
    ];
    assert_eq!(listing(&b.reader(Some(APP)).unwrap()), expected);
}

/// A batch that mixes new conversations with ones already recorded is written whole, once:
/// the new added, the old replaced, the serial bumped by one; and the batches after it too.
/// (The PostgreSQL writer inserts first and, when a batch names a recorded entry, makes it
/// again as an upsert: nothing of the first attempt may remain.)
fn a_batch_naming_recorded_entries_is_one_write(b: Backend) {
    let mut w = b.writer(APP).unwrap();
    let run = RunInfo::new("d");
    let first = w
        .record_deleted(&run, &[deleted("a", "user:m", false, 1)])
        .unwrap();
    let mixed = w
        .record_deleted(
            &run,
            &[
                deleted("a", "user:b", false, 2),
                deleted("a", "user:c", false, 3),
                deleted("a", "user:m", true, 4),
                deleted("a", "user:z", false, 5),
            ],
        )
        .unwrap();
    assert_eq!(
        mixed.state.serial,
        first.state.serial + 1,
        "one batch, one write"
    );
    assert_eq!(mixed.affected, 4);
    let after = w
        .record_deleted(&run, &[deleted("b", "user:a", false, 6)])
        .unwrap();
    assert_eq!(after.state.serial, mixed.state.serial + 1);
    drop(w);
    let r = b.reader(Some(APP)).unwrap();
    assert_eq!(r.meta().unwrap().state.serial, after.state.serial);
    let expected: Vec<(String, String, bool, i64)> = [
        ("a", "user:b", false, 2),
        ("a", "user:c", false, 3),
        ("a", "user:m", true, 4),
        ("a", "user:z", false, 5),
        ("b", "user:a", false, 6),
    ]
    .into_iter()
    .map(|(f, p, c, t)| (f.to_owned(), p.to_owned(), c, t))
    .collect();
    assert_eq!(listing(&r), expected);
}

fn absences_keep_their_origin(b: Backend) {
    let mut w = b.writer(APP).unwrap();
    let run = RunInfo::new("d");
    w.record_deleted(&run, &[deleted("a", "user:b", false, 1)])
        .unwrap();
    w.record_absent(&run, &[deleted("a", "user:c", true, 2)])
        .unwrap();
    drop(w);
    let origins: Vec<(String, Origin)> = b
        .reader(Some(APP))
        .unwrap()
        .entries()
        .unwrap()
        .into_iter()
        .map(|e| (e.key.peer.to_string(), e.origin))
        .collect();
    assert_eq!(
        origins,
        [
            ("user:b".to_owned(), Origin::Deleted),
            ("user:c".to_owned(), Origin::Absent)
        ]
    );
    // A deletion replaces an observed absence (the conversation came back and was deleted).
    let mut w = b.writer(APP).unwrap();
    w.record_deleted(&RunInfo::new("e"), &[deleted("a", "user:c", true, 3)])
        .unwrap();
    drop(w);
    let entries = b.reader(Some(APP)).unwrap().entries().unwrap();
    assert!(
        entries.iter().all(|e| e.origin == Origin::Deleted),
        "{entries:?}"
    );
}

fn no_state_until_the_first_write(b: Backend) {
    let r = b.reader(Some(APP)).unwrap();
    assert!(r.meta().is_none());
    assert!(r.entries().unwrap().is_empty());
    assert!(r.runs().unwrap().is_empty());
    // Opening to remove entries creates no state.
    let none = LocatedStore::new(b.location(), StateName::default())
        .unwrap()
        .open_existing_writer(APP, "test", Duration::ZERO)
        .unwrap();
    assert!(none.is_none());
    assert!(b.reader(Some(APP)).unwrap().meta().is_none());
}

fn create_then_reopen_keeps_lineage(b: Backend) {
    let w = b.writer(APP).unwrap();
    let meta = w.meta().unwrap().clone();
    assert_eq!(meta.sdkappid, APP);
    assert_eq!(meta.state.serial, 1, "creation is the first write");
    assert_eq!(meta.schema_version, b.current_schema());
    assert_eq!(meta.created_by, env!("CARGO_PKG_VERSION"));
    drop(w);
    let again = b.writer(APP).unwrap();
    assert_eq!(
        again.meta().unwrap().state,
        meta.state,
        "reopening writes nothing"
    );
    drop(again);
    let r = b.reader(Some(APP)).unwrap();
    assert_eq!(r.meta().unwrap(), &meta);
}

fn record_replaces_and_bumps_the_serial(b: Backend) {
    let mut w = b.writer(APP).unwrap();
    let lineage = w.meta().unwrap().state.lineage;
    let run = RunInfo::new("digest-1");
    let written = w
        .record_deleted(
            &run,
            &[
                deleted("alice", "user:bob", false, 1_700_000_000),
                deleted("alice", "group:g1", false, 1_700_000_001),
            ],
        )
        .unwrap();
    assert_eq!((written.state.serial, written.affected), (2, 2));
    let written = w
        .record_deleted(&run, &[deleted("alice", "user:bob", true, 1_700_000_100)])
        .unwrap();
    assert_eq!(written.state.serial, 3);
    assert_eq!(written.state.lineage, lineage);
    let empty = w.record_deleted(&run, &[]).unwrap();
    assert_eq!(
        (empty.state.serial, empty.affected),
        (3, 0),
        "an empty batch is no write"
    );
    let expected = vec![
        ("alice".into(), "user:bob".into(), true, 1_700_000_100),
        ("alice".into(), "group:g1".into(), false, 1_700_000_001),
    ];
    assert_eq!(listing(&w), expected);
    drop(w);
    let r = b.reader(Some(APP)).unwrap();
    assert_eq!(listing(&r), expected);
    assert_eq!(r.state_ref().unwrap().serial, 3);
    assert_eq!(r.state_ref().unwrap().lineage, lineage);
}

fn forget_bumps_only_when_something_goes(b: Backend) {
    let mut w = b.writer(APP).unwrap();
    let run = RunInfo::new("d");
    w.record_deleted(
        &run,
        &[
            deleted("a", "user:b", false, 1),
            deleted("a", "user:c", false, 1),
        ],
    )
    .unwrap();
    let serial = w.meta().unwrap().state.serial;
    let none = w.forget(&[key("a", "user:zz")]).unwrap();
    assert_eq!((none.affected, none.state.serial), (0, serial));
    let empty = w.forget(&[]).unwrap();
    assert_eq!((empty.affected, empty.state.serial), (0, serial));
    let one = w
        .forget(&[key("a", "user:b"), key("a", "user:zz")])
        .unwrap();
    assert_eq!((one.affected, one.state.serial), (1, serial + 1));
    drop(w);
    let r = b.reader(Some(APP)).unwrap();
    assert_eq!(listing(&r), vec![("a".into(), "user:c".into(), false, 1)]);
}

fn entries_come_back_in_byte_order(b: Backend) {
    let mut w = b.writer(APP).unwrap();
    let run = RunInfo::new("d");
    let names = ["zed", "Zed", "a_b", "a-b", "A", "~x", "a", "10", "9", "_"];
    let batch: Vec<Deleted> = names
        .iter()
        .flat_map(|n| {
            [
                deleted(n, "group:g", false, 1),
                deleted(n, "user:u", false, 1),
                deleted(n, "user:U", false, 1),
            ]
        })
        .collect();
    w.record_deleted(&run, &batch).unwrap();
    drop(w);
    let got: Vec<ConversationKey> = b
        .reader(Some(APP))
        .unwrap()
        .entries()
        .unwrap()
        .into_iter()
        .map(|e| e.key)
        .collect();
    let mut sorted = got.clone();
    sorted.sort();
    assert_eq!(got.len(), names.len() * 3);
    assert_eq!(
        got, sorted,
        "entries must come in the manifest's (byte) order"
    );
}

fn runs_are_the_audit_trail(b: Backend) {
    let mut w = b.writer(APP).unwrap();
    let first = RunInfo::new("digest-1");
    let second = RunInfo::new("digest-2");
    w.record_deleted(&first, &[deleted("a", "user:b", false, 1)])
        .unwrap();
    w.record_deleted(&first, &[deleted("a", "user:c", false, 1)])
        .unwrap();
    w.record_deleted(&second, &[deleted("a", "user:b", true, 2)])
        .unwrap();
    drop(w);
    let r = b.reader(Some(APP)).unwrap();
    let runs = r.runs().unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0].run_id, first.run_id);
    assert_eq!(runs[0].manifest_digest, "digest-1");
    assert_eq!(runs[0].started_at.as_second(), first.started_at.as_second());
    assert_eq!(runs[1].run_id, second.run_id);
    let by_entry: Vec<_> = r.entries().unwrap().into_iter().map(|e| e.run_id).collect();
    assert_eq!(by_entry, vec![second.run_id, first.run_id]);
}

fn a_state_never_mixes_two_apps(b: Backend) {
    let mut w = b.writer(APP).unwrap();
    w.record_deleted(&RunInfo::new("d"), &[deleted("a", "user:b", false, 1)])
        .unwrap();
    let lineage = w.meta().unwrap().state.lineage;
    drop(w);
    if b.is_postgres() {
        // One database keeps several apps apart: the other app gets a state of its own.
        let other = b.writer(OTHER_APP).unwrap();
        assert_eq!(other.meta().unwrap().sdkappid, OTHER_APP);
        assert_ne!(other.meta().unwrap().state.lineage, lineage);
        assert!(other.entries().unwrap().is_empty());
        drop(other);
        // Without an app to pick, two apps are an error naming both.
        let err = b.reader(None).unwrap_err();
        assert!(
            matches!(&err, LedgerError::Postgres(PgError::WhichApp { apps, .. }) if apps == &[APP, OTHER_APP]),
            "{err:?}"
        );
    } else {
        // A file is bound to its app.
        let err = b.writer(OTHER_APP).unwrap_err();
        assert!(matches!(err, LedgerError::OtherApp { .. }), "{err:?}");
        let r = b.reader(None).unwrap();
        assert!(matches!(
            r.check_app(OTHER_APP),
            Err(LedgerError::OtherApp { .. })
        ));
    }
    let r = b.reader(Some(APP)).unwrap();
    assert_eq!(r.meta().unwrap().state.lineage, lineage);
    assert_eq!(listing(&r).len(), 1);
}

fn a_newer_schema_is_refused_and_left_alone(b: Backend) {
    let mut w = b.writer(APP).unwrap();
    w.record_deleted(&RunInfo::new("d"), &[deleted("a", "user:b", false, 1)])
        .unwrap();
    drop(w);
    b.set_schema_version(99);
    let newer = |e: &LedgerError| {
        matches!(
            e,
            LedgerError::NewerFormat { found: 99, .. }
                | LedgerError::Postgres(PgError::NewerSchema { found: 99, .. })
        ) && e.to_string().contains("99")
    };
    let err = b.writer(APP).unwrap_err();
    assert!(newer(&err), "{err:?}");
    let err = b.reader(Some(APP)).unwrap_err();
    assert!(newer(&err), "{err:?}");
    // Left untouched: put the version back and everything is there.
    b.set_schema_version(b.current_schema());
    assert_eq!(listing(&b.reader(Some(APP)).unwrap()).len(), 1);
}

fn an_older_schema_is_migrated(b: Backend) {
    b.prepare_version_zero();
    let r = b.reader(Some(APP)).unwrap();
    assert!(r.meta().is_none(), "version 0 holds no state");
    drop(r);
    let mut w = b.writer(APP).unwrap();
    assert_eq!(w.meta().unwrap().schema_version, b.current_schema());
    w.record_deleted(&RunInfo::new("d"), &[deleted("a", "user:b", false, 1)])
        .unwrap();
    drop(w);
    assert_eq!(b.reader(Some(APP)).unwrap().meta().unwrap().state.serial, 2);
}

fn a_second_writer_is_refused_naming_the_holder(b: Backend) {
    let w = b.writer(APP).unwrap();
    let err = b.writer(APP).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("locked"), "{message}");
    assert!(message.contains("test"), "names the operation: {message}");
    assert!(
        message.contains(&format!("pid {}", std::process::id())),
        "names the holder: {message}"
    );
    // Reads need no lock.
    assert!(b.reader(Some(APP)).unwrap().meta().is_some());
    drop(w);
    b.writer(APP).expect("the lock goes with its holder");
}

fn named_states_are_kept_apart(b: Backend) {
    if !b.is_postgres() {
        let err = b.writer_named(APP, "other").unwrap_err();
        assert!(
            matches!(
                err,
                LedgerError::Location(LocationError::NamedSqliteState { .. })
            ),
            "{err:?}"
        );
        return;
    }
    let mut a = b.writer_named(APP, "repo-a").unwrap();
    let mut other = b
        .writer_named(APP, "repo-b")
        .expect("another name, another lock");
    a.record_deleted(&RunInfo::new("a"), &[deleted("a", "user:b", false, 1)])
        .unwrap();
    other
        .record_deleted(&RunInfo::new("b"), &[deleted("x", "user:y", false, 1)])
        .unwrap();
    assert_ne!(
        a.meta().unwrap().state.lineage,
        other.meta().unwrap().state.lineage
    );
    drop((a, other));
    let read =
        |name| ledger::open_read(&b.location(), &StateName::new(name).unwrap(), Some(APP)).unwrap();
    assert_eq!(listing(&read("repo-a"))[0].0, "a");
    assert_eq!(listing(&read("repo-b"))[0].0, "x");
    assert!(read("default").meta().is_none());
}

fn a_state_is_copied_whole(b: Backend) {
    // Copy from the other backend into this one.
    let source = if b.is_postgres() {
        Backend::sqlite()
    } else {
        Backend::postgres()
    };
    let mut w = source.writer(APP).unwrap();
    let run = RunInfo::new("d");
    w.record_deleted(
        &run,
        &[
            deleted("a", "user:b", true, 5),
            deleted("c", "group:d", false, 6),
        ],
    )
    .unwrap();
    w.record_absent(&run, &[deleted("e", "user:f", false, 7)])
        .unwrap();
    // A re-deletion: history only.
    w.record_deleted(&run, &[deleted("a", "user:b", true, 8)])
        .unwrap();
    w.forget(&[key("c", "group:d")]).unwrap();
    let meta = w.meta().unwrap().clone();
    let (runs, entries) = (w.runs().unwrap(), w.entries().unwrap());
    drop(w);
    let events = all_events(&source.reader(Some(APP)).unwrap());
    assert_eq!(events.len(), 5);
    let migrate_run = RunInfo::start(RunCommand::StateMigrate, "", RunOrigin::default());
    let copied = migrate::migrate(
        &source.store(),
        &b.store(),
        APP,
        Duration::ZERO,
        migrate_run.clone(),
    )
    .unwrap();
    assert_eq!((copied.entries, copied.runs, copied.events), (2, 1, 5));
    let r = b.reader(Some(APP)).unwrap();
    assert_eq!(r.meta().unwrap().state, meta.state);
    assert_eq!(r.meta().unwrap().created_at, meta.created_at);
    let copied_runs = r.runs().unwrap();
    assert_eq!(
        copied_runs[..1],
        runs[..],
        "the source's runs, then the migrate's"
    );
    assert_eq!(copied_runs[1].run_id, migrate_run.run_id);
    assert_eq!(copied_runs[1].command, RunCommand::StateMigrate);
    assert_eq!(
        copied_runs[1].counts.as_ref().unwrap()["events"],
        5,
        "the migrate's run counts what it copied"
    );
    assert_eq!(r.entries().unwrap(), entries);
    assert_eq!(all_events(&r), events, "the history, in its order");
    // Again: the destination holds it now, and nothing more is written.
    let again = migrate::migrate(
        &source.store(),
        &b.store(),
        APP,
        Duration::ZERO,
        RunInfo::start(RunCommand::StateMigrate, "", RunOrigin::default()),
    );
    assert!(
        matches!(again, Err(migrate::MigrateError::DestinationHolds { .. })),
        "{again:?}"
    );
    assert_eq!(b.reader(Some(APP)).unwrap().runs().unwrap().len(), 2);
}

/// Every event of `ledger`, newest first.
fn all_events(ledger: &AnyLedger) -> Vec<Event> {
    events_where(ledger, &HistoryQuery::default())
}

/// The events `query` selects, newest first.
fn events_where(ledger: &AnyLedger, query: &HistoryQuery) -> Vec<Event> {
    let mut events = Vec::new();
    ledger
        .history(query, &mut |e| {
            events.push(e.clone());
            Ok(())
        })
        .unwrap();
    events
}

/// (action, reason, from, peer) of each event, oldest first.
fn story(ledger: &AnyLedger, query: &HistoryQuery) -> Vec<(String, String, String, String)> {
    let mut events = events_where(ledger, query);
    events.reverse();
    events
        .iter()
        .map(|e| {
            (
                e.action.as_str().to_owned(),
                e.reason.as_str().to_owned(),
                e.key.from.to_string(),
                e.key.peer.to_string(),
            )
        })
        .collect()
}

fn s4(a: &str, r: &str, f: &str, p: &str) -> (String, String, String, String) {
    (a.into(), r.into(), f.into(), p.into())
}

/// The serial counts changes to the entries: a conversation deleted again the same way (it
/// came back) appends history and leaves the entry and the serial as they were, so a saved
/// plan stays valid; clear_roaming false → true, origin absent → deleted, a new entry and a
/// forget still change them. On PostgreSQL the re-deletion comes in a batch after the first
/// insert, the one that meets the unique violation and turns into the upsert.
fn a_redeletion_recorded_the_same_way_changes_history_only(b: Backend) {
    let mut w = b.writer(APP).unwrap();
    let run = RunInfo::new("d");
    let first = w
        .record_deleted(
            &run,
            &[
                deleted("a", "user:b", false, 10),
                deleted("a", "user:c", false, 10),
            ],
        )
        .unwrap();
    assert_eq!(first.affected, 2);
    let entries = w.entries().unwrap();
    let again = w
        .record(
            &run,
            Origin::Deleted,
            &[deleted("a", "user:b", false, 20)],
            &|_| EventReason::Plan(Reason::CameBack),
        )
        .unwrap();
    assert_eq!(again.affected, 0);
    assert_eq!(again.state, first.state, "the serial did not move");
    assert_eq!(
        w.entries().unwrap(),
        entries,
        "the entries are as they were"
    );
    // Twice more in one batch with an entry that did change: that one bumps.
    let changed = w
        .record(
            &run,
            Origin::Deleted,
            &[
                deleted("a", "user:b", false, 30),
                deleted("a", "user:c", true, 30),
            ],
            &|k| {
                EventReason::Plan(if k.peer.to_string() == "user:c" {
                    Reason::ClearRoaming
                } else {
                    Reason::CameBack
                })
            },
        )
        .unwrap();
    assert_eq!(changed.affected, 1);
    assert_eq!(changed.state.serial, first.state.serial + 1);
    // Absent, then deleted: the origin changes.
    w.record_absent(&run, &[deleted("a", "user:d", false, 40)])
        .unwrap();
    let before = w.state_ref().unwrap().serial;
    let origin_changed = w
        .record_deleted(&run, &[deleted("a", "user:d", false, 50)])
        .unwrap();
    assert_eq!(origin_changed.state.serial, before + 1);
    w.forget(&[key("a", "user:c")]).unwrap();
    drop(w);
    let r = b.reader(Some(APP)).unwrap();
    assert_eq!(
        story(&r, &HistoryQuery::default()),
        [
            s4("deleted", "new", "a", "user:b"),
            s4("deleted", "new", "a", "user:c"),
            s4("deleted", "came_back", "a", "user:b"),
            s4("deleted", "came_back", "a", "user:b"),
            s4("deleted", "clear_roaming", "a", "user:c"),
            s4("recorded", "absent", "a", "user:d"),
            s4("deleted", "new", "a", "user:d"),
            s4("forgotten", "not_in_manifest", "a", "user:c"),
        ]
    );
    let b_entry = r
        .entries()
        .unwrap()
        .into_iter()
        .find(|e| e.key == key("a", "user:b"))
        .unwrap();
    assert_eq!(
        b_entry.deleted_at.as_second(),
        10,
        "the entry keeps its first deletion; the history has the others"
    );
    let forgotten = &all_events(&r)[0];
    assert!(forgotten.clear_roaming, "a forget says what the entry said");
    assert_eq!(forgotten.run_id, run.run_id);
}

/// The filters narrow as documented, newest first, with the limit; events carry their run
/// and the millisecond of the change.
fn history_filters_narrow_and_order_newest_first(b: Backend) {
    let mut w = b.writer(APP).unwrap();
    let first = RunInfo::new("d1");
    let second = RunInfo::new("d2");
    let at = |ms: i64| jiff::Timestamp::from_millisecond(ms).unwrap();
    let d = |from: &str, peer: &str, ms: i64| Deleted {
        key: key(from, peer),
        clear_roaming: false,
        deleted_at: at(ms),
    };
    w.record_deleted(
        &first,
        &[
            d("alice", "user:bob", 1_000),
            d("alice", "group:@TGS#g", 2_000),
        ],
    )
    .unwrap();
    w.record_deleted(&first, &[d("carol", "user:bob", 3_000)])
        .unwrap();
    w.record(
        &second,
        Origin::Deleted,
        &[d("alice", "user:bob", 4_500)],
        &|_| EventReason::Plan(Reason::CameBack),
    )
    .unwrap();
    drop(w);
    let r = b.reader(Some(APP)).unwrap();
    let keys = |q: HistoryQuery| -> Vec<(String, i64)> {
        events_where(&r, &q)
            .iter()
            .map(|e| {
                (
                    format!("{} {}", e.key.from, e.key.peer),
                    e.at.as_millisecond(),
                )
            })
            .collect()
    };
    let k = |s: &str, ms: i64| (s.to_owned(), ms);
    assert_eq!(
        keys(HistoryQuery::default()),
        [
            k("alice user:bob", 4_500),
            k("carol user:bob", 3_000),
            k("alice group:@TGS#g", 2_000),
            k("alice user:bob", 1_000)
        ]
    );
    assert_eq!(
        keys(HistoryQuery {
            user: Some(UserId::new("alice").unwrap()),
            ..Default::default()
        }),
        [
            k("alice user:bob", 4_500),
            k("alice group:@TGS#g", 2_000),
            k("alice user:bob", 1_000)
        ]
    );
    assert_eq!(
        keys(HistoryQuery {
            peer: Some("user:bob".parse().unwrap()),
            ..Default::default()
        }),
        [
            k("alice user:bob", 4_500),
            k("carol user:bob", 3_000),
            k("alice user:bob", 1_000)
        ]
    );
    assert_eq!(
        keys(HistoryQuery {
            user: Some(UserId::new("alice").unwrap()),
            peer: Some("user:bob".parse().unwrap()),
            since: Some(at(1_500)),
            ..Default::default()
        }),
        [k("alice user:bob", 4_500)]
    );
    assert_eq!(
        keys(HistoryQuery {
            since: Some(at(2_000)),
            until: Some(at(4_500)),
            ..Default::default()
        }),
        [k("carol user:bob", 3_000), k("alice group:@TGS#g", 2_000)],
        "since is inclusive, until exclusive"
    );
    assert_eq!(
        keys(HistoryQuery {
            run: Some(second.run_id),
            ..Default::default()
        }),
        [k("alice user:bob", 4_500)]
    );
    assert_eq!(
        keys(HistoryQuery {
            run: Some(uuid::Uuid::new_v4()),
            ..Default::default()
        }),
        []
    );
    assert_eq!(
        keys(HistoryQuery {
            limit: Some(2),
            ..Default::default()
        }),
        [k("alice user:bob", 4_500), k("carol user:bob", 3_000)]
    );
    let mut runs = Vec::new();
    r.runs_newest_first(None, &mut |run| {
        runs.push(run.run_id);
        Ok(())
    })
    .unwrap();
    assert_eq!(runs, [second.run_id, first.run_id]);
}

/// A history longer than a page streams whole and in order (the SQLite reader pages).
fn a_long_history_streams_whole_in_order(b: Backend) {
    let mut w = b.writer(APP).unwrap();
    let run = RunInfo::new("d");
    let batch: Vec<Deleted> = (0..2_500)
        .map(|i| Deleted {
            key: key(&format!("u{i:05}"), "user:p"),
            clear_roaming: false,
            // Ties in time are ordered by insertion.
            deleted_at: jiff::Timestamp::from_millisecond(1_000 + (i / 3) as i64).unwrap(),
        })
        .collect();
    w.record_deleted(&run, &batch).unwrap();
    drop(w);
    let r = b.reader(Some(APP)).unwrap();
    let mut events = all_events(&r);
    assert_eq!(events.len(), 2_500);
    events.reverse();
    let froms: Vec<String> = events.iter().map(|e| e.key.from.to_string()).collect();
    let expected: Vec<String> = (0..2_500).map(|i| format!("u{i:05}")).collect();
    assert_eq!(froms, expected);
    let limited = events_where(
        &r,
        &HistoryQuery {
            limit: Some(1_234),
            ..Default::default()
        },
    );
    assert_eq!(limited.len(), 1_234);
}

/// `state prune-history` removes exactly the events before the cutoff, in one transaction
/// that records its own run, without the writer lock (a writer holds it meanwhile).
fn prune_removes_exactly_the_older_events_and_records_itself(b: Backend) {
    let mut w = b.writer(APP).unwrap();
    let run = RunInfo::new("d");
    let at = |ms: i64| jiff::Timestamp::from_millisecond(ms).unwrap();
    for (i, ms) in [1_000, 2_000, 3_000].into_iter().enumerate() {
        w.record_deleted(
            &run,
            &[Deleted {
                key: key("a", &format!("user:p{i}")),
                clear_roaming: false,
                deleted_at: at(ms),
            }],
        )
        .unwrap();
    }
    let serial = w.state_ref().unwrap().serial;
    let name = StateName::default();
    let mut dry = RunInfo::start(RunCommand::StatePruneHistory, "", RunOrigin::default());
    let counted =
        ledger::prune_history(&b.location(), &name, Some(APP), at(3_000), true, &mut dry).unwrap();
    assert_eq!(counted, Some(2));
    assert_eq!(
        all_events(&b.reader(Some(APP)).unwrap()).len(),
        3,
        "a dry run"
    );
    // With the writer still holding the lock.
    let mut prune = RunInfo::start(RunCommand::StatePruneHistory, "", RunOrigin::default());
    let pruned = ledger::prune_history(
        &b.location(),
        &name,
        Some(APP),
        at(3_000),
        false,
        &mut prune,
    )
    .unwrap();
    assert_eq!(pruned, Some(2));
    drop(w);
    let r = b.reader(Some(APP)).unwrap();
    let left = all_events(&r);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].at, at(3_000));
    assert_eq!(r.meta().unwrap().state.serial, serial, "entries untouched");
    assert_eq!(r.entries().unwrap().len(), 3);
    let runs = r.runs().unwrap();
    let last = runs.last().unwrap();
    assert_eq!(last.run_id, prune.run_id);
    assert_eq!(last.command, RunCommand::StatePruneHistory);
    assert_eq!(last.counts.as_ref().unwrap()["pruned"], 2);
    assert!(last.ended_at.is_some());
    assert_eq!(runs.len(), 2, "the dry run wrote nothing");
}

/// Runs keep who ran them, where, and how they ended.
fn runs_keep_their_origin_and_end(b: Backend) {
    let mut w = b.writer(APP).unwrap();
    let origin = RunOrigin {
        commit: Some("0123abcd".into()),
        host: Some("runner-7".into()),
        os_user: Some("ci".into()),
        ci_job_url: Some("https://github.com/o/r/actions/runs/42".into()),
    };
    let mut run = RunInfo::start(RunCommand::Apply, "digest", origin.clone());
    w.begin_run(&run).unwrap();
    run.end([("deleted", 3), ("failed", 0)]);
    w.end_run(&run).unwrap();
    drop(w);
    let runs = b.reader(Some(APP)).unwrap().runs().unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].origin, origin);
    assert_eq!(runs[0].command, RunCommand::Apply);
    assert_eq!(runs[0].counts, run.counts);
    assert_eq!(
        runs[0].ended_at.unwrap().as_millisecond(),
        run.ended_at.unwrap().as_millisecond()
    );
}

/// PostgreSQL reads are one REPEATABLE READ transaction: a reader keeps its snapshot while a
/// writer commits.
#[test]
fn postgres_reads_are_one_snapshot() {
    let b = Backend::postgres();
    let mut w = b.writer(APP).unwrap();
    w.record_deleted(&RunInfo::new("d"), &[deleted("a", "user:b", false, 1)])
        .unwrap();
    let r = b.reader(Some(APP)).unwrap();
    let serial = r.meta().unwrap().state.serial;
    w.record_deleted(&RunInfo::new("e"), &[deleted("a", "user:c", false, 1)])
        .unwrap();
    assert_eq!(
        listing(&r).len(),
        1,
        "the entries of the snapshot, not the newer write"
    );
    assert_eq!(r.runs().unwrap().len(), 1);
    assert_eq!(r.meta().unwrap().state.serial, serial);
}

/// The PostgreSQL lock is the session's: a holder whose session ends leaves no lock and no
/// holder name behind.
#[test]
fn postgres_lock_goes_with_the_session() {
    let b = Backend::postgres();
    let w = b.writer(APP).unwrap();
    let pid = match &w {
        AnyWriter::Postgres(p) => p.holder().backend_pid,
        AnyWriter::Sqlite(_) => unreachable!("a postgres backend"),
    };
    let StateLocation::Postgres(_) = b.location() else {
        unreachable!()
    };
    let Backend::Postgres { db } = &b else {
        unreachable!()
    };
    // Ending the holder's session from the server, as a killed or vanished runner's is.
    let ended: bool = PgCluster::shared()
        .admin_on(db)
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .unwrap()
        .get(0);
    assert!(ended);
    // The terminated session's lock is released once the server has reaped it.
    let mut second = None;
    for _ in 0..100 {
        match b.writer(APP) {
            Ok(w) => {
                second = Some(w);
                break;
            }
            Err(LedgerError::Postgres(PgError::Locked { holder, .. })) => {
                assert!(holder.is_none_or(|h| h.backend_pid == pid));
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(second.is_some(), "the lock was not released");
    // The lost session's writes fail, naming the state without its password.
    let mut w = w;
    let err = w
        .record_deleted(&RunInfo::new("d"), &[deleted("a", "user:b", false, 1)])
        .unwrap_err();
    let shown = err.to_string();
    let message = format!("{shown} {:?}", miette::Report::new(err));
    assert!(message.contains(db.as_str()), "{message}");
    assert!(
        !message.contains(PgCluster::shared().password()),
        "{message}"
    );
}

/// A state written by an earlier timctl at PostgreSQL schema 2 (a frozen fixture, with foreign
/// keys on its entries) is migrated by the first writer, keeping its lineage, serial, runs and
/// entries; the foreign keys are gone, and recording goes on.
#[test]
fn postgres_schema_2_state_is_migrated_keeping_everything() {
    let b = Backend::postgres();
    let Backend::Postgres { db } = &b else {
        unreachable!("made as PostgreSQL")
    };
    let mut admin = PgCluster::shared().admin_on(db);
    admin
        .batch_execute(&format!(
            "SET ROLE {}; {}",
            timctl_tests::pg::ROLE,
            include_str!("../fixtures/postgres/schema-2.sql")
        ))
        .unwrap();
    let foreign_keys = |admin: &mut ::postgres::Client| -> i64 {
        admin
            .query_one(
                "SELECT count(*) FROM pg_constraint
                 WHERE conrelid = 'timctl.entries'::regclass AND contype = 'f'",
                &[],
            )
            .unwrap()
            .get(0)
    };
    assert_eq!(
        foreign_keys(&mut admin),
        2,
        "the fixture is schema 2 as shipped"
    );
    let before = b.reader(Some(APP)).unwrap();
    let meta = before.meta().unwrap().clone();
    assert_eq!((meta.schema_version, meta.state.serial), (2, 7));
    let entries = before.entries().unwrap();
    let runs = before.runs().unwrap();
    drop(before);
    assert_eq!(entries.len(), 3);
    assert_eq!(runs.len(), 2);

    let mut w = b.writer(APP).unwrap();
    assert_eq!(w.meta().unwrap().schema_version, b.current_schema());
    assert_eq!(foreign_keys(&mut admin), 0);
    w.record_deleted(
        &RunInfo::new("after"),
        &[deleted("carol", "group:@TGS#new", false, 1_700_000_300)],
    )
    .unwrap();
    drop(w);

    let after = b.reader(Some(APP)).unwrap();
    let meta_after = after.meta().unwrap();
    assert_eq!(meta_after.state.lineage, meta.state.lineage);
    assert_eq!(meta_after.state.serial, 8, "one write since");
    let mut kept = after.entries().unwrap();
    kept.retain(|e| e.key.peer.to_string() != "group:@TGS#new");
    assert_eq!(
        kept, entries,
        "every old entry, its origin and run included"
    );
    assert_eq!(after.runs().unwrap()[..2], runs[..]);
}

/// A state of the schema before the history (a frozen fixture of each backend) upgrades on
/// its first write with its entries, runs, lineage and serial intact and an empty history,
/// which starts with that write.
fn upgrade_from_fixture(b: &Backend) {
    let before = b.reader(Some(APP)).unwrap();
    let meta = before.meta().unwrap().clone();
    assert_eq!(meta.schema_version, b.before_history());
    let entries = before.entries().unwrap();
    let runs = before.runs().unwrap();
    assert_eq!(entries.len(), 3);
    assert!(
        runs.iter()
            .all(|r| r.command == RunCommand::Apply && r.ended_at.is_none())
    );
    assert!(
        all_events(&before).is_empty(),
        "an older schema reads as no history"
    );
    drop(before);

    let w = b.writer(APP).unwrap();
    assert_eq!(w.meta().unwrap().schema_version, b.current_schema());
    drop(w);
    let upgraded = b.reader(Some(APP)).unwrap();
    assert_eq!(
        upgraded.meta().unwrap().state,
        meta.state,
        "an upgrade is no write"
    );
    assert_eq!(upgraded.entries().unwrap(), entries);
    assert_eq!(upgraded.runs().unwrap(), runs);
    assert!(all_events(&upgraded).is_empty());
    drop(upgraded);

    let mut w = b.writer(APP).unwrap();
    // A conversation the fixture records the same way, deleted again: history only.
    let again = entries[0].clone();
    let written = w
        .record_deleted(
            &RunInfo::new("after"),
            &[Deleted {
                key: again.key.clone(),
                clear_roaming: again.clear_roaming,
                deleted_at: jiff::Timestamp::from_second(1_800_000_000).unwrap(),
            }],
        )
        .unwrap();
    assert_eq!(written.state, meta.state);
    drop(w);
    let after = b.reader(Some(APP)).unwrap();
    assert_eq!(after.entries().unwrap(), entries);
    let events = all_events(&after);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].key, again.key);
}

#[test]
fn postgres_schema_3_state_upgrades_with_entries_intact_and_empty_history() {
    let b = Backend::postgres();
    let Backend::Postgres { db } = &b else {
        unreachable!("made as PostgreSQL")
    };
    PgCluster::shared()
        .admin_on(db)
        .batch_execute(&format!(
            "SET ROLE {}; {}",
            timctl_tests::pg::ROLE,
            include_str!("../fixtures/postgres/schema-3.sql")
        ))
        .unwrap();
    upgrade_from_fixture(&b);
}

#[test]
fn sqlite_schema_2_state_upgrades_with_entries_intact_and_empty_history() {
    let b = Backend::sqlite();
    let Backend::Sqlite(dir) = &b else {
        unreachable!("made as SQLite")
    };
    let path = dir.path().join(".timctl/state.db");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(
        &path,
        include_bytes!("../fixtures/sqlite/schema-2.db").as_slice(),
    )
    .unwrap();
    upgrade_from_fixture(&b);
}

/// serve's enforced deletions carry the callback that triggered them and the latency from its
/// arrival into the history, on both backends, through the same write as the entries: in a
/// writer's first batch (on PostgreSQL, the plain insert) and in a later one re-deleting a
/// recorded conversation (the upsert); an item without them (a resync's) has neither.
fn enforced_deletions_keep_their_trigger_and_latency(b: Backend) {
    let mut w = b.writer(APP).unwrap();
    let run = RunInfo::start(RunCommand::Serve, "d", RunOrigin::default());
    let c2c = serde_json::json!({"command": "C2C.CallbackAfterSendMsg", "msg_key": "1_2_3"});
    let group = serde_json::json!({"command": "Group.CallbackAfterSendMsg", "group_id": "@TGS#g", "msg_seq": 7});
    let detailed =
        |from: &str, peer: &str, at: i64, trigger: Option<&serde_json::Value>, latency_ms| {
            DetailedDeletion {
                deleted: deleted(from, peer, false, at),
                reason: if trigger.is_some() {
                    EventReason::Enforced
                } else {
                    EventReason::Plan(Reason::CameBack)
                },
                trigger: trigger.cloned(),
                latency_ms,
            }
        };
    let first = w
        .record_detailed(
            &run,
            Origin::Deleted,
            &[
                detailed("a", "user:b", 10, Some(&c2c), Some(42)),
                detailed("a", "user:c", 10, None, None),
            ],
        )
        .unwrap();
    assert_eq!(first.affected, 2);
    // The conversation came back and serve deleted it again: history only.
    let again = w
        .record_detailed(
            &run,
            Origin::Deleted,
            &[
                detailed(
                    "a",
                    "group:@TGS#g",
                    20,
                    Some(&group),
                    Some(u64::from(u32::MAX) + 1),
                ),
                detailed("a", "user:b", 20, Some(&c2c), Some(7)),
            ],
        )
        .unwrap();
    assert_eq!(again.affected, 1, "only the group is new");
    drop(w);
    let r = b.reader(Some(APP)).unwrap();
    let mut seen: Vec<(String, String, Option<serde_json::Value>, Option<u64>)> = all_events(&r)
        .into_iter()
        .rev()
        .map(|e| {
            (
                e.key.peer.to_string(),
                e.reason.as_str().to_owned(),
                e.trigger,
                e.latency_ms,
            )
        })
        .collect();
    // Within a batch, events keep the batch's order; batches come oldest first.
    seen.sort_by_key(|(peer, _, _, latency)| (peer.clone(), *latency));
    assert_eq!(
        seen,
        [
            (
                "group:@TGS#g".into(),
                "enforced".into(),
                Some(group),
                Some(u64::from(u32::MAX) + 1)
            ),
            (
                "user:b".into(),
                "enforced".into(),
                Some(c2c.clone()),
                Some(7)
            ),
            ("user:b".into(), "enforced".into(), Some(c2c), Some(42)),
            ("user:c".into(), "came_back".into(), None, None),
        ]
    );
}
