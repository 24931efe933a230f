//! The manifest as written: the types serde-saphyr reads a file into, and the JSON Schema is
//! generated from. One set of types serves both so that the parser and the schema cannot drift.
//!
//! Values that a later check may need to point at are wrapped in [`Spanned`], which records
//! where they were in the file. IDs are read as plain strings and validated after parsing, so
//! that one bad ID does not hide the other problems of the file; the schema still describes
//! them with [`UserId`]'s and [`GroupId`]'s rules through `#[schemars(with = ...)]`.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::Deserialize;
use serde::de::{MapAccess, Visitor};
use serde_saphyr::Spanned;

use crate::api::Region;
use crate::ids::{GroupId, UserId};

/// A timctl manifest: per user, the conversations that must not exist.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "timctl manifest",
    extend("examples" = [{
        "version": 1,
        "app": {"sdkappid": 1400000001u64, "region": "singapore", "admin": "administrator"},
        "defaults": {"clear_roaming": false},
        "absent": {
            "alice": [{"user": "bob", "clear_roaming": true}, {"group": "@TGS#2C5SZEAEF"}],
            "carol": [{"user": "dave"}]
        }
    }])
)]
pub(crate) struct ManifestFile {
    /// The manifest format version. Only 1 exists.
    #[schemars(with = "Version")]
    pub(crate) version: Spanned<Integer>,
    /// The app these conversations belong to. Give it in one manifest, or repeat it
    /// identically in several.
    // The schema says an object, not "an object or null" (here and for `defaults` and
    // `absent`): `app:` with nothing after it means nothing, and a nullable type made
    // validators answer a typo inside the block with "is not of type 'null'". The loader
    // still reads a null as no block.
    #[serde(default)]
    #[schemars(with = "AppSpec")]
    pub(crate) app: Option<Spanned<AppSpec>>,
    /// Defaults for the entries of this file only.
    #[serde(default)]
    #[schemars(with = "Defaults")]
    pub(crate) defaults: Option<Defaults>,
    /// Per user (From_Account): the conversations that must not exist in that user's
    /// conversation list.
    #[serde(default)]
    #[schemars(with = "Absent")]
    pub(crate) absent: Option<Absent>,
}

/// The app block.
#[derive(Debug, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(crate) struct AppSpec {
    /// The app's SDKAppID, from the Tencent Cloud Chat console.
    #[schemars(range(min = 1))]
    pub(crate) sdkappid: Integer,
    /// Where the app lives; picks the REST API host.
    pub(crate) region: Region,
    /// The app admin account whose UserSig signs the calls.
    #[schemars(with = "UserId")]
    pub(crate) admin: Spanned<String>,
}

/// Defaults for the entries of the file they are in.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Defaults {
    /// Whether to clear roaming messages too (the API's ClearRamble), for entries of this
    /// file that do not say. Default false.
    #[serde(default)]
    pub(crate) clear_roaming: Option<Bool>,
}

/// One conversation that must not exist: exactly one of `user` (a one-to-one conversation)
/// or `group` (a group conversation).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("oneOf" = [{"required": ["user"]}, {"required": ["group"]}]))]
pub(crate) struct EntrySpec {
    /// The other user of a one-to-one conversation (API Type 1, To_Account).
    #[serde(default)]
    #[schemars(with = "UserId")]
    pub(crate) user: Option<Spanned<String>>,
    /// The group of a group conversation (API Type 2, ToGroupid).
    #[serde(default)]
    #[schemars(with = "GroupId")]
    pub(crate) group: Option<Spanned<String>>,
    /// Whether to clear roaming messages too (ClearRamble). Default: this file's
    /// `defaults.clear_roaming`, else false.
    #[serde(default)]
    pub(crate) clear_roaming: Option<Bool>,
}

/// `absent`: user to list of entries, in file order, each key with its place in the file.
///
/// A `Vec` rather than a map: the order and the key positions are kept, and a key repeated in
/// the mapping is already refused by the parser's duplicate-key policy.
#[derive(Debug, Default)]
pub(crate) struct Absent(pub(crate) Vec<(Spanned<String>, Vec<Spanned<EntrySpec>>)>);

impl<'de> Deserialize<'de> for Absent {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct AbsentVisitor;
        impl<'de> Visitor<'de> for AbsentVisitor {
            type Value = Absent;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping of UserIDs to lists of conversations")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Absent, A::Error> {
                let mut users = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some(key) = map.next_key::<Spanned<String>>()? {
                    let entries: Vec<Spanned<EntrySpec>> = map.next_value()?;
                    users.push((key, entries));
                }
                Ok(Absent(users))
            }
        }
        d.deserialize_map(AbsentVisitor)
    }
}

impl JsonSchema for Absent {
    fn schema_name() -> Cow<'static, str> {
        "Absent".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let user = generator.subschema_for::<UserId>();
        let entries = generator.subschema_for::<Vec<EntrySpec>>();
        json_schema!({
            "type": "object",
            "description": "Per user (From_Account, the key): the conversations that must not exist in that user's conversation list.",
            "propertyNames": user,
            "additionalProperties": entries
        })
    }
}

/// Schema-only: `version` is the integer 1.
pub(crate) struct Version;

impl JsonSchema for Version {
    fn schema_name() -> Cow<'static, str> {
        "Version".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "integer",
            "const": 1,
            "description": "The manifest format version. Only 1 exists."
        })
    }
}

/// A non-negative integer written as a YAML number. A quoted `"1"` is a string, as the JSON
/// Schema says, and is refused rather than converted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Integer(pub(crate) u64);

impl<'de> Deserialize<'de> for Integer {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct IntegerVisitor;
        impl Visitor<'_> for IntegerVisitor {
            type Value = Integer;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a non-negative integer (not quoted)")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Integer, E> {
                Ok(Integer(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Integer, E> {
                u64::try_from(v)
                    .map(Integer)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(v), &self))
            }
        }
        // `deserialize_any` lets the YAML decide the type: a plain `1` is a number, a quoted
        // "1" a string, which the visitor refuses.
        d.deserialize_any(IntegerVisitor)
    }
}

/// A YAML boolean, plain `true` or `false`. A quoted "true", or YAML 1.1's `yes` and `on`, is
/// a string to the JSON Schema and to editors, so it is refused here too rather than converted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bool(pub(crate) bool);

impl<'de> Deserialize<'de> for Bool {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct BoolVisitor;
        impl Visitor<'_> for BoolVisitor {
            type Value = Bool;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("true or false (not quoted)")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Bool, E> {
                Ok(Bool(v))
            }
        }
        // As for `Integer`: the YAML decides the type, and only a real boolean is accepted
        // (the parser runs with strict YAML 1.2 booleans, so `yes` is a string).
        d.deserialize_any(BoolVisitor)
    }
}

impl JsonSchema for Bool {
    fn schema_name() -> Cow<'static, str> {
        "Boolean".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "boolean"})
    }
}

impl JsonSchema for Integer {
    fn schema_name() -> Cow<'static, str> {
        "Integer".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "integer", "minimum": 0})
    }
}
