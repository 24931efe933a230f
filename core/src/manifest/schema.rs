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

/// The JSON Schema of one manifest file, in the given draft.
pub fn schema(draft: Draft) -> serde_json::Value {
    let settings = match draft {
        Draft::Draft2020_12 => SchemaSettings::draft2020_12(),
        Draft::Draft07 => SchemaSettings::draft07(),
    };
    let schema = settings
        .into_generator()
        .into_root_schema_for::<super::model::ManifestFile>();
    schema.to_value()
}
