//! Property tests of the parsers that read what comes from outside (issue 11): the manifest
//! loader, UserSig verification and saved-plan reading. None may panic; every refusal says
//! where.
//!
//! CI runs proptest's default of 256 cases per property. To search longer:
//! `PROPTEST_CASES=100000 cargo test --release -p timctl-tests --test properties`.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use timctl_core::plan::saved::{self, PlanFileError};
use timctl_core::usersig::{self, SecretKey};

// ----- the manifest loader -----

/// Loads one manifest file holding `bytes`, and checks what every refusal must have: the
/// file it is about, a message and a help text. Returns the problems' positions.
fn load_and_check(bytes: &[u8]) -> Result<Vec<Option<(u32, u32)>>, TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("timctl.yaml");
    std::fs::write(&path, bytes).unwrap();
    match timctl_core::manifest::load(std::slice::from_ref(&path)) {
        Ok(_) => Ok(Vec::new()),
        Err(errors) => {
            prop_assert!(!errors.problems().is_empty(), "an error names a problem");
            let mut positions = Vec::new();
            for p in errors.problems() {
                prop_assert_eq!(&p.file, &path, "{}", p.message);
                prop_assert!(!p.message.is_empty() && !p.help.is_empty());
                if let Some(pos) = p.position {
                    prop_assert!(pos.line >= 1 && pos.column >= 1, "{:?}", pos);
                }
                // "No manifest has an `app` block" is about the run, not a place in a file.
                if !p.message.contains("no manifest has an `app` block") {
                    positions.push(p.position.map(|pos| (pos.line, pos.column)));
                }
            }
            // Each problem once: no two at one place with one message.
            let mut seen = std::collections::HashSet::new();
            for p in errors.problems() {
                prop_assert!(
                    seen.insert((p.position, p.message.clone())),
                    "reported twice: {} {:?}",
                    p.message,
                    p.position
                );
            }
            // Rendering the report (with its code frame) must not panic either.
            let _ = format!("{:?}", miette::Report::new(errors));
            Ok(positions)
        }
    }
}

/// A YAML tree: maps, lists and scalars, with keys and values drawn from the manifest's own
/// vocabulary often enough to get past the first checks.
#[derive(Clone, Debug)]
enum Yaml {
    Scalar(String),
    List(Vec<Yaml>),
    Map(Vec<(String, Yaml)>),
}

fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "1",
            "2",
            "0",
            "-1",
            "1400000001",
            "99999999999999999999999",
            "true",
            "false",
            "null",
            "~",
            "singapore",
            "administrator",
            "alice",
            "'@TGS#2C5SZEAEF'",
            "''",
            "1.5",
            "0x10",
            "[]",
            "{}",
        ])
        .prop_map(str::to_owned),
        // Any printable text, single-quoted (the one YAML style with a single escape).
        "[ -~]{0,40}".prop_map(|s| format!("'{}'", s.replace('\'', "''"))),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "version",
            "app",
            "sdkappid",
            "region",
            "admin",
            "absent",
            "user",
            "group",
            "clear_roaming",
            "alice",
            "bob",
        ])
        .prop_map(str::to_owned),
        "[a-z_]{1,12}",
    ]
}

fn yaml() -> impl Strategy<Value = Yaml> {
    scalar()
        .prop_map(Yaml::Scalar)
        .prop_recursive(5, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Yaml::List),
                prop::collection::vec((key(), inner), 0..6).prop_map(Yaml::Map),
            ]
        })
}

/// Block-style YAML text for `node`, indented by `indent`.
fn render(node: &Yaml, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match node {
        Yaml::Scalar(s) => {
            out.push_str(s);
            out.push('\n');
        }
        Yaml::List(items) if items.is_empty() => out.push_str("[]\n"),
        Yaml::Map(entries) if entries.is_empty() => out.push_str("{}\n"),
        Yaml::List(items) => {
            out.push('\n');
            for item in items {
                out.push_str(&pad);
                out.push_str("- ");
                render(item, indent + 2, out);
            }
        }
        Yaml::Map(entries) => {
            out.push('\n');
            for (k, v) in entries {
                out.push_str(&pad);
                out.push_str(k);
                out.push_str(": ");
                render(v, indent + 2, out);
            }
        }
    }
}

/// A whole document: a top-level map, usually with `version: 1` and an `app` block.
fn document() -> impl Strategy<Value = String> {
    (
        any::<bool>(),
        prop::collection::vec((key(), yaml()), 0..6),
        yaml(),
    )
        .prop_map(|(header, entries, absent)| {
            let mut text = String::new();
            if header {
                text.push_str(
                    "version: 1\napp:\n  sdkappid: 1400000001\n  region: singapore\n  admin: administrator\n",
                );
                text.push_str("absent: ");
                render(&absent, 2, &mut text);
            }
            for (k, v) in &entries {
                text.push_str(k);
                text.push_str(": ");
                render(v, 2, &mut text);
            }
            text
        })
}

proptest! {
    #[test]
    fn the_manifest_loader_places_every_refusal_of_arbitrary_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        load_and_check(&bytes)?;
    }

    #[test]
    fn the_manifest_loader_places_every_refusal_of_arbitrary_yaml_trees(text in document()) {
        // The text is well-formed YAML, so every problem but one about the file as a whole
        // (empty, or no app block in the run) has a line and a column.
        let positions = load_and_check(text.as_bytes())?;
        let blank = text.trim().is_empty();
        for pos in positions {
            prop_assert!(pos.is_some() || blank, "an unplaced problem in\n{}", text);
        }
    }
}

// ----- timctl fmt -----

/// One generated entry: (is a group, peer ID, clear_roaming as written).
type GenEntry = (bool, String, Option<bool>);

/// A valid manifest, to be written out in many equivalent ways.
#[derive(Clone, Debug)]
struct GenManifest {
    /// Users unique, peers unique per user.
    users: Vec<(String, Vec<GenEntry>)>,
    default_clear: Option<bool>,
    /// The top-level keys in file order (a permutation of the four, `defaults` maybe left out).
    order: Vec<&'static str>,
    /// Per place, whether to write flow style, quote, and put a comment there.
    choices: Vec<bool>,
}

fn gen_id() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "alice", "bob", "carol", "dave", "o'neil", "a.b-c", "123", "true"
        ])
        .prop_map(str::to_owned),
        "[a-z][a-z0-9_]{0,6}",
        "[ -~]{1,10}".prop_filter("no leading or trailing blank", |s| s.trim() == s),
    ]
}

fn gen_manifest() -> impl Strategy<Value = GenManifest> {
    (
        prop::collection::btree_map(
            gen_id(),
            prop::collection::btree_map(
                (any::<bool>(), gen_id()),
                prop::option::of(any::<bool>()),
                0..4,
            ),
            0..5,
        ),
        prop::option::of(any::<bool>()),
        Just(vec!["version", "app", "defaults", "absent"]).prop_shuffle(),
        any::<bool>(),
        prop::collection::vec(any::<bool>(), 64),
    )
        .prop_map(
            |(users, default_clear, mut order, keep_defaults, choices)| {
                if !keep_defaults {
                    order.retain(|k| *k != "defaults");
                }
                let mut users: Vec<_> = users
                    .into_iter()
                    .map(|(u, entries)| {
                        let entries: Vec<_> =
                            entries.into_iter().map(|((g, p), c)| (g, p, c)).collect();
                        (u, entries)
                    })
                    .collect();
                // Not in sorted order in the file.
                users.reverse();
                GenManifest {
                    users,
                    default_clear,
                    order,
                    choices,
                }
            },
        )
}

/// Double-quoted YAML for any printable-ASCII ID.
fn dq(id: &str) -> String {
    format!("\"{}\"", id.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Writes `m` as YAML with a comment in every place the grammar allows one (each unique:
/// `# cN`), flow or block style and quoting chosen by `m.choices`. Returns the text and the
/// comments it holds.
fn render_manifest(m: &GenManifest) -> (String, Vec<String>) {
    let mut out = String::new();
    let mut comments = Vec::new();
    let mut pick = {
        let mut i = 0;
        let choices = m.choices.clone();
        move || {
            i += 1;
            choices[i % choices.len()]
        }
    };
    let comment = |comments: &mut Vec<String>| {
        let c = format!("# c{}", comments.len());
        comments.push(c.clone());
        c
    };
    let own_line = |out: &mut String, indent: usize, comments: &mut Vec<String>| {
        let c = comment(comments);
        out.push_str(&format!("{}{c}\n", " ".repeat(indent)));
    };
    own_line(&mut out, 0, &mut comments);
    for key in &m.order {
        own_line(&mut out, 0, &mut comments);
        if pick() {
            out.push('\n');
        }
        match *key {
            "version" => {
                let c = comment(&mut comments);
                out.push_str(&format!("version: 1 {c}\n"));
            }
            "app" => {
                if pick() {
                    let c = comment(&mut comments);
                    out.push_str(&format!(
                        "app: {{admin: administrator, region: singapore, sdkappid: 1400000001}}  {c}\n"
                    ));
                } else {
                    let c = comment(&mut comments);
                    out.push_str(&format!("app:   {c}\n"));
                    for line in [
                        "region: singapore",
                        "admin: \"administrator\"",
                        "sdkappid: 1400000001",
                    ] {
                        own_line(&mut out, 2, &mut comments);
                        let c = comment(&mut comments);
                        out.push_str(&format!("  {line} {c}\n"));
                    }
                }
            }
            "defaults" => {
                let c = comment(&mut comments);
                match m.default_clear {
                    Some(b) => {
                        out.push_str(&format!("defaults: {c}\n"));
                        own_line(&mut out, 2, &mut comments);
                        let c = comment(&mut comments);
                        out.push_str(&format!("  clear_roaming: {b}    {c}\n"));
                    }
                    None => out.push_str(&format!("defaults: {{}} {c}\n")),
                }
            }
            _ => {
                let c = comment(&mut comments);
                if m.users.is_empty() {
                    out.push_str(&format!("absent: {{}} {c}\n"));
                    continue;
                }
                out.push_str(&format!("absent: {c}\n"));
                for (user, entries) in &m.users {
                    own_line(&mut out, 2, &mut comments);
                    let c = comment(&mut comments);
                    if entries.is_empty() {
                        out.push_str(&format!("  {}: [] {c}\n", dq(user)));
                        continue;
                    }
                    out.push_str(&format!("  {}: {c}\n", dq(user)));
                    for (group, peer, clear) in entries {
                        let kind = if *group { "group" } else { "user" };
                        own_line(&mut out, 4, &mut comments);
                        let c = comment(&mut comments);
                        let peer =
                            if !group && peer.chars().all(|ch| ch.is_ascii_lowercase()) && pick() {
                                peer.clone()
                            } else {
                                dq(peer)
                            };
                        match clear {
                            Some(b) if pick() => out.push_str(&format!(
                                "    - {{clear_roaming: {b}, {kind}: {peer}}}  {c}\n"
                            )),
                            Some(b) => {
                                out.push_str(&format!("    - {kind}: {peer}  {c}\n"));
                                own_line(&mut out, 6, &mut comments);
                                let c = comment(&mut comments);
                                out.push_str(&format!("      clear_roaming: {b} {c}\n"));
                            }
                            None => out.push_str(&format!("    - {kind}: {peer}  {c}\n")),
                        }
                    }
                }
            }
        }
    }
    own_line(&mut out, 0, &mut comments);
    (out, comments)
}

fn load_text(dir: &Path, name: &str, text: &str) -> timctl_core::desired::DesiredState {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    match timctl_core::manifest::load(std::slice::from_ref(&path)) {
        Ok(state) => state,
        Err(e) => panic!(
            "{name} does not load: {:?}\n{text}",
            e.problems()
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
        ),
    }
}

proptest! {
    #[test]
    fn fmt_keeps_the_desired_state_and_every_comment_and_is_idempotent(m in gen_manifest()) {
        use timctl_core::manifest::fmt::{Formatted, format};
        let (text, comments) = render_manifest(&m);
        let dir = tempfile::tempdir().unwrap();
        let before = load_text(dir.path(), "before.yaml", &text);
        let Formatted::Yaml(once) = format(&text).unwrap() else {
            panic!("taken for JSON:\n{text}")
        };
        let after = load_text(dir.path(), "after.yaml", &once);
        prop_assert_eq!(&before.app, &after.app);
        prop_assert_eq!(&before.entries, &after.entries, "before:\n{}\nafter:\n{}", text, once);
        for c in &comments {
            prop_assert_eq!(
                once.matches(&format!("{c}\n")).count() + once.matches(&format!("{c} ")).count(),
                1,
                "{} lost or doubled:\n{}\n->\n{}", c, text, once
            );
        }
        let Formatted::Yaml(twice) = format(&once).unwrap() else {
            panic!("taken for JSON")
        };
        prop_assert_eq!(&twice, &once, "formatting twice changed it:\n{}", once);
    }
}

// ----- UserSig verification -----

/// Compresses and encodes a document the way a UserSig is encoded.
fn encode_sig(doc: &[u8]) -> String {
    use base64::Engine as _;
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut z, doc).unwrap();
    base64::engine::general_purpose::STANDARD
        .encode(z.finish().unwrap())
        .replace('+', "*")
        .replace('/', "-")
        .replace('=', "_")
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,20}".prop_map(Value::String),
        prop::sample::select(vec![
            "TLS.ver",
            "2.0",
            "TLS.identifier",
            "TLS.sdkappid",
            "TLS.time",
            "TLS.expire",
            "TLS.sig",
            "alice",
        ])
        .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    prop::sample::select(vec![
                        "TLS.ver",
                        "TLS.identifier",
                        "TLS.sdkappid",
                        "TLS.time",
                        "TLS.expire",
                        "TLS.sig",
                        "format_version",
                        "app",
                        "changes",
                        "summary",
                    ])
                    .prop_map(str::to_owned),
                    "[a-z_]{1,8}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn usersig_verification_never_accepts_arbitrary_text(
        sig in prop_oneof![".{0,300}", "[A-Za-z0-9*_-]{0,300}"],
        identifier in "[ -~]{1,16}",
    ) {
        let key = SecretKey::new("the-secret-key").unwrap();
        prop_assert!(usersig::verify(&sig, &key, 1_400_000_001, &identifier, 1_700_000_000).is_err());
    }

    #[test]
    fn usersig_verification_never_accepts_an_arbitrary_document(doc in json_value()) {
        // Well-encoded, so verification gets past the decoding to the document itself.
        let sig = encode_sig(doc.to_string().as_bytes());
        let key = SecretKey::new("the-secret-key").unwrap();
        prop_assert!(usersig::verify(&sig, &key, 1_400_000_001, "alice", 1_700_000_000).is_err());
    }
}

// ----- saved plans -----

const VALID_PLAN: &str = r#"{"format_version":1,"app":{"sdkappid":1400000001,"region":"singapore","admin":"administrator"},"state":{"lineage":"01234567-89ab-cdef-0123-456789abcdef","serial":7},"manifest_digest":"9f2c1e0b7a","changes":[{"action":"delete","from":"alice","type":"user","peer":"bob","clear_roaming":true},{"action":"forget","from":"zoe","type":"group","peer":"old|group","clear_roaming":false}],"summary":{"delete":1,"forget":1,"unchanged":1}}"#;

/// Checks that reading `text` as a plan does not panic and that a refusal names the file.
fn read_plan(text: &str) -> Result<(), TestCaseError> {
    let path = PathBuf::from("plans/saved.json");
    match saved::from_json(text, &path) {
        Ok(_) => {}
        Err(e) => {
            let shown = e.to_string();
            prop_assert!(shown.contains("plans/saved.json"), "{}", shown);
            if let PlanFileError::Syntax { line, column, .. } = e {
                prop_assert!(
                    line >= 1 && column >= 1 || text.trim().is_empty(),
                    "{}",
                    shown
                );
            }
        }
    }
    Ok(())
}

/// Every place in `value`, as the path of keys and indexes leading to it.
fn places(
    value: &serde_json::Value,
    at: &mut Vec<serde_json::Value>,
    out: &mut Vec<Vec<serde_json::Value>>,
) {
    out.push(at.clone());
    match value {
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                at.push(i.into());
                places(item, at, out);
                at.pop();
            }
        }
        serde_json::Value::Object(map) => {
            for (k, item) in map {
                at.push(k.clone().into());
                places(item, at, out);
                at.pop();
            }
        }
        _ => {}
    }
}

fn replace_at(value: &mut serde_json::Value, path: &[serde_json::Value], new: serde_json::Value) {
    let mut here = value;
    for step in path {
        here = match step {
            serde_json::Value::Number(i) => &mut here[i.as_u64().unwrap() as usize],
            serde_json::Value::String(k) => &mut here[k.as_str()],
            _ => unreachable!("places holds indexes and keys only"),
        };
    }
    *here = new;
}

proptest! {
    #[test]
    fn saved_plan_reading_refuses_arbitrary_json_clearly(doc in json_value()) {
        read_plan(&doc.to_string())?;
    }

    #[test]
    fn saved_plan_reading_refuses_arbitrary_text_clearly(text in ".{0,200}") {
        read_plan(&text)?;
    }

    #[test]
    fn saved_plan_reading_refuses_a_damaged_plan_clearly(
        place in any::<prop::sample::Index>(),
        new in json_value(),
    ) {
        let mut doc: serde_json::Value = serde_json::from_str(VALID_PLAN).unwrap();
        let mut all = Vec::new();
        places(&doc, &mut Vec::new(), &mut all);
        let at: &Vec<serde_json::Value> = place.get(&all);
        replace_at(&mut doc, at, new);
        read_plan(&doc.to_string())?;
    }
}

#[test]
fn the_valid_plan_of_these_properties_is_valid() {
    // Otherwise the damaged-plan property would only ever see refusals of the original.
    saved::from_json(VALID_PLAN, Path::new("p.json")).unwrap();
}
