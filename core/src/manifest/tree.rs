//! The second reading of a manifest that did not deserialize: a generic YAML tree with the place
//! of every value, walked by hand so that every problem of the file is found, not only the
//! first one serde stopped at.
//!
//! A file that deserializes (nearly every file, and every file of a successful run) never comes
//! here: the typed reading in `mod.rs` is the fast path and this tree is built only on the
//! error path. What the walk finds well-formed is handed to the same semantic checks as the
//! typed reading (`super::check`), so IDs, versions and app blocks are judged by one piece of
//! code whichever reading produced them.

use std::fmt;

use serde::Deserialize;
use serde::de::{MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use super::model::{Bool, EntrySpec, Integer};
use super::{AppParts, HELP_SCHEMA, LoadedFile, Parts, pos_of, span_of};
use crate::api::Region;

/// A YAML value with the place of each of its parts. Mapping keys are read as strings, as the
/// typed reading reads them; a mapping may hold a key twice (read with
/// `DuplicateKeyPolicy::PassThrough`), so that every repetition can be reported.
#[derive(Debug)]
pub(super) enum Node {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Node>>),
    Map(Vec<(Spanned<String>, Spanned<Node>)>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct NodeVisitor;
        impl<'de> Visitor<'de> for NodeVisitor {
            type Value = Node;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_unit<E>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_none<E>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
                Node::deserialize(d)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
                Ok(Node::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
                Ok(Node::Int(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
                Ok(Node::Int(v.into()))
            }
            fn visit_i128<E>(self, v: i128) -> Result<Node, E> {
                Ok(Node::Int(v))
            }
            fn visit_u128<E: serde::de::Error>(self, v: u128) -> Result<Node, E> {
                Ok(i128::try_from(v).map_or(Node::Float(v as f64), Node::Int))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
                Ok(Node::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Node, E> {
                Ok(Node::Str(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<Node, E> {
                Ok(Node::Str(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Spanned<Node>>()? {
                    items.push(item);
                }
                Ok(Node::Seq(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
                let mut pairs = Vec::new();
                while let Some(key) = map.next_key::<Spanned<String>>()? {
                    let value: Spanned<Node> = map.next_value()?;
                    pairs.push((key, value));
                }
                Ok(Node::Map(pairs))
            }
        }
        d.deserialize_any(NodeVisitor)
    }
}

/// Reads `text` as a tree, under the same budgets as the typed reading, keeping repeated keys.
pub(super) fn parse(text: &str) -> Result<Spanned<Node>, serde_saphyr::Error> {
    serde_saphyr::from_str_with_options(
        text,
        super::options(text.len(), serde_saphyr::DuplicateKeyPolicy::PassThrough),
    )
}

/// How a value is named in a message: what was found where something else was expected.
fn describe(node: &Node) -> String {
    match node {
        Node::Null => "null (no value)".to_owned(),
        Node::Bool(b) => format!("the boolean {b}"),
        Node::Int(i) => format!("the integer {i}"),
        Node::Float(x) => format!("the number {x}"),
        Node::Str(s) => format!("the string {s:?}"),
        Node::Seq(_) => "a list".to_owned(),
        Node::Map(_) => "a mapping".to_owned(),
    }
}

/// The walk over one file's tree: reports into `file` and returns what is well-formed.
pub(super) struct Walk<'a> {
    file: &'a mut LoadedFile,
    text: &'a str,
}

impl<'a> Walk<'a> {
    pub(super) fn new(file: &'a mut LoadedFile, text: &'a str) -> Self {
        Walk { file, text }
    }

    fn problem(
        &mut self,
        node_pos: (super::Position, Option<(usize, usize)>),
        message: String,
        help: &str,
    ) {
        let p = self.file.problem_at(node_pos.0, node_pos.1, message, help);
        self.file.problems.push(p);
    }

    fn wrong_type<T>(&mut self, at: &Spanned<T>, path: &str, expected: &str, found: &Node) {
        self.problem(
            (pos_of(at), span_of(at)),
            format!(
                "wrong type for `{path}`: expected {expected}, found {}",
                describe(found)
            ),
            HELP_SCHEMA,
        );
    }

    /// The pairs of a mapping whose keys are among `allowed`, each key once; every other key,
    /// and every repetition, is reported.
    fn fields(
        &mut self,
        pairs: Vec<(Spanned<String>, Spanned<Node>)>,
        path: &str,
        allowed: &[&'static str],
    ) -> Vec<(&'static str, Spanned<String>, Spanned<Node>)> {
        let mut out: Vec<(&'static str, Spanned<String>, Spanned<Node>)> = Vec::new();
        for (key, value) in pairs {
            let Some(name) = allowed.iter().find(|a| **a == key.value) else {
                let list = allowed
                    .iter()
                    .map(|a| format!("`{a}`"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let within = if path.is_empty() {
                    String::new()
                } else {
                    format!(" in `{path}`")
                };
                self.problem(
                    (pos_of(&key), span_of(&key)),
                    format!(
                        "unknown field `{}`{within}, expected one of {list}",
                        key.value
                    ),
                    "remove the key or fix its spelling; the allowed keys are listed above",
                );
                continue;
            };
            if out.iter().any(|(n, _, _)| n == name) {
                self.repeated(&key);
                continue;
            }
            out.push((name, key, value));
        }
        out
    }

    fn repeated(&mut self, key: &Spanned<String>) {
        self.problem(
            (pos_of(key), span_of(key)),
            format!("the key `{}` is repeated in this mapping", key.value),
            "a key may appear once per mapping: merge the two or remove one (for a user, put all its entries under one key)",
        );
    }

    /// A non-negative integer written as a number.
    fn integer(&mut self, node: Spanned<Node>, path: &str) -> Option<Spanned<Integer>> {
        match node.value {
            Node::Int(i) if (0..=i128::from(u64::MAX)).contains(&i) => Some(Spanned::new(
                Integer(i as u64),
                node.referenced,
                node.defined,
            )),
            ref other => {
                self.wrong_type(&node, path, "a non-negative integer (not quoted)", other);
                None
            }
        }
    }

    /// A boolean written as `true` or `false`.
    fn boolean(&mut self, node: Spanned<Node>, path: &str) -> Option<Bool> {
        match node.value {
            Node::Bool(b) => Some(Bool(b)),
            ref other => {
                self.wrong_type(&node, path, "true or false (not quoted)", other);
                None
            }
        }
    }

    /// An ID: any scalar, as the typed reading takes it (a plain `123` is the ID "123"), in the
    /// spelling of the file. Its own rules are checked later, by the semantic checks.
    fn id(&mut self, node: Spanned<Node>, path: &str) -> Option<Spanned<String>> {
        let text = match &node.value {
            Node::Str(s) => s.clone(),
            Node::Bool(_) | Node::Int(_) | Node::Float(_) => match span_of(&node) {
                Some((offset, len)) => self.text.get(offset..offset + len)?.to_owned(),
                None => return None,
            },
            other => {
                let other = describe(other);
                self.problem(
                    (pos_of(&node), span_of(&node)),
                    format!("wrong type for `{path}`: expected an ID (a string), found {other}"),
                    HELP_SCHEMA,
                );
                return None;
            }
        };
        Some(Spanned::new(text, node.referenced, node.defined))
    }

    /// The whole file.
    pub(super) fn file(mut self, root: Spanned<Node>) -> Parts {
        let mut parts = Parts::default();
        let Node::Map(pairs) = root.value else {
            let found = describe(&root.value);
            self.problem(
                (pos_of(&root), span_of(&root)),
                format!("wrong type: a manifest is a mapping (`version`, `app`, `defaults`, `absent`), found {found}"),
                HELP_SCHEMA,
            );
            return parts;
        };
        let fields = self.fields(pairs, "", &["version", "app", "defaults", "absent"]);
        let mut has_version = false;
        for (name, key, value) in fields {
            match name {
                "version" => {
                    has_version = true;
                    parts.version = self.integer(value, "version");
                }
                "app" => parts.app = self.app(key, value),
                "defaults" => parts.default_clear = self.defaults(value),
                _ => parts.users = self.absent(value),
            }
        }
        if !has_version {
            self.problem(
                (super::Position { line: 1, column: 1 }, Some((0, 0))),
                "missing field `version`".to_owned(),
                "start the file with `version: 1`",
            );
        }
        parts
    }

    fn app(&mut self, key: Spanned<String>, node: Spanned<Node>) -> Option<AppParts> {
        let at = pos_of(&node);
        let pairs = match node.value {
            Node::Map(pairs) => pairs,
            // No app block: as if the key were not there (the typed reading does the same).
            Node::Null => return None,
            ref other => {
                self.wrong_type(
                    &node,
                    "app",
                    "a mapping (`sdkappid`, `region`, `admin`)",
                    other,
                );
                return Some(AppParts::broken(at));
            }
        };
        let mut app = AppParts {
            at,
            complete: true,
            ..AppParts::default()
        };
        let fields = self.fields(pairs, "app", &["sdkappid", "region", "admin"]);
        for name in ["sdkappid", "region", "admin"] {
            if !fields.iter().any(|(n, _, _)| *n == name) {
                app.complete = false;
                self.problem(
                    (pos_of(&key), span_of(&key)),
                    format!("missing field `{name}` in `app`"),
                    &format!("add `{name}:` to the app block"),
                );
            }
        }
        for (name, _, value) in fields {
            match name {
                "sdkappid" => {
                    app.sdkappid = self.integer(value, "app.sdkappid").map(|s| s.value);
                    app.complete &= app.sdkappid.is_some();
                }
                "region" => {
                    app.region = self.region(value);
                    app.complete &= app.region.is_some();
                }
                _ => {
                    app.admin = self.id(value, "app.admin");
                    app.complete &= app.admin.is_some();
                }
            }
        }
        Some(app)
    }

    fn region(&mut self, node: Spanned<Node>) -> Option<Region> {
        let Node::Str(name) = &node.value else {
            let found = describe(&node.value);
            self.problem(
                (pos_of(&node), span_of(&node)),
                format!("wrong type for `app.region`: expected a region name, found {found}"),
                "use one of the regions listed in README.md (e.g. `singapore`)",
            );
            return None;
        };
        let read = Region::deserialize(
            serde::de::value::StrDeserializer::<serde::de::value::Error>::new(name),
        );
        match read {
            Ok(region) => Some(region),
            Err(e) => {
                self.problem(
                    (pos_of(&node), span_of(&node)),
                    e.to_string(),
                    "use one of the values listed above",
                );
                None
            }
        }
    }

    fn defaults(&mut self, node: Spanned<Node>) -> bool {
        let pairs = match node.value {
            Node::Map(pairs) => pairs,
            Node::Null => return false,
            ref other => {
                self.wrong_type(&node, "defaults", "a mapping (`clear_roaming`)", other);
                return false;
            }
        };
        let mut clear = false;
        for (_, _, value) in self.fields(pairs, "defaults", &["clear_roaming"]) {
            clear = self
                .boolean(value, "defaults.clear_roaming")
                .is_some_and(|b| b.0);
        }
        clear
    }

    fn absent(&mut self, node: Spanned<Node>) -> Vec<(Spanned<String>, Vec<Spanned<EntrySpec>>)> {
        let pairs = match node.value {
            Node::Map(pairs) => pairs,
            Node::Null => return Vec::new(),
            ref other => {
                self.wrong_type(
                    &node,
                    "absent",
                    "a mapping of UserIDs to lists of conversations",
                    other,
                );
                return Vec::new();
            }
        };
        let mut users: Vec<(Spanned<String>, Vec<Spanned<EntrySpec>>)> =
            Vec::with_capacity(pairs.len());
        for (user, list) in pairs {
            if users.iter().any(|(u, _)| u.value == user.value) {
                self.repeated(&user);
                continue;
            }
            let path = format!("absent.{}", user.value);
            let items = match list.value {
                Node::Seq(items) => items,
                ref other => {
                    self.wrong_type(&list, &path, "a list of conversations", other);
                    // The user's own ID is still checked.
                    users.push((user, Vec::new()));
                    continue;
                }
            };
            let entries = items
                .into_iter()
                .filter_map(|item| self.entry(item, &path))
                .collect();
            users.push((user, entries));
        }
        users
    }

    /// One entry; `None` when it names no conversation and is already reported (a wrong type,
    /// an unknown key instead of `user`), so that it is not reported again as "neither".
    fn entry(&mut self, node: Spanned<Node>, path: &str) -> Option<Spanned<EntrySpec>> {
        let pairs = match node.value {
            Node::Map(pairs) => pairs,
            ref other => {
                self.wrong_type(
                    &node,
                    path,
                    "a conversation (`user: ID` or `group: ID`)",
                    other,
                );
                return None;
            }
        };
        let before = self.file.problems.len();
        let mut spec = EntrySpec {
            user: None,
            group: None,
            clear_roaming: None,
        };
        for (name, _, value) in self.fields(pairs, "", &["user", "group", "clear_roaming"]) {
            match name {
                "user" => spec.user = self.id(value, &format!("{path}[].user")),
                "group" => spec.group = self.id(value, &format!("{path}[].group")),
                _ => spec.clear_roaming = self.boolean(value, &format!("{path}[].clear_roaming")),
            }
        }
        let reported = self.file.problems.len() > before;
        if reported && spec.user.is_none() && spec.group.is_none() {
            return None;
        }
        Some(Spanned::new(spec, node.referenced, node.defined))
    }
}
