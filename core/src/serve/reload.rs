//! The controller loop's pure parts: what a manifest reload changes, whether it may be
//! adopted, and which users a resync must look at.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use crate::callback::ForbiddenIndex;
use crate::desired::{DesiredEntry, DesiredState};
use crate::ids::{ConversationKey, UserId};
use crate::ledger::StateEntry;
use crate::plan::{self, Action, Filter};

/// The manifests serve enforces: their entries and the callback index made from them.
pub struct Adopted {
    /// The manifests as loaded.
    pub desired: DesiredState,
    /// What callbacks are looked up in.
    pub index: ForbiddenIndex,
}

/// The adopted generation, swapped whole on a reload: a callback sees the old set or the new
/// one, never a mix.
pub type Current = Arc<std::sync::RwLock<Arc<Adopted>>>;

/// The generation in force now.
pub fn current(adopted: &Current) -> Arc<Adopted> {
    adopted.read().unwrap_or_else(|p| p.into_inner()).clone()
}

/// The users whose entries differ between `old` and `new` (an entry added, removed, or with
/// another `clear_roaming`): after a reload, only their lists are looked at again.
pub fn changed_users(old: &[DesiredEntry], new: &[DesiredEntry]) -> BTreeSet<UserId> {
    let map = |entries: &[DesiredEntry]| -> BTreeMap<ConversationKey, bool> {
        entries
            .iter()
            .map(|e| (e.key.clone(), e.clear_roaming))
            .collect()
    };
    let (old, new) = (map(old), map(new));
    let mut changed = BTreeSet::new();
    for (key, clear) in &new {
        if old.get(key) != Some(clear) {
            changed.insert(key.from.clone());
        }
    }
    for key in old.keys() {
        if !new.contains_key(key) {
            changed.insert(key.from.clone());
        }
    }
    changed
}

/// The deletions a generation would add to what the state records (entries it does not
/// record, or records without the `clear_roaming` now asked): what `--max-deletes` bounds.
/// Re-deleting what the state already records never counts.
pub fn new_deletions(desired: &DesiredState, entries: &[StateEntry]) -> usize {
    plan::diff(desired, None, entries, &Filter::default())
        .changes
        .iter()
        .filter(|c| c.action == Action::Delete)
        .count()
}

/// The state's entries no manifest of `desired` names: forgotten when it is adopted.
pub fn forgets(desired: &DesiredState, entries: &[StateEntry]) -> Vec<ConversationKey> {
    plan::diff(desired, None, entries, &Filter::default())
        .changes
        .into_iter()
        .filter(|c| c.action == Action::Forget)
        .map(|c| c.key)
        .collect()
}

/// `desired` with only the entries the state records: what serve enforces while manifests
/// over `--max-deletes` are refused at start. Its digest is emptied, so that any manifests
/// read later count as a change.
pub fn recorded_only(mut desired: DesiredState, entries: &[StateEntry]) -> DesiredState {
    let recorded: std::collections::HashSet<&ConversationKey> =
        entries.iter().map(|e| &e.key).collect();
    desired.entries.retain(|e| recorded.contains(&e.key));
    desired.digest = String::new();
    desired
}

/// What a resync looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every manifest user.
    Full,
    /// These users only.
    Users(BTreeSet<UserId>),
}

/// Users waiting for a targeted resync (after a reload changed their entries, or after their
/// callbacks overflowed the queue), at most `capacity` of them: past it, one full resync
/// instead, so the memory stays bounded whatever the number of callbacks.
#[derive(Debug)]
pub struct Pending {
    capacity: usize,
    state: Mutex<Option<Scope>>,
    wake: tokio::sync::Notify,
}

impl Pending {
    /// At most `capacity` users remembered.
    pub fn new(capacity: usize) -> Self {
        Pending {
            capacity: capacity.max(1),
            state: Mutex::new(None),
            wake: tokio::sync::Notify::new(),
        }
    }

    /// Marks `users` for a targeted resync.
    pub fn mark(&self, users: impl IntoIterator<Item = UserId>) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match &mut *state {
            Some(Scope::Full) => {}
            Some(Scope::Users(set)) => {
                set.extend(users);
                if set.len() > self.capacity {
                    *state = Some(Scope::Full);
                }
            }
            None => {
                let set: BTreeSet<UserId> = users.into_iter().collect();
                if set.is_empty() {
                    return;
                }
                *state = Some(if set.len() > self.capacity {
                    Scope::Full
                } else {
                    Scope::Users(set)
                });
            }
        }
        drop(state);
        self.wake.notify_one();
    }

    /// Asks for a full resync.
    pub fn mark_full(&self) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = Some(Scope::Full);
        self.wake.notify_one();
    }

    /// Takes what is marked, if anything.
    pub fn take(&self) -> Option<Scope> {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Waits until something is marked (returns at once if something already is).
    pub async fn marked(&self) {
        self.wake.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Peer;

    fn entry(from: &str, peer: &str, clear: bool) -> DesiredEntry {
        DesiredEntry {
            key: ConversationKey {
                from: UserId::new(from).unwrap(),
                peer: Peer::User(UserId::new(peer).unwrap()),
            },
            clear_roaming: clear,
        }
    }

    #[test]
    fn only_users_whose_entries_changed_are_resynced() {
        let old = vec![
            entry("a", "x", false),
            entry("b", "x", false),
            entry("c", "x", false),
        ];
        let new = vec![
            entry("a", "x", false),
            entry("b", "x", true),
            entry("d", "x", false),
        ];
        let changed: Vec<String> = changed_users(&old, &new)
            .into_iter()
            .map(|u| u.as_str().to_owned())
            .collect();
        assert_eq!(changed, ["b", "c", "d"]);
        assert!(changed_users(&old, &old).is_empty());
    }

    #[test]
    fn marks_past_the_capacity_become_one_full_resync() {
        let pending = Pending::new(2);
        assert_eq!(pending.take(), None);
        pending.mark([UserId::new("a").unwrap()]);
        pending.mark([UserId::new("a").unwrap(), UserId::new("b").unwrap()]);
        assert_eq!(
            pending.take(),
            Some(Scope::Users(
                [UserId::new("a").unwrap(), UserId::new("b").unwrap()].into()
            ))
        );
        pending.mark(["a", "b", "c"].map(|u| UserId::new(u).unwrap()));
        assert_eq!(pending.take(), Some(Scope::Full));
        assert_eq!(pending.take(), None);
    }
}
