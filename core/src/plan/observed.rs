//! The plan of `--refresh`: the manifest × the state × what the server's conversation lists hold.
//!
//! Pure, like [`super::diff`]: the listing phase ([`crate::listing`]) reads the lists and hands
//! over one [`Observation`] per planned user; this module applies the rules.
//!
//! For each manifest entry (within the filter), by what its user's list showed:
//!
//! | the list                   | state: no record               | state: a record                      |
//! |----------------------------|--------------------------------|--------------------------------------|
//! | holds the conversation     | delete `present`               | delete `came_back`                   |
//! | lacks it                   | record `absent`, but delete `clear_roaming` when the entry asks for it (its roaming messages may remain) | unchanged, but delete `clear_roaming` when the record is without it |
//! | user does not exist (50001)| record `absent`, clear-roaming or not (no messages) | as "lacks it"            |
//! | could not be read          | delete `unverified`            | delete `unverified`                  |
//!
//! State entries no longer in the manifest are forgotten (`not_in_manifest`), as without
//! refresh. A record is never planned for a user whose list could not be read.

use std::collections::{BTreeMap, BTreeSet};

use super::{Filter, Plan, Reason, merge};
use crate::desired::{DesiredEntry, DesiredState};
use crate::ids::{Peer, UserId};
use crate::ledger::{StateEntry, StateRef};

/// What one user's conversation list showed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observation {
    /// The whole list was read; these are the conversations in it that the manifest names (the
    /// others were not kept, so memory follows the manifest, not the lists).
    Listed(BTreeSet<Peer>),
    /// get_list answered 50001: the user was never imported, so it has no conversations.
    DoesNotExist,
    /// The list could not be read (after retries), for this reason.
    Unreadable(String),
}

/// What the listing phase saw, for every planned user.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observations {
    /// When the listing finished: the plan's `refreshed_at`.
    pub at: jiff::Timestamp,
    /// Per user. A planned user missing here is treated as unreadable: never assumed absent.
    pub users: BTreeMap<UserId, Observation>,
}

/// The users a refresh must list, each once, with the conversations of theirs the manifest
/// names: the manifest's users within the filter. (Users only in the state are forgotten
/// whatever the server says, so they are not listed.)
pub fn wanted(desired: &DesiredState, filter: &Filter) -> BTreeMap<UserId, BTreeSet<Peer>> {
    let mut out: BTreeMap<UserId, BTreeSet<Peer>> = BTreeMap::new();
    for e in desired
        .entries
        .iter()
        .filter(|e| filter.includes(&e.key.from))
    {
        out.entry(e.key.from.clone())
            .or_default()
            .insert(e.key.peer.clone());
    }
    out
}

/// The rule for one manifest entry; `None` is unchanged.
fn decide(
    want: &DesiredEntry,
    had: Option<&StateEntry>,
    seen: Option<&Observation>,
) -> Option<Reason> {
    let upgrade = |h: &StateEntry| want.clear_roaming && !h.clear_roaming;
    match seen {
        None | Some(Observation::Unreadable(_)) => Some(Reason::Unverified),
        Some(Observation::Listed(present)) if present.contains(&want.key.peer) => Some(match had {
            Some(_) => Reason::CameBack,
            None => Reason::Present,
        }),
        Some(Observation::Listed(_)) => match had {
            None if want.clear_roaming => Some(Reason::ClearRoaming),
            None => Some(Reason::Absent),
            Some(h) if upgrade(h) => Some(Reason::ClearRoaming),
            Some(_) => None,
        },
        Some(Observation::DoesNotExist) => match had {
            None => Some(Reason::Absent),
            Some(h) if upgrade(h) => Some(Reason::ClearRoaming),
            Some(_) => None,
        },
    }
}

/// The refreshed plan: the rules above, pure. `reassert` in the filter is ignored (the two do
/// not go together; the CLI refuses them). Inputs as for [`super::diff`].
pub fn diff(
    desired: &DesiredState,
    state: Option<StateRef>,
    entries: &[StateEntry],
    filter: &Filter,
    seen: &Observations,
) -> Plan {
    merge(
        desired,
        state,
        entries,
        filter,
        Some(seen.at),
        |want, had| decide(want, had, seen.users.get(&want.key.from)),
    )
}

/// The users of a refresh that do not exist (50001), for the warning that names them.
pub fn missing_users(seen: &Observations) -> Vec<&UserId> {
    seen.users
        .iter()
        .filter(|(_, o)| matches!(o, Observation::DoesNotExist))
        .map(|(u, _)| u)
        .collect()
}

/// The users whose list could not be read, and why, for the warning that names them.
pub fn unreadable_users(seen: &Observations) -> Vec<(&UserId, &str)> {
    seen.users
        .iter()
        .filter_map(|(u, o)| match o {
            Observation::Unreadable(why) => Some((u, why.as_str())),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests;
