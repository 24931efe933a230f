//! One ledger conformance suite, run against both backends: SQLite on a temporary file and
//! PostgreSQL on a throwaway cluster (one per test binary, a fresh database per test).
//!
//! Each case is a function of a [`Backend`]; `conformance!` makes a test of it per backend.
//! Where the backends differ by design (a PostgreSQL database keeps several apps and named
//! states apart; an SQLite file is bound to one app and named by its path), the case says so.

use std::time::Duration;

use timctl_core::ids::{ConversationKey, UserId};
use timctl_core::ledger::{
    self, AnyLedger, AnyWriter, Deleted, Ledger, LedgerError, LedgerWriter, LocatedStore,
    LocationError, Origin, PgError, RunInfo, StateLocation, StateName,
};
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
    /// origin; PostgreSQL's third dropped the entries' foreign keys.
    fn current_schema(&self) -> u32 {
        match self {
            Self::Sqlite(_) => 2,
            Self::Postgres { .. } => 3,
        }
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
    absences_keep_their_origin,
    a_batch_naming_recorded_entries_is_one_write,
    a_first_batch_naming_one_conversation_twice_keeps_the_last,
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
    let meta = w.meta().unwrap().clone();
    let (runs, entries) = (w.runs().unwrap(), w.entries().unwrap());
    drop(w);
    let mut copy = b.writer(APP).unwrap();
    copy.import(&meta, &runs, &entries).unwrap();
    drop(copy);
    let r = b.reader(Some(APP)).unwrap();
    assert_eq!(r.meta().unwrap().state, meta.state);
    assert_eq!(r.meta().unwrap().created_at, meta.created_at);
    assert_eq!(r.runs().unwrap(), runs);
    assert_eq!(r.entries().unwrap(), entries);
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
    assert_eq!(w.meta().unwrap().schema_version, 3);
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
