//! `timctl state rm`: one entry dropped from the state (the conversation itself is not
//! touched), under the state's lock, recorded as a run of its own with a `removed` event. A
//! refusal (no state, no such entry) writes nothing, not even the run.

use std::time::Duration;

use super::history::{EventAction, EventReason};
use super::location::{LocatedStore, open_read};
use super::{Ledger, LedgerError, LedgerWriter, RunInfo, StateRef};
use crate::ids::ConversationKey;

/// What the lock file and messages say a removal is doing.
const OPERATION: &str = "state rm";

/// Why nothing was removed.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum RemoveError {
    /// The state does not hold the entry (or there is no state).
    #[error("{key} is not in the state {location}; nothing was removed")]
    #[diagnostic(help("`timctl state list` shows what the state holds"))]
    NotInState {
        /// The entry asked for.
        key: ConversationKey,
        /// The state, for messages.
        location: String,
    },
    /// The state could not be locked, read or written.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Ledger(#[from] LedgerError),
}

/// What a removal did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Removed {
    /// The state after it (its serial bumped).
    pub state: StateRef,
    /// The run recorded, ended with its count.
    pub run: RunInfo,
}

/// `state rm --dry-run`: whether the state of `sdkappid` (with none, the only app's) at `store`
/// holds `key`, read without the lock; nothing is written.
pub fn check_entry(
    store: &LocatedStore,
    sdkappid: Option<u64>,
    key: &ConversationKey,
) -> Result<(), RemoveError> {
    let ledger = open_read(store.location(), store.name(), sdkappid)?;
    if let Some(id) = sdkappid {
        ledger.check_app(id)?;
    }
    if ledger.entries()?.iter().any(|e| &e.key == key) {
        Ok(())
    } else {
        Err(RemoveError::NotInState {
            key: key.clone(),
            location: ledger.location(),
        })
    }
}

/// Removes `key` from the state of `sdkappid` (with none, the state's own app, or the only app
/// in the database) at `store`, taking its lock (waiting up to `lock_timeout`), and records
/// `run` (its command `state rm`) with the count `removed`.
pub fn remove_entry(
    store: &LocatedStore,
    sdkappid: Option<u64>,
    key: &ConversationKey,
    lock_timeout: Duration,
    mut run: RunInfo,
) -> Result<Removed, RemoveError> {
    let missing = |location: String| RemoveError::NotInState {
        key: key.clone(),
        location,
    };
    let sdkappid = match sdkappid {
        Some(id) => id,
        None => store
            .only_app()?
            .ok_or_else(|| missing(store.to_string()))?,
    };
    let mut ledger = store
        .open_existing_writer(sdkappid, OPERATION, lock_timeout)?
        .ok_or_else(|| missing(store.to_string()))?;
    if !ledger.entries()?.iter().any(|e| &e.key == key) {
        // Checked before the run is written, so a refusal writes nothing.
        return Err(missing(ledger.location()));
    }
    ledger.begin_run(&run)?;
    let written = ledger.remove(
        EventAction::Removed,
        EventReason::Requested,
        std::slice::from_ref(key),
    )?;
    run.end([("removed", written.affected as u64)]);
    ledger.end_run(&run)?;
    if written.affected == 0 {
        return Err(missing(ledger.location()));
    }
    Ok(Removed {
        state: written.state,
        run,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::UserId;
    use crate::ledger::history::HistoryQuery;
    use crate::ledger::location::{StateLocation, StateName};
    use crate::ledger::{Deleted, RunCommand, RunOrigin};

    const APP: u64 = 1_400_000_001;

    fn key(from: &str, peer: &str) -> ConversationKey {
        ConversationKey::new(UserId::new(from).unwrap(), peer.parse().unwrap())
    }

    /// A state at `dir` holding `a user:b` and `a user:c`.
    fn store_with_two_entries(dir: &std::path::Path) -> LocatedStore {
        let store = LocatedStore::new(
            StateLocation::Sqlite(dir.join("state.db")),
            StateName::default(),
        )
        .unwrap();
        let mut w = store
            .create_or_open_writer(APP, "test", Duration::ZERO)
            .unwrap();
        let at = jiff::Timestamp::from_second(10).unwrap();
        let batch = ["user:b", "user:c"].map(|peer| Deleted {
            key: key("a", peer),
            clear_roaming: false,
            deleted_at: at,
        });
        w.record_deleted(&RunInfo::new("d"), &batch).unwrap();
        store
    }

    fn rm_run() -> RunInfo {
        RunInfo::start(RunCommand::StateRm, "", RunOrigin::default())
    }

    /// What a reader sees: the serial, the entries' peers, the runs' commands and the events'
    /// (action, reason, peer), newest first.
    fn seen(store: &LocatedStore) -> (u64, Vec<String>, Vec<String>, Vec<String>) {
        let ledger = open_read(store.location(), store.name(), None).unwrap();
        let snapshot = ledger.snapshot().unwrap().unwrap();
        let mut events = Vec::new();
        ledger
            .history(&HistoryQuery::default(), &mut |e| {
                events.push(format!(
                    "{} {} {}",
                    e.action.as_str(),
                    e.reason.as_str(),
                    e.key.peer
                ));
                Ok(())
            })
            .unwrap();
        (
            snapshot.meta.state.serial,
            snapshot
                .entries
                .iter()
                .map(|e| e.key.peer.to_string())
                .collect(),
            snapshot
                .runs
                .iter()
                .map(|r| r.command.as_str().to_owned())
                .collect(),
            events,
        )
    }

    #[test]
    fn removing_an_entry_records_a_run_and_an_event_and_bumps_the_serial() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_two_entries(dir.path());
        let (serial, ..) = seen(&store);
        // The app is the file's own when none is asked for.
        let removed =
            remove_entry(&store, None, &key("a", "user:b"), Duration::ZERO, rm_run()).unwrap();
        assert_eq!(removed.state.serial, serial + 1);
        let counts = removed.run.counts.as_ref().unwrap();
        assert_eq!(counts.get("removed"), Some(&1));
        let (serial_after, entries, runs, events) = seen(&store);
        assert_eq!(serial_after, serial + 1);
        assert_eq!(entries, ["user:c"]);
        assert_eq!(runs, ["apply", "state rm"]);
        assert_eq!(events[0], "removed requested user:b");
    }

    #[test]
    fn an_entry_the_state_does_not_hold_is_refused_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_two_entries(dir.path());
        let before = seen(&store);
        let absent = key("a", "user:zed");
        for result in [
            remove_entry(&store, Some(APP), &absent, Duration::ZERO, rm_run()).map(drop),
            check_entry(&store, Some(APP), &absent),
        ] {
            match result {
                Err(e @ RemoveError::NotInState { .. }) => assert_eq!(
                    e.to_string(),
                    format!(
                        "a user:zed is not in the state {}; nothing was removed",
                        store
                    )
                ),
                other => panic!("expected NotInState, got {other:?}"),
            }
        }
        assert_eq!(seen(&store), before, "no run, no event, the same serial");
        assert!(check_entry(&store, Some(APP), &key("a", "user:c")).is_ok());
        assert_eq!(seen(&store), before, "a dry run writes nothing");
    }

    #[test]
    fn without_a_state_nothing_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("none.db");
        let store =
            LocatedStore::new(StateLocation::Sqlite(path.clone()), StateName::default()).unwrap();
        let result = remove_entry(&store, None, &key("a", "user:b"), Duration::ZERO, rm_run());
        assert!(
            matches!(&result, Err(RemoveError::NotInState { location, .. }) if location == &path.display().to_string()),
            "{result:?}"
        );
        assert!(!path.exists());
    }

    #[test]
    fn another_apps_state_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_two_entries(dir.path());
        let before = seen(&store);
        for result in [
            remove_entry(
                &store,
                Some(APP + 1),
                &key("a", "user:b"),
                Duration::ZERO,
                rm_run(),
            )
            .map(drop),
            check_entry(&store, Some(APP + 1), &key("a", "user:b")),
        ] {
            assert!(
                matches!(
                    result,
                    Err(RemoveError::Ledger(LedgerError::OtherApp { .. }))
                ),
                "{result:?}"
            );
        }
        assert_eq!(seen(&store), before);
    }
}
