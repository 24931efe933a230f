//! The manifest's JSON Schema, generated from the parser's own types.

use schemars::generate::SchemaSettings;

/// Which JSON Schema draft to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Draft {
    /// 2020-12, the current draft; the default.
    Draft2020_12,
    /// Draft-07, for older editors and validators.
    Draft07,
}

/// The schema's `$id` in draft 2020-12; draft 07, a different document, adds `:draft-07`.
///
/// A name, not a location: it stays the same wherever the file is served from (a fork, a
/// mirror, an internal host, a checked-in copy), so no hosting is promised that could go away.
/// It changes only with the manifest's `version`.
const SCHEMA_ID: &str = "urn:timctl:manifest:v1";

/// The JSON Schema of one manifest file, in the given draft.
pub fn schema(draft: Draft) -> serde_json::Value {
    let (settings, id) = match draft {
        Draft::Draft2020_12 => (SchemaSettings::draft2020_12(), SCHEMA_ID.to_owned()),
        Draft::Draft07 => (SchemaSettings::draft07(), format!("{SCHEMA_ID}:draft-07")),
    };
    let mut schema = settings
        .into_generator()
        .into_root_schema_for::<super::model::ManifestFile>();
    schema.insert("$id".to_owned(), id.into());
    schema.to_value()
}
