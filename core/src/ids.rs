//! Identifiers, validated once at the edge so that the rest of the code can trust them.

use std::fmt;
use std::str::FromStr;

/// Why a string is not a valid UserID or group ID.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, miette::Diagnostic)]
pub enum IdError {
    /// The ID is the empty string.
    #[error("the {kind} is empty")]
    #[diagnostic(code(timctl::id::empty), help("write the ID as the Chat app knows it"))]
    Empty {
        /// "UserID" or "group ID".
        kind: &'static str,
    },
    /// The ID has more bytes than the API allows.
    #[error("the {kind} is {len} bytes long; at most {max} are allowed")]
    #[diagnostic(
        code(timctl::id::too_long),
        help("the API refuses longer IDs; check that this is an ID, not a name or a list")
    )]
    TooLong {
        /// "UserID" or "group ID".
        kind: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The ID holds a byte outside printable ASCII (0x20 to 0x7E).
    #[error("the {kind} has a character that is not printable ASCII ({found:?}) at byte {index}")]
    #[diagnostic(
        code(timctl::id::not_printable_ascii),
        help("IDs are printable ASCII (space to ~); check for a stray control character or quote")
    )]
    NotPrintableAscii {
        /// "UserID" or "group ID".
        kind: &'static str,
        /// The offending character.
        found: char,
        /// Its byte offset in the ID.
        index: usize,
    },
}

fn check_id(kind: &'static str, s: &str, max: usize) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if let Some((index, found)) = s.char_indices().find(|&(_, c)| !(' '..='~').contains(&c)) {
        return Err(IdError::NotPrintableAscii { kind, found, index });
    }
    if s.len() > max {
        return Err(IdError::TooLong {
            kind,
            len: s.len(),
            max,
        });
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $max:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The longest valid ID, in bytes.
            pub const MAX_LEN: usize = $max;
            /// What the ID is called in messages.
            pub const KIND: &'static str = $kind;

            /// Validates `s`: 1 to `MAX_LEN` bytes of printable ASCII.
            pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                check_id($kind, &s, $max)?;
                Ok(Self(s))
            }

            /// The ID as the API spells it.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        /// The schema says what `new` checks: length in bytes (printable ASCII is one byte per
        /// character, so `maxLength` in characters is the same bound) and the character range.
        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({
                    "type": "string",
                    "description": concat!("A ", $kind, ": 1 to ", $max, " bytes of printable ASCII (0x20 to 0x7E)."),
                    "minLength": 1,
                    "maxLength": $max,
                    "pattern": "^[ -~]*$"
                })
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(
    /// A UserID: 1 to 32 bytes of printable ASCII.
    UserId, "UserID", 32
);
id_type!(
    /// A group ID: 1 to 48 bytes of printable ASCII. Server-assigned IDs start with `@TGS#`.
    GroupId, "group ID", 48
);

/// The kind of conversation, as the state and the plan's JSON spell it.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum PeerKind {
    /// A one-to-one conversation (API Type 1).
    User,
    /// A group conversation (API Type 2).
    Group,
}

impl PeerKind {
    /// `"user"` or `"group"`.
    pub fn as_str(self) -> &'static str {
        match self {
            PeerKind::User => "user",
            PeerKind::Group => "group",
        }
    }
}

impl fmt::Display for PeerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The other side of a conversation: a user (one-to-one) or a group. A one-to-one conversation
/// cannot carry a group ID, and the other way round.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Peer {
    /// A one-to-one conversation with this user.
    User(UserId),
    /// A group conversation.
    Group(GroupId),
}

impl Peer {
    /// User or group.
    pub fn kind(&self) -> PeerKind {
        match self {
            Peer::User(_) => PeerKind::User,
            Peer::Group(_) => PeerKind::Group,
        }
    }

    /// The peer's ID, without its kind.
    pub fn id(&self) -> &str {
        match self {
            Peer::User(u) => u.as_str(),
            Peer::Group(g) => g.as_str(),
        }
    }

    /// Builds a peer from its kind and ID, validating the ID for that kind.
    pub fn from_parts(kind: PeerKind, id: impl Into<String>) -> Result<Self, IdError> {
        Ok(match kind {
            PeerKind::User => Peer::User(UserId::new(id)?),
            PeerKind::Group => Peer::Group(GroupId::new(id)?),
        })
    }

    /// The API's view of this peer.
    pub fn to_api(&self) -> crate::api::Conversation {
        match self {
            Peer::User(u) => crate::api::Conversation::OneToOne {
                to_account: u.as_str().to_owned(),
            },
            Peer::Group(g) => crate::api::Conversation::Group {
                to_groupid: g.as_str().to_owned(),
            },
        }
    }
}

/// `user:ID` or `group:ID`, the form `timctl state rm` takes.
impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind(), self.id())
    }
}

/// Why a `user:ID`/`group:ID` string could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, miette::Diagnostic)]
pub enum PeerParseError {
    /// No `user:` or `group:` prefix.
    #[error("expected user:ID or group:ID, found {0:?}")]
    #[diagnostic(
        code(timctl::id::peer_kind),
        help("write the other side as user:ID for a one-to-one chat or group:ID for a group")
    )]
    MissingKind(String),
    /// The ID after the prefix is invalid.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Id(#[from] IdError),
}

impl FromStr for Peer {
    type Err = PeerParseError;
    fn from_str(s: &str) -> Result<Self, PeerParseError> {
        if let Some(id) = s.strip_prefix("user:") {
            Ok(Peer::User(UserId::new(id)?))
        } else if let Some(id) = s.strip_prefix("group:") {
            Ok(Peer::Group(GroupId::new(id)?))
        } else {
            Err(PeerParseError::MissingKind(s.to_owned()))
        }
    }
}

/// One conversation: whose list it is in, and with whom. Everything that names a conversation
/// (desired entries, state entries, plan changes, recorded deletions, forgets) names it with
/// this key.
///
/// The order (by `from`, then `peer`) is the order entries are kept in everywhere: manifests
/// are merged in it, the state's primary key reads in it, and plans list their changes in it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConversationKey {
    /// The user whose conversation list it is (From_Account).
    pub from: UserId,
    /// The other side of the conversation.
    pub peer: Peer,
}

impl ConversationKey {
    /// The key of `from`'s conversation with `peer`.
    pub fn new(from: UserId, peer: Peer) -> Self {
        Self { from, peer }
    }
}

/// `FROM user:ID` or `FROM group:ID`, for messages.
impl fmt::Display for ConversationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.from, self.peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_id_bounds() {
        assert!(UserId::new("a").is_ok());
        assert!(UserId::new("a".repeat(32)).is_ok());
        assert_eq!(
            UserId::new("a".repeat(33)),
            Err(IdError::TooLong {
                kind: "UserID",
                len: 33,
                max: 32
            })
        );
        assert_eq!(UserId::new(""), Err(IdError::Empty { kind: "UserID" }));
        assert!(matches!(
            UserId::new("a\tb"),
            Err(IdError::NotPrintableAscii { index: 1, .. })
        ));
        assert!(matches!(
            UserId::new("é"),
            Err(IdError::NotPrintableAscii { index: 0, .. })
        ));
    }

    #[test]
    fn group_id_bounds() {
        assert!(GroupId::new("@TGS#2C5SZEAEF").is_ok());
        assert!(GroupId::new("g".repeat(48)).is_ok());
        assert!(GroupId::new("g".repeat(49)).is_err());
    }

    #[test]
    fn peer_round_trips_through_text() {
        for text in ["user:bob", "group:@TGS#2C5SZEAEF"] {
            let peer: Peer = text.parse().unwrap();
            assert_eq!(peer.to_string(), text);
        }
        assert!(matches!(
            "bob".parse::<Peer>(),
            Err(PeerParseError::MissingKind(_))
        ));
        assert!(matches!(
            "user:".parse::<Peer>(),
            Err(PeerParseError::Id(IdError::Empty { .. }))
        ));
    }
}
