//! Tencent Cloud Chat's "after a message is sent" callbacks, as the long-running reconciler
//! (`timctl serve`) receives them: the query Tencent adds (which app, which command, the
//! signature), the authentication rule, the few body fields that name a conversation, and which
//! forbidden conversations a message concerns.
//!
//! A message brings its conversation back into both sides' lists, so a callback is how serve
//! learns, within a second, that a conversation the manifests forbid exists again. Everything
//! here is pure (the clock is passed in, nothing is read from outside), so each rule is a unit
//! test.
//!
//! Official documentation: the webhook overview
//! <https://www.tencentcloud.com/document/product/1047/34354>, the one-to-one callback
//! <https://www.tencentcloud.com/document/product/1047/34365>, the group callback
//! <https://www.tencentcloud.com/document/product/1047/34375>, and callback authentication
//! <https://cloud.tencent.com/document/product/269/32431>.

use std::fmt;
use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::desired::DesiredState;
use crate::ids::{ConversationKey, GroupId, Peer};

/// How far `RequestTime` may be from this clock, in seconds, either way: the documentation's
/// replay window.
pub const MAX_SKEW_SECONDS: i64 = 60;

/// The one-to-one callback's command.
pub const C2C_AFTER_SEND: &str = "C2C.CallbackAfterSendMsg";
/// The group callback's command.
pub const GROUP_AFTER_SEND: &str = "Group.CallbackAfterSendMsg";

/// The query parameters of a callback that serve reads. Tencent's names are matched without
/// regard to case: the documentation writes `SdkAppid`, and nothing promises that spelling.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallbackQuery {
    /// `SdkAppid`, as sent.
    pub sdkappid: Option<String>,
    /// `CallbackCommand`, e.g. [`C2C_AFTER_SEND`].
    pub command: Option<String>,
    /// `Sign`: hex SHA-256 of the token and `RequestTime`.
    pub sign: Option<String>,
    /// `RequestTime`: Unix time in seconds, as a decimal string.
    pub request_time: Option<String>,
}

impl CallbackQuery {
    /// Reads a query string (`a=1&b=2`, percent-encoded). A repeated parameter keeps its first
    /// value; unknown parameters are ignored.
    pub fn parse(query: &str) -> Self {
        let mut q = CallbackQuery::default();
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            let slot = if name.eq_ignore_ascii_case("SdkAppid") {
                &mut q.sdkappid
            } else if name.eq_ignore_ascii_case("CallbackCommand") {
                &mut q.command
            } else if name.eq_ignore_ascii_case("Sign") {
                &mut q.sign
            } else if name.eq_ignore_ascii_case("RequestTime") {
                &mut q.request_time
            } else {
                continue;
            };
            if slot.is_none() {
                *slot = Some(value.into_owned());
            }
        }
        q
    }

    /// Whether the callback is for `sdkappid`. A missing or unreadable `SdkAppid` is not.
    pub fn is_for_app(&self, sdkappid: u64) -> bool {
        self.sdkappid
            .as_deref()
            .and_then(|s| s.trim().parse::<u64>().ok())
            == Some(sdkappid)
    }
}

/// Why a callback is not authentic. What each does to the caller: every one is answered 401 and
/// queues nothing; `Stale` is counted apart (a clock out of sync, or a replay), the others as
/// unauthorized.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Sign` or no `RequestTime` in the query.
    #[error(
        "the callback has no Sign or no RequestTime; enable callback authentication in the console"
    )]
    Missing,
    /// `RequestTime` is not a Unix time in seconds.
    #[error("the callback's RequestTime is not a Unix time in seconds")]
    BadTime,
    /// The `Sign` is not the token's signature of `RequestTime`.
    #[error("the callback's Sign does not match the token")]
    Forged,
    /// Signed correctly, but `RequestTime` is more than [`MAX_SKEW_SECONDS`] from this clock.
    #[error(
        "the callback's RequestTime is {skew_seconds} s from this clock (at most {MAX_SKEW_SECONDS} allowed): keep clocks in sync"
    )]
    Stale {
        /// RequestTime minus now, in seconds (negative: in the past).
        skew_seconds: i64,
    },
}

/// The callback authentication token set in the console. Never printed: `Debug` and `Display`
/// redact it.
#[derive(Clone)]
pub struct CallbackToken(String);

impl CallbackToken {
    /// The token, or `None` when it is empty (surrounding whitespace, as a file's final
    /// newline, is not part of it).
    pub fn new(token: &str) -> Option<Self> {
        let token = token.trim();
        (!token.is_empty()).then(|| Self(token.to_owned()))
    }

    /// The token itself, for redaction lists only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `Sign` for `request_time`: hex(SHA-256(token ‖ request_time)), lower case.
    pub fn sign(&self, request_time: &str) -> String {
        let digest = Sha256::new()
            .chain_update(self.0.as_bytes())
            .chain_update(request_time.as_bytes())
            .finalize();
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Checks a callback's signature, then its time against `now_unix` (seconds). The
    /// signature is compared in constant time; a forged one is `Forged` whatever its time, so
    /// `Stale` always means a genuine callback out of the window.
    pub fn check(&self, query: &CallbackQuery, now_unix: i64) -> Result<(), AuthError> {
        let (Some(sign), Some(time)) = (&query.sign, &query.request_time) else {
            return Err(AuthError::Missing);
        };
        let time_value: i64 = time.trim().parse().map_err(|_| AuthError::BadTime)?;
        let expected = self.sign(time);
        let given = sign.trim().to_ascii_lowercase();
        if !bool::from(expected.as_bytes().ct_eq(given.as_bytes())) {
            return Err(AuthError::Forged);
        }
        let skew_seconds = time_value.saturating_sub(now_unix);
        if skew_seconds.abs() > MAX_SKEW_SECONDS {
            return Err(AuthError::Stale { skew_seconds });
        }
        Ok(())
    }
}

impl fmt::Debug for CallbackToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CallbackToken(<redacted>)")
    }
}

/// A message a callback reports, with only the fields serve needs: who and where, and what
/// identifies the message for the history's `trigger`. The body's content (`MsgBody`) is never
/// decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// `C2C.CallbackAfterSendMsg`: `from` wrote to `to`.
    OneToOne {
        /// `From_Account`.
        from: String,
        /// `To_Account`.
        to: String,
        /// `MsgKey`, when sent.
        msg_key: Option<String>,
    },
    /// `Group.CallbackAfterSendMsg`: a message in `group`.
    Group {
        /// `GroupId`.
        group: String,
        /// `MsgSeq`, when sent.
        msg_seq: Option<u64>,
    },
}

/// A callback body that cannot be read. Answered 400; nothing is queued.
#[derive(Debug, thiserror::Error)]
#[error("the {command} callback's body cannot be read: {source}")]
pub struct MalformedBody {
    /// The command the body was read as.
    pub command: &'static str,
    /// What was wrong.
    #[source]
    pub source: serde_json::Error,
}

#[derive(serde::Deserialize)]
struct OneToOneBody {
    #[serde(rename = "From_Account")]
    from: String,
    #[serde(rename = "To_Account")]
    to: String,
    #[serde(rename = "MsgKey", default)]
    msg_key: Option<String>,
}

#[derive(serde::Deserialize)]
struct GroupBody {
    #[serde(rename = "GroupId")]
    group: String,
    #[serde(rename = "MsgSeq", default, deserialize_with = "lenient_u64")]
    msg_seq: Option<u64>,
}

/// A number, or a decimal string of one (the documentation shows both forms for some fields);
/// anything else is absent rather than an error, since serve only records it.
fn lenient_u64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let value: serde_json::Value = serde::Deserialize::deserialize(d)?;
    Ok(match value {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    })
}

/// Reads the body of a callback whose `CallbackCommand` is `command`: `Ok(None)` for commands
/// that report no message (`Alert.RequestOverLimit` and the rest, answered OK and counted).
/// Unknown fields are ignored.
pub fn parse_body(command: &str, body: &[u8]) -> Result<Option<Message>, MalformedBody> {
    if command == C2C_AFTER_SEND {
        let b: OneToOneBody = serde_json::from_slice(body).map_err(|source| MalformedBody {
            command: C2C_AFTER_SEND,
            source,
        })?;
        Ok(Some(Message::OneToOne {
            from: b.from,
            to: b.to,
            msg_key: b.msg_key,
        }))
    } else if command == GROUP_AFTER_SEND {
        let b: GroupBody = serde_json::from_slice(body).map_err(|source| MalformedBody {
            command: GROUP_AFTER_SEND,
            source,
        })?;
        Ok(Some(Message::Group {
            group: b.group,
            msg_seq: b.msg_seq,
        }))
    } else {
        Ok(None)
    }
}

/// A conversation a message concerns that the manifests forbid, with the manifests'
/// `clear_roaming` for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forbidden {
    /// Whose list and which conversation.
    pub key: ConversationKey,
    /// Whether its deletion clears roaming messages.
    pub clear_roaming: bool,
}

/// Which forbidden conversations a message concerns, answered in constant time whatever the
/// size of the manifests, with memory of a few bytes per entry beside the desired state it
/// indexes.
///
/// A one-to-one message between A and B concerns (A, user:B) and (B, user:A); a group message in
/// G concerns (U, group:G) for every user U the manifests give G. Hashing is SipHash with a
/// random key, because callbacks choose the IDs that are looked up.
pub struct ForbiddenIndex {
    entries: Vec<crate::desired::DesiredEntry>,
    hasher: RandomState,
    /// Indices of one-to-one entries, hashed by (from, peer).
    one_to_one: HashTable<u32>,
    /// Per group, the indices of its entries, hashed by the group ID.
    groups: HashTable<(u32, Box<[u32]>)>,
}

impl ForbiddenIndex {
    /// Indexes `desired`'s entries; refuses more than `u32::MAX` of them (the index keeps
    /// 4-byte positions).
    pub fn new(desired: &DesiredState) -> Result<Self, TooManyEntries> {
        if u32::try_from(desired.entries.len()).is_err() {
            return Err(TooManyEntries(desired.entries.len()));
        }
        let hasher = RandomState::new();
        let entries = desired.entries.clone();
        let mut one_to_one = HashTable::with_capacity(entries.len());
        let mut by_group: std::collections::BTreeMap<&GroupId, Vec<u32>> = Default::default();
        for (i, e) in entries.iter().enumerate() {
            // Checked above: every position fits.
            let i = i as u32;
            match &e.key.peer {
                Peer::User(peer) => {
                    let h = hasher.hash_one((e.key.from.as_str(), peer.as_str()));
                    one_to_one.insert_unique(h, i, |&j: &u32| {
                        let e = &entries[j as usize];
                        hasher.hash_one((e.key.from.as_str(), peer_str(&e.key.peer)))
                    });
                }
                Peer::Group(g) => by_group.entry(g).or_default().push(i),
            }
        }
        let mut groups = HashTable::with_capacity(by_group.len());
        for (group, members) in by_group {
            let first = members[0];
            let h = hasher.hash_one(group.as_str());
            groups.insert_unique(h, (first, members.into_boxed_slice()), |(j, _)| {
                hasher.hash_one(peer_str(&entries[*j as usize].key.peer))
            });
        }
        Ok(ForbiddenIndex {
            entries,
            hasher,
            one_to_one,
            groups,
        })
    }

    /// How many manifest entries are indexed.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no entry is indexed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The forbidden conversations `message` concerns; empty for a message in a conversation no
    /// manifest names (the common case, dropped without allocating).
    pub fn concerned(&self, message: &Message) -> Vec<Forbidden> {
        let mut found = Vec::new();
        match message {
            Message::OneToOne { from, to, .. } => {
                for (a, b) in [(from, to), (to, from)] {
                    if let Some(i) = self.one_to_one_index(a, b) {
                        found.push(self.forbidden(i));
                    }
                }
            }
            Message::Group { group, .. } => {
                let h = self.hasher.hash_one(group.as_str());
                let hit = self.groups.find(h, |(j, _)| {
                    peer_str(&self.entries[*j as usize].key.peer) == group.as_str()
                });
                if let Some((_, members)) = hit {
                    found.extend(members.iter().map(|&i| self.forbidden(i)));
                }
            }
        }
        found
    }

    fn one_to_one_index(&self, from: &str, peer: &str) -> Option<u32> {
        let h = self.hasher.hash_one((from, peer));
        self.one_to_one
            .find(h, |&j| {
                let e = &self.entries[j as usize];
                e.key.from.as_str() == from
                    && matches!(&e.key.peer, Peer::User(p) if p.as_str() == peer)
            })
            .copied()
    }

    fn forbidden(&self, i: u32) -> Forbidden {
        let e = &self.entries[i as usize];
        Forbidden {
            key: e.key.clone(),
            clear_roaming: e.clear_roaming,
        }
    }
}

/// More manifest entries than the index can hold.
#[derive(Debug, thiserror::Error)]
#[error("{0} manifest entries are more than serve can index ({max})", max = u32::MAX)]
pub struct TooManyEntries(pub usize);

impl fmt::Debug for ForbiddenIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ForbiddenIndex")
            .field("entries", &self.entries.len())
            .field("groups", &self.groups.len())
            .finish()
    }
}

fn peer_str(peer: &Peer) -> &str {
    match peer {
        Peer::User(u) => u.as_str(),
        Peer::Group(g) => g.as_str(),
    }
}

#[cfg(test)]
mod tests;
