//! The checked-in `timctl.schema.json` is exactly what `timctl schema` prints, and the schema
//! says what the parser enforces.

use std::path::Path;

fn schema(draft: &str) -> serde_json::Value {
    let out = timctl_tests::succeeds(timctl_tests::timctl().args(["schema", "--draft", draft]));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn checked_in_schema_is_up_to_date() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let file = std::fs::read_to_string(root.join("timctl.schema.json")).unwrap();
    let out = timctl_tests::timctl().arg("schema").output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout) == file,
        "timctl.schema.json is out of date: run `cargo run -p timctl -- schema --out timctl.schema.json`"
    );
}

#[test]
fn schema_out_writes_the_same_as_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.json");
    let out = timctl_tests::succeeds(
        timctl_tests::timctl()
            .args(["schema", "--draft", "07", "--out"])
            .arg(&path),
    );
    assert!(out.stdout.is_empty(), "--out prints nothing on stdout");
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(written, schema("07"));
}

/// Every property of every object schema has a description.
fn assert_described(v: &serde_json::Value, at: &str) {
    if let Some(props) = v.get("properties").and_then(|p| p.as_object()) {
        for (name, prop) in props {
            assert!(
                prop.get("description").is_some(),
                "{at}/{name} has no description"
            );
        }
    }
    match v {
        serde_json::Value::Object(m) => m
            .iter()
            .for_each(|(k, x)| assert_described(x, &format!("{at}/{k}"))),
        serde_json::Value::Array(a) => a.iter().for_each(|x| assert_described(x, at)),
        _ => {}
    }
}

#[test]
fn both_drafts_say_everything_a_schema_can_say() {
    for (draft, meta, defs) in [
        (
            "2020-12",
            "https://json-schema.org/draft/2020-12/schema",
            "$defs",
        ),
        (
            "07",
            "http://json-schema.org/draft-07/schema#",
            "definitions",
        ),
    ] {
        let s = schema(draft);
        assert_eq!(s["$schema"], meta);
        assert_described(&s, draft);
        assert_eq!(s["additionalProperties"], false);
        assert_eq!(s["required"], serde_json::json!(["version"]));
        let d = &s[defs];
        assert_eq!(d["Version"]["const"], 1);
        for (name, max) in [("UserId", 32), ("GroupId", 48)] {
            assert_eq!(d[name]["minLength"], 1);
            assert_eq!(d[name]["maxLength"], max);
            assert_eq!(d[name]["pattern"], "^[ -~]*$");
        }
        for obj in ["AppSpec", "Defaults", "EntrySpec"] {
            assert_eq!(d[obj]["additionalProperties"], false, "{obj}");
        }
        assert_eq!(
            d["EntrySpec"]["oneOf"],
            serde_json::json!([{"required": ["user"]}, {"required": ["group"]}])
        );
        let regions: Vec<&str> = d["Region"]["oneOf"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["const"].as_str().unwrap())
            .collect();
        assert_eq!(regions.len(), timctl_core::api::Region::ALL.len());
        assert!(regions.contains(&"silicon-valley"));
        assert_eq!(s["examples"][0]["version"], 1);
    }
}

#[test]
fn the_blocks_are_objects_not_objects_or_null() {
    // A nullable block made check-jsonschema answer a typo inside it with "is not of type
    // 'null'" (issue 25.3): `app`, `defaults` and `absent` are plain references.
    for draft in ["2020-12", "07"] {
        let s = schema(draft);
        for block in ["app", "defaults", "absent"] {
            let prop = &s["properties"][block];
            // Draft 07 puts a `$ref` with siblings under `allOf`.
            let reference = prop.get("$ref").or_else(|| prop["allOf"][0].get("$ref"));
            assert!(reference.is_some(), "{draft} {block}: {prop}");
            assert!(
                prop.get("anyOf").is_none() && !prop.to_string().contains("null"),
                "{draft} {block}: {prop}"
            );
        }
    }
}
