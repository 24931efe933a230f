//! The plan: a pure diff of the desired state against the ledger, its renderings and its saved
//! form.
//!
//! - [`diff`] is a pure function (no I/O): desired state × ledger entries × filter → [`Plan`].
//! - [`render`] turns a plan into text, JSON or Markdown.
//! - [`saved`] reads and writes the saved-plan file (the JSON document) and checks that a saved
//!   plan still matches the state ([`check_state`]).

use std::collections::BTreeSet;

use crate::desired::{App, DesiredEntry, DesiredState};
use crate::ids::{ConversationKey, UserId};
use crate::ledger::{Ledger, LedgerError, StateEntry, StateRef};

pub mod render;
pub mod saved;

pub use saved::{FORMAT_VERSION, PlanFileError, StalePlan, check_state};

/// What apply will do with one conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// Call `recentcontact/delete` and record the deletion.
    Delete,
    /// Drop the entry from the state; no call.
    Forget,
}

impl Action {
    /// `"delete"` or `"forget"`, as the JSON spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Delete => "delete",
            Action::Forget => "forget",
        }
    }
}

/// One change.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Change {
    /// Which conversation.
    pub key: ConversationKey,
    /// What to do.
    pub action: Action,
    /// For a delete, whether to clear roaming messages (ClearRamble); for a forget, what the
    /// state recorded.
    pub clear_roaming: bool,
}

/// Counts of a plan.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    /// Conversations to delete.
    pub delete: u64,
    /// Entries to forget.
    pub forget: u64,
    /// Manifest entries, within the filter, that need nothing.
    pub unchanged: u64,
}

/// A plan: everything apply needs to carry it out, and nothing secret.
///
/// Invariant: `changes` is sorted by key, holds each key once, and
/// `summary.delete`/`summary.forget` count its actions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The app.
    pub app: App,
    /// The state the plan was made against; `None` when there was none.
    pub state: Option<StateRef>,
    /// The digest of the manifests.
    pub manifest_digest: String,
    /// Deletes and forgets.
    pub changes: Vec<Change>,
    /// The counts.
    pub summary: Summary,
}

impl Plan {
    /// Whether apply would do anything.
    pub fn has_changes(&self) -> bool {
        !self.changes.is_empty()
    }
}

/// Which From_Accounts a plan covers, and whether to reassert.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Make every manifest entry a delete.
    pub reassert: bool,
    /// When not empty, only these From_Accounts.
    pub users: BTreeSet<UserId>,
    /// Never these From_Accounts.
    pub exclude_users: BTreeSet<UserId>,
}

impl Filter {
    /// Whether the plan covers `from`.
    pub fn includes(&self, from: &UserId) -> bool {
        (self.users.is_empty() || self.users.contains(from)) && !self.exclude_users.contains(from)
    }
}

/// Why a plan could not be made.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum PlanError {
    /// Reading the ledger failed, or it belongs to another app.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Ledger(#[from] LedgerError),
}

/// Reads the ledger and diffs the desired state against it: what `plan` and `apply` do.
/// Refuses a ledger bound to another app.
pub fn make(
    desired: &DesiredState,
    ledger: &dyn Ledger,
    filter: &Filter,
) -> Result<Plan, PlanError> {
    ledger.check_app(desired.app.sdkappid)?;
    // One snapshot, so that the plan's serial names exactly the entries it was diffed against.
    let snapshot = ledger.snapshot()?;
    crate::ledger::check_app(
        snapshot.as_ref().map(|s| &s.meta),
        &ledger.location(),
        desired.app.sdkappid,
    )?;
    Ok(match snapshot {
        Some(s) => diff(desired, Some(s.meta.state), &s.entries, filter),
        None => diff(desired, None, &[], filter),
    })
}

/// The diff, pure (README.md, "timctl plan"):
///
/// - `delete`: in the manifest and not in the state, or in the state without clear-roaming
///   while the manifest asks for it; with `reassert`, every manifest entry;
/// - `forget`: in the state and not in the manifest;
/// - `unchanged`: the other manifest entries.
///
/// Only From_Accounts the filter includes are considered. Both inputs are expected sorted by
/// key (the invariants of `DesiredState` and [`Ledger::entries`]); unsorted input
/// is sorted first rather than trusted.
pub fn diff(
    desired: &DesiredState,
    state: Option<StateRef>,
    entries: &[StateEntry],
    filter: &Filter,
) -> Plan {
    let mut want: Vec<&DesiredEntry> = desired.entries.iter().collect();
    if !want.is_sorted_by_key(|e| &e.key) {
        want.sort_by(|a, b| a.key.cmp(&b.key));
    }
    let mut have: Vec<&StateEntry> = entries.iter().collect();
    if !have.is_sorted_by_key(|e| &e.key) {
        have.sort_by(|a, b| a.key.cmp(&b.key));
    }

    let mut changes = Vec::new();
    let mut summary = Summary::default();
    let delete = |e: &DesiredEntry| Change {
        key: e.key.clone(),
        action: Action::Delete,
        clear_roaming: e.clear_roaming,
    };
    let forget = |e: &StateEntry| Change {
        key: e.key.clone(),
        action: Action::Forget,
        clear_roaming: e.clear_roaming,
    };
    let (mut i, mut j) = (0, 0);
    while i < want.len() || j < have.len() {
        let order = match (want.get(i), have.get(j)) {
            (Some(w), Some(h)) => w.key.cmp(&h.key),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, _) => std::cmp::Ordering::Greater,
        };
        match order {
            std::cmp::Ordering::Less => {
                let w = want[i];
                i += 1;
                if filter.includes(&w.key.from) {
                    changes.push(delete(w));
                }
            }
            std::cmp::Ordering::Greater => {
                let h = have[j];
                j += 1;
                if filter.includes(&h.key.from) {
                    changes.push(forget(h));
                }
            }
            std::cmp::Ordering::Equal => {
                let (w, h) = (want[i], have[j]);
                i += 1;
                j += 1;
                if !filter.includes(&w.key.from) {
                    continue;
                }
                if filter.reassert || (w.clear_roaming && !h.clear_roaming) {
                    changes.push(delete(w));
                } else {
                    summary.unchanged += 1;
                }
            }
        }
        // Duplicate keys (not possible from the manifest loader or a ledger's primary key)
        // would make the merge emit a key twice; skipping repeats keeps the plan's invariant.
        while i < want.len() && i > 0 && want[i].key == want[i - 1].key {
            i += 1;
        }
        while j < have.len() && j > 0 && have[j].key == have[j - 1].key {
            j += 1;
        }
    }
    for c in &changes {
        match c.action {
            Action::Delete => summary.delete += 1,
            Action::Forget => summary.forget += 1,
        }
    }
    Plan {
        app: desired.app.clone(),
        state,
        manifest_digest: desired.digest.clone(),
        changes,
        summary,
    }
}

#[cfg(test)]
mod tests;
