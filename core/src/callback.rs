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
use crate::ids::{ConversationKey, GroupId, Peer, UserId};

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
        // Most parameters are not serve's (`ClientIP`, `OptPlatform`, ...) and nearly every
        // name and value is plain: each pair is decoded only when it holds an escape (`%` or
        // `+`), and a value is copied only into a slot serve reads.
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let plain = |t: &str| !t.contains(['%', '+']);
            let (name, value) = if plain(name) && plain(value) {
                (
                    std::borrow::Cow::Borrowed(name),
                    std::borrow::Cow::Borrowed(value),
                )
            } else {
                match url::form_urlencoded::parse(pair.as_bytes()).next() {
                    Some(decoded) => decoded,
                    None => continue,
                }
            };
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
        String::from_utf8_lossy(&self.sign_hex(request_time)).into_owned()
    }

    /// [`CallbackToken::sign`] without an allocation, for the check each callback makes.
    fn sign_hex(&self, request_time: &str) -> [u8; 64] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let digest = Sha256::new()
            .chain_update(self.0.as_bytes())
            .chain_update(request_time.as_bytes())
            .finalize();
        let mut hex = [0u8; 64];
        for (i, b) in digest.iter().enumerate() {
            hex[2 * i] = HEX[usize::from(b >> 4)];
            hex[2 * i + 1] = HEX[usize::from(b & 0xf)];
        }
        hex
    }

    /// Checks a callback's signature, then its time against `now_unix` (seconds). The
    /// signature is compared in constant time; a forged one is `Forged` whatever its time, so
    /// `Stale` always means a genuine callback out of the window.
    pub fn check(&self, query: &CallbackQuery, now_unix: i64) -> Result<(), AuthError> {
        let (Some(sign), Some(time)) = (&query.sign, &query.request_time) else {
            return Err(AuthError::Missing);
        };
        let time_value: i64 = time.trim().parse().map_err(|_| AuthError::BadTime)?;
        let expected = self.sign_hex(time);
        // Lower-cased into a buffer of the signature's own length; any other length is forged
        // (the length of a hex SHA-256 is no secret).
        let given = sign.trim().as_bytes();
        let mut lower = [0u8; 64];
        if given.len() != lower.len() {
            return Err(AuthError::Forged);
        }
        for (l, g) in lower.iter_mut().zip(given) {
            *l = g.to_ascii_lowercase();
        }
        if !bool::from(expected.ct_eq(&lower)) {
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
/// size of the manifests, in about 20 bytes per entry (the desired state it is made from is not
/// kept).
///
/// Every distinct ID the entries name is stored once, back to back in one arena, and numbered;
/// an entry is then two numbers. A one-to-one message between A and B concerns (A, user:B) and
/// (B, user:A); a group message in G concerns (U, group:G) for every user U the manifests give
/// G. A message whose IDs are not in the arena (nearly every one) costs one hash of each ID.
/// Hashing is SipHash with a random key, because callbacks choose the IDs that are looked up.
pub struct ForbiddenIndex {
    hasher: RandomState,
    /// Every distinct ID, back to back.
    arena: String,
    /// Where ID `n` starts in `arena`; it ends where ID `n + 1` starts (the last entry is the
    /// arena's length).
    starts: Vec<u32>,
    /// ID numbers, hashed by the ID's text.
    ids: HashTable<u32>,
    /// One-to-one entries: (user, peer | [`CLEAR_ROAMING`]), hashed by the two numbers.
    one_to_one: HashTable<(u32, u32)>,
    /// Per group: its ID's number and its users' (| [`CLEAR_ROAMING`]), hashed by the number.
    groups: HashTable<(u32, Box<[u32]>)>,
    entries: usize,
}

/// The bit of a stored ID number that carries the entry's `clear_roaming`; ID numbers stay
/// below it.
const CLEAR_ROAMING: u32 = 1 << 31;

/// Interns IDs while an index is built.
struct Interner<'a> {
    hasher: &'a RandomState,
    arena: String,
    starts: Vec<u32>,
    ids: HashTable<u32>,
}

impl Interner<'_> {
    fn name(&self, n: u32) -> &str {
        name(&self.arena, &self.starts, n)
    }

    /// The number of `id`, numbering it if it is new; `None` past the index's limits.
    fn intern(&mut self, id: &str) -> Option<u32> {
        let h = self.hasher.hash_one(id);
        if let Some(&n) = self.ids.find(h, |&n| self.name(n) == id) {
            return Some(n);
        }
        let n = u32::try_from(self.starts.len() - 1)
            .ok()
            .filter(|&n| n < CLEAR_ROAMING)?;
        let end = u32::try_from(self.arena.len() + id.len()).ok()?;
        self.arena.push_str(id);
        self.starts.push(end);
        let (hasher, arena, starts) = (self.hasher, &self.arena, &self.starts);
        self.ids
            .insert_unique(h, n, |&m| hasher.hash_one(name(arena, starts, m)));
        Some(n)
    }
}

fn name<'a>(arena: &'a str, starts: &[u32], n: u32) -> &'a str {
    let n = n as usize;
    &arena[starts[n] as usize..starts[n + 1] as usize]
}

impl ForbiddenIndex {
    /// Indexes `desired`'s entries; refuses more than the index can number (2³¹ distinct IDs,
    /// 4 GiB of them, `u32::MAX` entries).
    pub fn new(desired: &DesiredState) -> Result<Self, TooManyEntries> {
        let too_many = || TooManyEntries(desired.entries.len());
        if u32::try_from(desired.entries.len()).is_err() {
            return Err(too_many());
        }
        let hasher = RandomState::new();
        let mut interner = Interner {
            hasher: &hasher,
            arena: String::new(),
            starts: vec![0],
            ids: HashTable::new(),
        };
        let users = desired
            .entries
            .iter()
            .filter(|e| matches!(e.key.peer, Peer::User(_)))
            .count();
        let mut one_to_one = HashTable::with_capacity(users);
        let mut by_group: std::collections::HashMap<u32, Vec<u32>> = Default::default();
        for e in &desired.entries {
            let from = interner.intern(e.key.from.as_str()).ok_or_else(too_many)?;
            let roaming = if e.clear_roaming { CLEAR_ROAMING } else { 0 };
            match &e.key.peer {
                Peer::User(peer) => {
                    let peer = interner.intern(peer.as_str()).ok_or_else(too_many)?;
                    // The manifests hold each key once: no pair is inserted twice.
                    let h = hasher.hash_one((from, peer));
                    one_to_one.insert_unique(h, (from, peer | roaming), |&(f, p)| {
                        hasher.hash_one((f, p & !CLEAR_ROAMING))
                    });
                }
                Peer::Group(g) => {
                    let group = interner.intern(g.as_str()).ok_or_else(too_many)?;
                    by_group.entry(group).or_default().push(from | roaming);
                }
            }
        }
        let mut groups = HashTable::with_capacity(by_group.len());
        for (group, members) in by_group {
            let h = hasher.hash_one(group);
            groups.insert_unique(h, (group, members.into_boxed_slice()), |(g, _)| {
                hasher.hash_one(*g)
            });
        }
        let Interner {
            mut arena,
            mut starts,
            mut ids,
            ..
        } = interner;
        arena.shrink_to_fit();
        starts.shrink_to_fit();
        ids.shrink_to_fit(|&n| hasher.hash_one(name(&arena, &starts, n)));
        Ok(ForbiddenIndex {
            hasher,
            arena,
            starts,
            ids,
            one_to_one,
            groups,
            entries: desired.entries.len(),
        })
    }

    /// How many manifest entries are indexed.
    pub fn len(&self) -> usize {
        self.entries
    }

    /// Whether no entry is indexed.
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// The forbidden conversations `message` concerns; empty for a message in a conversation no
    /// manifest names (the common case, dropped without allocating).
    pub fn concerned(&self, message: &Message) -> Vec<Forbidden> {
        let mut found = Vec::new();
        match message {
            Message::OneToOne { from, to, .. } => {
                let (Some(a), Some(b)) = (self.id(from), self.id(to)) else {
                    return found;
                };
                for (user, peer) in [(a, b), (b, a)] {
                    let h = self.hasher.hash_one((user, peer));
                    let hit = self
                        .one_to_one
                        .find(h, |&(f, p)| f == user && p & !CLEAR_ROAMING == peer);
                    if let Some(&(_, stored)) = hit
                        && let (Some(user), Some(peer)) = (self.user(user), self.user(peer))
                    {
                        found.push(Forbidden {
                            key: ConversationKey::new(user, Peer::User(peer)),
                            clear_roaming: stored & CLEAR_ROAMING != 0,
                        });
                    }
                }
            }
            Message::Group { group, .. } => {
                let Some(g) = self.id(group) else {
                    return found;
                };
                let hit = self.groups.find(self.hasher.hash_one(g), |(n, _)| *n == g);
                // The group's ID is the one the message named (equal text).
                if let Some((_, members)) = hit
                    && let Ok(group) = GroupId::new(group.as_str())
                {
                    found.extend(members.iter().filter_map(|&m| {
                        Some(Forbidden {
                            key: ConversationKey::new(
                                self.user(m & !CLEAR_ROAMING)?,
                                Peer::Group(group.clone()),
                            ),
                            clear_roaming: m & CLEAR_ROAMING != 0,
                        })
                    }));
                }
            }
        }
        found
    }

    /// The number of `id`, when an entry names it.
    fn id(&self, id: &str) -> Option<u32> {
        let h = self.hasher.hash_one(id);
        self.ids
            .find(h, |&n| name(&self.arena, &self.starts, n) == id)
            .copied()
    }

    /// The user ID numbered `n`. Every number stored as a user came from a valid `UserId`, so
    /// the check never fails; a failure would drop the entry rather than panic.
    fn user(&self, n: u32) -> Option<UserId> {
        UserId::new(name(&self.arena, &self.starts, n)).ok()
    }
}

/// More manifest entries (or distinct IDs) than the index can hold.
#[derive(Debug, thiserror::Error)]
#[error(
    "{0} manifest entries are more than serve can index (at most {max} entries and 2^31 \
     distinct IDs, 4 GiB of them)",
    max = u32::MAX
)]
pub struct TooManyEntries(pub usize);

impl fmt::Debug for ForbiddenIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ForbiddenIndex")
            .field("entries", &self.entries)
            .field("ids", &self.ids.len())
            .field("groups", &self.groups.len())
            .finish()
    }
}

#[cfg(test)]
mod tests;
