//! The spec as written: YAML deserialised into plain structs, with the source location of every
//! value a later check may need to point at. Nothing here judges the content; see `model`.

use serde::Deserialize;
use serde_saphyr::Spanned;

/// One spec file. Every section is optional, so the public error codes and the regions can live
/// in a file of their own, shared by every endpoint file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SpecFile {
    #[serde(default)]
    pub(crate) query: Vec<QueryParam>,
    #[serde(default)]
    pub(crate) public_errors: Vec<ErrorSpec>,
    #[serde(default)]
    pub(crate) regions: Vec<RegionSpec>,
    #[serde(default)]
    pub(crate) endpoints: Vec<EndpointSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct QueryParam {
    pub(crate) name: Spanned<String>,
    pub(crate) description: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ErrorSpec {
    pub(crate) code: Spanned<i64>,
    pub(crate) name: Spanned<String>,
    pub(crate) class: Spanned<String>,
    pub(crate) meaning: String,
    pub(crate) action: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RegionSpec {
    pub(crate) name: Spanned<String>,
    pub(crate) rust: Spanned<String>,
    pub(crate) host: Spanned<String>,
    pub(crate) description: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EndpointSpec {
    pub(crate) name: Spanned<String>,
    pub(crate) path: Spanned<String>,
    pub(crate) summary: String,
    #[serde(default)]
    pub(crate) description: Option<String>,
    pub(crate) calls_per_second: Spanned<u32>,
    pub(crate) request: Vec<Spanned<ItemSpec>>,
    pub(crate) response: Vec<Spanned<ItemSpec>>,
    #[serde(default)]
    pub(crate) errors: Vec<ErrorSpec>,
}

/// A body item: a plain field (`field:` gives its wire name) or a Type-keyed union (`union:`
/// gives its Rust name). Both kinds share one struct so that serde-saphyr keeps the locations
/// (an untagged enum would lose them); `model` checks that the keys fit the kind.
///
/// `items:` belongs to `type: array`; `enum:` names the Rust type of a union or of a
/// `type: int_enum` field, whose named integers are `values:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ItemSpec {
    pub(crate) field: Option<Spanned<String>>,
    pub(crate) union: Option<Spanned<String>>,
    pub(crate) rust: Option<Spanned<String>>,
    #[serde(rename = "type")]
    pub(crate) ty: Option<Spanned<String>>,
    pub(crate) required: Option<bool>,
    pub(crate) role: Option<Spanned<String>>,
    pub(crate) description: Option<String>,
    #[serde(rename = "enum")]
    pub(crate) enum_name: Option<Spanned<String>>,
    pub(crate) tag: Option<Spanned<String>>,
    pub(crate) variants: Option<Spanned<Vec<VariantSpec>>>,
    pub(crate) items: Option<Spanned<ArraySpec>>,
    pub(crate) values: Option<Spanned<Vec<EnumValueSpec>>>,
}

/// What an array holds: a scalar (`type:`) or objects (`struct:` names their Rust type,
/// `fields:` their items, which may include a union).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ArraySpec {
    #[serde(rename = "type")]
    pub(crate) ty: Option<Spanned<String>>,
    #[serde(rename = "struct")]
    pub(crate) struct_name: Option<Spanned<String>>,
    pub(crate) description: Option<String>,
    pub(crate) fields: Option<Vec<Spanned<ItemSpec>>>,
}

/// One named value of a `type: int_enum` field.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EnumValueSpec {
    pub(crate) value: Spanned<i64>,
    pub(crate) name: Spanned<String>,
    pub(crate) description: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct VariantSpec {
    pub(crate) tag: Spanned<i64>,
    pub(crate) name: Spanned<String>,
    pub(crate) description: String,
    #[serde(default)]
    pub(crate) fields: Vec<Spanned<ItemSpec>>,
}
