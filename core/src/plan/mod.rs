//! The plan: a pure diff of the desired state against the ledger, its renderings and its saved
//! form.
//!
//! - [`diff`] is a pure function (no I/O): desired state × ledger entries × filter → [`Plan`].
//! - [`observed::diff`] is the same, also given what the server's conversation lists hold
//!   ([`observed::Observations`]): the plan of `--refresh`.
//! - [`make`] is the one way the operations make a plan: it reads the ledger's snapshot and
//!   diffs against it, with the server's lists when a refresh read them.
//! - [`render`] turns a plan into text, JSON or Markdown.
//! - [`saved`] reads and writes the saved-plan file (the JSON document) and checks that a saved
//!   plan still matches the state ([`check_state`]).

use std::collections::BTreeSet;

use crate::desired::{App, DesiredEntry, DesiredState};
use crate::ids::{ConversationKey, UserId};
use crate::ledger::{Ledger, LedgerError, StateEntry, StateRef};

pub mod observed;
pub mod render;
pub mod saved;

pub use saved::{FORMAT_VERSION, PlanFileError, StalePlan, check_state};

/// What apply will do with one conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// Call `recentcontact/delete` and record the deletion.
    Delete,
    /// Write the entry to the state as seen absent on the server; no call. Only a refreshed
    /// plan has records.
    Record,
    /// Drop the entry from the state; no call.
    Forget,
}

impl Action {
    /// `"delete"`, `"record"` or `"forget"`, as the JSON spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Delete => "delete",
            Action::Record => "record",
            Action::Forget => "forget",
        }
    }
}

/// Why a change is planned. Each reason belongs to exactly one [`Action`] ([`Reason::action`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// Delete: in the manifest, not in the state (no refresh).
    New,
    /// Delete: the manifest asks for clear-roaming and the state has no record with it; or, when
    /// refreshing, the conversation is not in the list but its roaming messages may remain.
    ClearRoaming,
    /// Delete: `--reassert` asked to delete again what the state has recorded.
    Reassert,
    /// Forget: in the state, no longer in the manifest.
    NotInManifest,
    /// Delete: seen on the server, and the state has no record of it.
    Present,
    /// Delete: seen on the server although the state recorded it (a new message brought it back).
    CameBack,
    /// Record: not on the server (or its user does not exist), not in the state.
    Absent,
    /// Delete: the user's list could not be read, so nothing is known; deleting is the safe way.
    Unverified,
}

impl Reason {
    /// Every reason, for parsing and tests.
    pub const ALL: [Reason; 8] = [
        Reason::New,
        Reason::ClearRoaming,
        Reason::Reassert,
        Reason::NotInManifest,
        Reason::Present,
        Reason::CameBack,
        Reason::Absent,
        Reason::Unverified,
    ];

    /// As the JSON spells it: `new`, `clear_roaming`, `reassert`, `not_in_manifest`, `present`,
    /// `came_back`, `absent`, `unverified`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::New => "new",
            Reason::ClearRoaming => "clear_roaming",
            Reason::Reassert => "reassert",
            Reason::NotInManifest => "not_in_manifest",
            Reason::Present => "present",
            Reason::CameBack => "came_back",
            Reason::Absent => "absent",
            Reason::Unverified => "unverified",
        }
    }

    /// The reason spelled `s`, if any.
    pub fn parse(s: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// The only action this reason can go with.
    pub fn action(self) -> Action {
        match self {
            Reason::New
            | Reason::ClearRoaming
            | Reason::Reassert
            | Reason::Present
            | Reason::CameBack
            | Reason::Unverified => Action::Delete,
            Reason::Absent => Action::Record,
            Reason::NotInManifest => Action::Forget,
        }
    }

    /// Whether only a refreshed plan can have this reason.
    pub fn needs_refresh(self) -> bool {
        matches!(
            self,
            Reason::Present | Reason::CameBack | Reason::Absent | Reason::Unverified
        )
    }

    /// Whether the change says that a conversation which must not exist is on the server: what
    /// `--drift-exitcode` alarms on.
    pub fn is_drift(self) -> bool {
        matches!(self, Reason::Present | Reason::CameBack)
    }
}

/// One change.
///
/// Invariant: `action == reason.action()` ([`Change::new`] makes it so; reading a saved plan
/// checks it).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Change {
    /// Which conversation.
    pub key: ConversationKey,
    /// What to do.
    pub action: Action,
    /// Why.
    pub reason: Reason,
    /// For a delete, whether to clear roaming messages (ClearRamble); for a record, what the
    /// manifest asks (so that the state is not planned again without refresh); for a forget,
    /// what the state recorded.
    pub clear_roaming: bool,
}

impl Change {
    /// A change whose action follows from its reason.
    pub fn new(key: ConversationKey, reason: Reason, clear_roaming: bool) -> Self {
        Self {
            key,
            action: reason.action(),
            reason,
            clear_roaming,
        }
    }
}

/// Counts of a plan.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    /// Conversations to delete.
    pub delete: u64,
    /// Entries to record as seen absent (refreshed plans only; a version 1 plan has none).
    #[serde(default)]
    pub record: u64,
    /// Entries to forget.
    pub forget: u64,
    /// Manifest entries, within the filter, that need nothing.
    pub unchanged: u64,
}

impl Summary {
    /// Counts `changes`' actions; `unchanged` is given.
    pub fn count(changes: &[Change], unchanged: u64) -> Self {
        let mut s = Summary {
            unchanged,
            ..Summary::default()
        };
        for c in changes {
            match c.action {
                Action::Delete => s.delete += 1,
                Action::Record => s.record += 1,
                Action::Forget => s.forget += 1,
            }
        }
        s
    }
}

/// A plan: everything apply needs to carry it out, and nothing secret.
///
/// Invariant: `changes` is sorted by (`from`, `peer`), holds each (`from`, `peer`) once, and
/// `summary.delete`/`summary.record`/`summary.forget` count its actions; only a refreshed plan
/// (`refreshed_at` set) has records or the reasons of refresh.
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
    /// When the server's conversation lists were read (`--refresh`); `None` for a plan made
    /// from the state alone.
    pub refreshed_at: Option<jiff::Timestamp>,
}

impl Plan {
    /// Whether apply would do anything.
    pub fn has_changes(&self) -> bool {
        !self.changes.is_empty()
    }

    /// Whether the plan was made looking at the server (`--refresh`).
    pub fn refreshed(&self) -> bool {
        self.refreshed_at.is_some()
    }

    /// Whether a conversation that must not exist was seen on the server: a delete with reason
    /// `present` or `came_back` (what `--drift-exitcode` exits 2 for).
    pub fn has_drift(&self) -> bool {
        self.changes.iter().any(|c| c.reason.is_drift())
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

    /// Refuses a `--user` or `--exclude-user` that neither a manifest entry nor the state
    /// names: a typo would otherwise plan nothing (or everything) and say "No changes". A user
    /// only the state still names is allowed, to narrow a plan to that user's forgets. The
    /// first unknown user is named, with the closest known names.
    pub fn check_users(
        &self,
        desired: &DesiredState,
        recorded: &[StateEntry],
    ) -> Result<(), UnknownUser> {
        if self.users.is_empty() && self.exclude_users.is_empty() {
            return Ok(());
        }
        let named: BTreeSet<&UserId> = (desired.entries.iter().map(|e| &e.key.from))
            .chain(recorded.iter().map(|e| &e.key.from))
            .collect();
        let flagged = (self.users.iter().map(|u| ("--user", u)))
            .chain(self.exclude_users.iter().map(|u| ("--exclude-user", u)));
        for (flag, user) in flagged {
            if !named.contains(user) {
                return Err(UnknownUser {
                    flag,
                    user: user.to_string(),
                    closest: closest_names(user.as_str(), named.iter().map(|u| u.as_str())),
                });
            }
        }
        Ok(())
    }
}

/// A `--user`/`--exclude-user` that no manifest entry names.
#[derive(Debug, thiserror::Error)]
#[error(
    "{flag} {user:?}: no manifest lists this user under `absent`, and the state has no entry of it"
)]
pub struct UnknownUser {
    /// The flag that named the user.
    pub flag: &'static str,
    /// The user as given.
    pub user: String,
    /// The manifests' users closest to it, best first (at most three).
    pub closest: Vec<String>,
}

impl miette::Diagnostic for UnknownUser {
    fn help<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        Some(Box::new(if self.closest.is_empty() {
            format!(
                "{} takes a From_Account that the manifests list under `absent`; check the \
                 spelling, or leave the flag out",
                self.flag
            )
        } else {
            format!("did you mean {}?", self.closest.join(", "))
        }))
    }
}

/// The names of `candidates` closest to `wanted` (a typo's likely intent): similar enough
/// by Jaro-Winkler, best first, at most three.
fn closest_names<'a>(wanted: &str, candidates: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut scored: Vec<(f64, &str)> = candidates
        .map(|c| (strsim::jaro_winkler(wanted, c), c))
        .filter(|(score, _)| *score >= 0.8)
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    scored
        .into_iter()
        .take(3)
        .map(|(_, c)| c.to_owned())
        .collect()
}

/// Why a plan could not be made.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum PlanError {
    /// Reading the ledger failed, or it belongs to another app.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Ledger(#[from] LedgerError),
    /// A `--user`/`--exclude-user` names no manifest user; nothing was read.
    #[error(transparent)]
    #[diagnostic(transparent)]
    UnknownUser(#[from] UnknownUser),
}

/// Reads the ledger (one snapshot) and diffs the desired state against it: what `plan` and
/// `apply` do, and `--refresh` too, given what the server's lists held (`seen`, from
/// [`crate::listing::list`]). Refuses a ledger bound to another app.
pub fn make(
    desired: &DesiredState,
    ledger: &dyn Ledger,
    filter: &Filter,
    seen: Option<&observed::Observations>,
) -> Result<Plan, PlanError> {
    let snapshot = snapshot_for(desired, ledger)?;
    from_snapshot(desired, snapshot.as_ref(), filter, seen)
}

/// [`make`] once the snapshot is read (`None`: no state yet), for a caller that read it
/// earlier: serve reads it when it takes the state's lock, and plans its resync from it once
/// the lists are read, while the writer records callbacks' deletions elsewhere. The snapshot
/// must be of the manifests' app, as [`make`] checks.
pub fn from_snapshot(
    desired: &DesiredState,
    snapshot: Option<&crate::ledger::Snapshot>,
    filter: &Filter,
    seen: Option<&observed::Observations>,
) -> Result<Plan, PlanError> {
    let (state, entries) = match snapshot {
        Some(s) => (Some(s.meta.state), s.entries.as_slice()),
        None => (None, &[][..]),
    };
    filter.check_users(desired, entries)?;
    Ok(match seen {
        Some(seen) => observed::diff(desired, state, entries, filter, seen),
        None => diff(desired, state, entries, filter),
    })
}

/// The one snapshot a plan of `desired` is diffed against, so that the plan's serial names
/// exactly those entries. A ledger bound to another app is refused before any entry is read,
/// and the snapshot's own meta is checked again (another writer may have made the state since
/// the ledger was opened).
pub(crate) fn snapshot_for(
    desired: &DesiredState,
    ledger: &dyn Ledger,
) -> Result<Option<crate::ledger::Snapshot>, PlanError> {
    ledger.check_app(desired.app.sdkappid)?;
    let snapshot = ledger.snapshot()?;
    crate::ledger::check_app(
        snapshot.as_ref().map(|s| &s.meta),
        &ledger.location(),
        desired.app.sdkappid,
    )?;
    Ok(snapshot)
}

/// The diff without refresh, pure (README.md, "timctl plan"):
///
/// - `delete`: in the manifest and not in the state (reason `new`), or in the state without
///   clear-roaming while the manifest asks for it (`clear_roaming`); with `reassert`, every
///   other manifest entry too (`reassert`);
/// - `forget`: in the state and not in the manifest (`not_in_manifest`);
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
    merge(desired, state, entries, filter, None, |want, had| {
        let reason = match had {
            None => Reason::New,
            Some(h) if want.clear_roaming && !h.clear_roaming => Reason::ClearRoaming,
            Some(_) if filter.reassert => Reason::Reassert,
            Some(_) => return None,
        };
        Some(reason)
    })
}

/// The merge of the manifest and the state both diffs share. For each manifest entry within the
/// filter, `decide` is given the entry and its state record (if any) and returns the reason of
/// its change, or `None` when it is unchanged; state entries not in the manifest are forgotten.
pub(crate) fn merge(
    desired: &DesiredState,
    state: Option<StateRef>,
    entries: &[StateEntry],
    filter: &Filter,
    refreshed_at: Option<jiff::Timestamp>,
    mut decide: impl FnMut(&DesiredEntry, Option<&StateEntry>) -> Option<Reason>,
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
    let mut unchanged = 0;
    let mut consider =
        |w: &DesiredEntry, h: Option<&StateEntry>, changes: &mut Vec<Change>| match decide(w, h) {
            Some(reason) => changes.push(Change::new(w.key.clone(), reason, w.clear_roaming)),
            None => unchanged += 1,
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
                    consider(w, None, &mut changes);
                }
            }
            std::cmp::Ordering::Greater => {
                let h = have[j];
                j += 1;
                if filter.includes(&h.key.from) {
                    changes.push(Change::new(
                        h.key.clone(),
                        Reason::NotInManifest,
                        h.clear_roaming,
                    ));
                }
            }
            std::cmp::Ordering::Equal => {
                let (w, h) = (want[i], have[j]);
                i += 1;
                j += 1;
                if filter.includes(&w.key.from) {
                    consider(w, Some(h), &mut changes);
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
    let summary = Summary::count(&changes, unchanged);
    Plan {
        app: desired.app.clone(),
        state,
        manifest_digest: desired.digest.clone(),
        changes,
        summary,
        refreshed_at,
    }
}

#[cfg(test)]
mod tests;
