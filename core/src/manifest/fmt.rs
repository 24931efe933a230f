//! `timctl fmt`: one canonical layout for a manifest, comments kept.
//!
//! No well-kept Rust crate rewrites YAML and keeps its comments, so this formatter knows the
//! manifest's own small grammar: it reads the file as a tree with the place of every key and
//! value (`tree.rs`), finds the comments in the text (a `#` outside quotes, at the start of a
//! line or after a space), gives each comment to the key or entry it belongs to (a comment on
//! lines of its own to the next one, a comment at the end of a line to that line's), and writes
//! the tree out again:
//!
//! - top-level keys in the order `version`, `app`, `defaults`, `absent`; `app` as `sdkappid`,
//!   `region`, `admin`;
//! - users sorted by ID, and each user's entries in the order of the desired state (users,
//!   then groups, each by ID), every entry in block style (`- user: ID`, then `clear_roaming`
//!   if the file gives it, as `true` or `false`);
//! - two spaces of indentation, group IDs always double-quoted, other IDs plain when YAML reads
//!   them back as the same string and double-quoted otherwise; no blank lines;
//! - a comment at the end of a line keeps its column when the line is short enough, so aligned
//!   comments stay aligned.
//!
//! A manifest written as JSON is left as it is ([`Formatted::Json`]). The result loads to the
//! same desired state, and formatting it again changes nothing (`tests/tests/properties.rs`).

use std::collections::HashMap;

use serde_saphyr::Spanned;

use super::tree::{self, Node};
use crate::ids::{GroupId, Peer, UserId};

/// What formatting a manifest gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Formatted {
    /// The text in the canonical layout (the same text when it already was).
    Yaml(String),
    /// The manifest is written as JSON (which YAML reads too); it is left as it is.
    Json,
}

/// Why a manifest could not be formatted. The command validates the manifests first, so these
/// are reached only by text that does not validate.
#[derive(Debug, thiserror::Error)]
pub enum FmtError {
    /// Not YAML at all.
    #[error("the manifest is not well-formed YAML: {0}")]
    Yaml(String),
    /// Well-formed, but not the shape of a manifest.
    #[error("the manifest does not have the shape fmt knows: {0}")]
    Shape(&'static str),
}

/// Formats one manifest's text. Pure: text in, text out.
pub fn format(text: &str) -> Result<Formatted, FmtError> {
    if is_json(text) {
        return Ok(Formatted::Json);
    }
    let root = tree::parse(text).map_err(|e| FmtError::Yaml(e.to_string()))?;
    let (manifest, anchors) = read(root)?;
    let comments = Comments::find(text, &anchors);
    Ok(Formatted::Yaml(write(&manifest, &comments)))
}

/// Whether the document is written as JSON: its first character that is not blank or in a
/// comment opens a flow mapping.
fn is_json(text: &str) -> bool {
    text.lines()
        .map(str::trim_start)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .is_some_and(|l| l.starts_with('{'))
}

/// Whom a comment belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Owner {
    Top(&'static str),
    App(&'static str),
    DefaultsClear,
    User(usize),
    Entry(usize, usize),
    EntryField(usize, usize, &'static str),
}

/// A manifest as fmt writes it; indices are the file's order, kept so comments find their owner.
#[derive(Default)]
struct Manifest {
    version: Option<String>,
    app: Option<Option<App>>,
    defaults: Option<Option<bool>>,
    absent: Option<Vec<User>>,
    /// The top-level keys present, to write comments of a key that writes nothing.
    tops: Vec<&'static str>,
}

struct App {
    fields: Vec<(&'static str, String)>,
}

struct User {
    index: usize,
    id: String,
    entries: Vec<Entry>,
}

struct Entry {
    index: usize,
    /// ("user" or "group", the ID).
    peer: (&'static str, String),
    clear_roaming: Option<bool>,
}

/// Places of keys and entries: (line, column, owner).
type Anchors = Vec<(u64, u64, Owner)>;

fn at<T>(s: &Spanned<T>) -> (u64, u64) {
    (s.referenced.line(), s.referenced.column())
}

/// The scalar's text as a string (IDs may be written as plain numbers or booleans).
fn scalar(node: &Spanned<Node>) -> Result<String, FmtError> {
    match &node.value {
        Node::Str(s) => Ok(s.clone()),
        Node::Int(i) => Ok(i.to_string()),
        Node::Bool(b) => Ok(b.to_string()),
        _ => Err(FmtError::Shape("an ID or value is not a scalar")),
    }
}

fn read(root: Spanned<Node>) -> Result<(Manifest, Anchors), FmtError> {
    let mut anchors = Anchors::new();
    let mut m = Manifest::default();
    let Node::Map(pairs) = root.value else {
        return Err(FmtError::Shape("the document is not a mapping"));
    };
    for (key, value) in pairs {
        let name: &'static str = match key.value.as_str() {
            "version" => "version",
            "app" => "app",
            "defaults" => "defaults",
            "absent" => "absent",
            _ => return Err(FmtError::Shape("an unknown top-level key")),
        };
        let (l, c) = at(&key);
        anchors.push((l, c, Owner::Top(name)));
        m.tops.push(name);
        match name {
            "version" => m.version = Some(scalar(&value)?),
            "app" => m.app = Some(read_app(value, &mut anchors)?),
            "defaults" => m.defaults = Some(read_defaults(value, &mut anchors)?),
            _ => m.absent = Some(read_absent(value, &mut anchors)?),
        }
    }
    Ok((m, anchors))
}

fn read_app(node: Spanned<Node>, anchors: &mut Anchors) -> Result<Option<App>, FmtError> {
    let pairs = match node.value {
        Node::Map(pairs) => pairs,
        Node::Null => return Ok(None),
        _ => return Err(FmtError::Shape("`app` is not a mapping")),
    };
    let mut fields = Vec::new();
    for (key, value) in pairs {
        let name: &'static str = match key.value.as_str() {
            "sdkappid" => "sdkappid",
            "region" => "region",
            "admin" => "admin",
            _ => return Err(FmtError::Shape("an unknown key in `app`")),
        };
        let (l, c) = at(&key);
        anchors.push((l, c, Owner::App(name)));
        let text = match name {
            "admin" => quote_user(&scalar(&value)?),
            _ => scalar(&value)?,
        };
        fields.push((name, text));
    }
    let rank = |n: &str| ["sdkappid", "region", "admin"].iter().position(|x| *x == n);
    fields.sort_by_key(|(n, _)| rank(n));
    Ok(Some(App { fields }))
}

fn boolean(node: &Spanned<Node>) -> Result<bool, FmtError> {
    match node.value {
        Node::Bool(b) => Ok(b),
        _ => Err(FmtError::Shape("`clear_roaming` is not true or false")),
    }
}

fn read_defaults(node: Spanned<Node>, anchors: &mut Anchors) -> Result<Option<bool>, FmtError> {
    let pairs = match node.value {
        Node::Map(pairs) => pairs,
        Node::Null => return Ok(None),
        _ => return Err(FmtError::Shape("`defaults` is not a mapping")),
    };
    let mut clear = None;
    for (key, value) in pairs {
        if key.value != "clear_roaming" {
            return Err(FmtError::Shape("an unknown key in `defaults`"));
        }
        let (l, c) = at(&key);
        anchors.push((l, c, Owner::DefaultsClear));
        clear = Some(boolean(&value)?);
    }
    Ok(clear)
}

fn read_absent(node: Spanned<Node>, anchors: &mut Anchors) -> Result<Vec<User>, FmtError> {
    let pairs = match node.value {
        Node::Map(pairs) => pairs,
        Node::Null => return Ok(Vec::new()),
        _ => return Err(FmtError::Shape("`absent` is not a mapping")),
    };
    let mut users = Vec::with_capacity(pairs.len());
    for (u, (key, list)) in pairs.into_iter().enumerate() {
        let (l, c) = at(&key);
        anchors.push((l, c, Owner::User(u)));
        let items = match list.value {
            Node::Seq(items) => items,
            _ => return Err(FmtError::Shape("a user's entries are not a list")),
        };
        let mut entries = Vec::with_capacity(items.len());
        for (e, item) in items.into_iter().enumerate() {
            let (l, c) = at(&item);
            anchors.push((l, c, Owner::Entry(u, e)));
            let Node::Map(fields) = item.value else {
                return Err(FmtError::Shape("an entry is not a mapping"));
            };
            let mut peer = None;
            let mut clear_roaming = None;
            for (field, value) in fields {
                let name: &'static str = match field.value.as_str() {
                    "user" => "user",
                    "group" => "group",
                    "clear_roaming" => "clear_roaming",
                    _ => return Err(FmtError::Shape("an unknown key in an entry")),
                };
                let (l, c) = at(&field);
                anchors.push((l, c, Owner::EntryField(u, e, name)));
                match name {
                    "clear_roaming" => clear_roaming = Some(boolean(&value)?),
                    kind => peer = Some((kind, scalar(&value)?)),
                }
            }
            let peer = peer.ok_or(FmtError::Shape("an entry names no conversation"))?;
            entries.push(Entry {
                index: e,
                peer,
                clear_roaming,
            });
        }
        // The desired state's order (users, then groups, each by ID); IDs that do not validate (fmt runs on valid files) keep
        // their place after the valid ones, by text.
        entries.sort_by_key(|e| sort_key(&e.peer));
        users.push(User {
            index: u,
            id: key.value,
            entries,
        });
    }
    users.sort_by(|a, b| a.id.as_bytes().cmp(b.id.as_bytes()));
    Ok(users)
}

fn sort_key(peer: &(&'static str, String)) -> (bool, Option<Peer>, String) {
    let parsed = match peer.0 {
        "user" => UserId::new(peer.1.as_str()).ok().map(Peer::User),
        _ => GroupId::new(peer.1.as_str()).ok().map(Peer::Group),
    };
    (parsed.is_none(), parsed, peer.1.clone())
}

/// The comments of a file, by owner: the lines before it, and the one at the end of its line
/// with that comment's column.
#[derive(Default)]
struct Comments {
    leading: HashMap<Owner, Vec<String>>,
    trailing: HashMap<Owner, (usize, String)>,
    /// Comments before the first key (a modeline, a header): they stay at the top.
    head: Vec<String>,
    /// Comments after the last key or entry.
    end: Vec<String>,
}

impl Comments {
    fn find(text: &str, anchors: &Anchors) -> Comments {
        let mut sorted = anchors.clone();
        sorted.sort_by_key(|(l, c, _)| (*l, *c));
        let mut out = Comments::default();
        for (i, line) in text.lines().enumerate() {
            let line_no = i as u64 + 1;
            let Some((code, comment)) = split_comment(line) else {
                continue;
            };
            let comment = comment.trim_end().to_owned();
            if code.trim().is_empty() || code.trim() == "-" || code.trim() == "---" {
                if sorted.first().is_none_or(|(l, _, _)| *l > line_no) {
                    out.head.push(comment);
                    continue;
                }
                match sorted.iter().find(|(l, _, _)| *l > line_no) {
                    Some((_, _, owner)) => out.leading.entry(*owner).or_default().push(comment),
                    None => out.end.push(comment),
                }
            } else {
                // The last key or entry that starts on this line; else the last one before it.
                let owner = sorted
                    .iter()
                    .rev()
                    .find(|(l, _, _)| *l == line_no)
                    .or_else(|| sorted.iter().rev().find(|(l, _, _)| *l < line_no));
                let column = code.chars().count();
                match owner {
                    Some((_, _, owner)) => {
                        let slot = out
                            .trailing
                            .entry(*owner)
                            .or_insert((column, String::new()));
                        if !slot.1.is_empty() {
                            slot.1.push(' ');
                        }
                        slot.1.push_str(&comment);
                    }
                    None => out.end.push(comment),
                }
            }
        }
        out
    }
}

/// Splits a line into its code and its comment (`# …`), if it has one: a `#` at the start of
/// the line or after a blank, outside a quoted scalar. A quote opens a scalar only where a
/// scalar starts (after `: `, `- `, `[`, `{`, `,` or at the start), so an apostrophe inside a
/// plain scalar is not taken for one.
fn split_comment(line: &str) -> Option<(&str, &str)> {
    let mut quote: Option<char> = None;
    let mut prev: Option<char> = None;
    let mut last_significant: Option<char> = None;
    let mut chars = line.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match quote {
            Some('"') => {
                if c == '\\' {
                    chars.next();
                } else if c == '"' {
                    quote = None;
                }
            }
            Some(_) => {
                if c == '\'' {
                    if chars.peek().is_some_and(|(_, n)| *n == '\'') {
                        chars.next();
                    } else {
                        quote = None;
                    }
                }
            }
            None => {
                if c == '#' && prev.is_none_or(char::is_whitespace) {
                    return Some((&line[..i], &line[i..]));
                }
                if (c == '"' || c == '\'')
                    && last_significant
                        .is_none_or(|p| matches!(p, ':' | '-' | '[' | '{' | ',' | '?'))
                    && prev.is_none_or(|p| p.is_whitespace() || matches!(p, '[' | '{' | ','))
                {
                    quote = Some(c);
                }
            }
        }
        if !c.is_whitespace() {
            last_significant = Some(c);
        }
        prev = Some(c);
    }
    None
}

/// An ID as a plain scalar when YAML reads it back as this very string, else double-quoted.
fn quote_user(id: &str) -> String {
    let plain_safe = id
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '@' | '/'))
        && !matches!(
            id.to_ascii_lowercase().as_str(),
            "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "y" | "n"
        );
    if plain_safe { id.to_owned() } else { quote(id) }
}

/// A double-quoted scalar (IDs are printable ASCII, so only `"` and `\` need escaping).
fn quote(id: &str) -> String {
    let mut out = String::with_capacity(id.len() + 2);
    out.push('"');
    for c in id.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (' '..='~').contains(&c) => out.push(c),
            c => out.push_str(&format!("\\u{:04X}", c as u32)),
        }
    }
    out.push('"');
    out
}

struct Writer<'a> {
    out: String,
    comments: &'a Comments,
}

impl Writer<'_> {
    fn leading(&mut self, owner: Owner, indent: usize) {
        if let Some(lines) = self.comments.leading.get(&owner) {
            for l in lines {
                self.out.push_str(&" ".repeat(indent));
                self.out.push_str(l);
                self.out.push('\n');
            }
        }
    }

    /// Writes `line` (already indented) and the trailing comments of `owners`.
    fn line(&mut self, line: &str, owners: &[Owner]) {
        self.out.push_str(line);
        let mut trailing: Vec<&(usize, String)> = owners
            .iter()
            .filter_map(|o| self.comments.trailing.get(o))
            .collect();
        trailing.dedup_by(|a, b| a.1 == b.1);
        if let Some(first) = trailing.first() {
            let width = line.chars().count();
            let pad = if first.0 > width { first.0 - width } else { 2 };
            self.out.push_str(&" ".repeat(pad));
            let text: Vec<&str> = trailing.iter().map(|t| t.1.as_str()).collect();
            self.out.push_str(&text.join(" "));
        }
        self.out.push('\n');
    }
}

fn write(m: &Manifest, comments: &Comments) -> String {
    let mut w = Writer {
        out: String::new(),
        comments,
    };
    for l in &comments.head {
        w.out.push_str(l);
        w.out.push('\n');
    }
    for top in ["version", "app", "defaults", "absent"] {
        if !m.tops.contains(&top) {
            continue;
        }
        let owner = Owner::Top(top);
        w.leading(owner, 0);
        match top {
            "version" => {
                let v = m.version.clone().unwrap_or_default();
                w.line(&format!("version: {v}"), &[owner]);
            }
            "app" => match m.app.as_ref().and_then(Option::as_ref) {
                None => w.line("app:", &[owner]),
                Some(app) => {
                    w.line("app:", &[owner]);
                    for (name, value) in &app.fields {
                        w.leading(Owner::App(name), 2);
                        w.line(&format!("  {name}: {value}"), &[Owner::App(name)]);
                    }
                }
            },
            "defaults" => match m.defaults.flatten() {
                None => w.line("defaults: {}", &[owner]),
                Some(b) => {
                    w.line("defaults:", &[owner]);
                    w.leading(Owner::DefaultsClear, 2);
                    w.line(&format!("  clear_roaming: {b}"), &[Owner::DefaultsClear]);
                }
            },
            _ => {
                let users = m.absent.as_deref().unwrap_or_default();
                if users.is_empty() {
                    w.line("absent: {}", &[owner]);
                    continue;
                }
                w.line("absent:", &[owner]);
                for user in users {
                    let u = user.index;
                    w.leading(Owner::User(u), 2);
                    // An empty list stays a list: `user:` alone would be null, an error.
                    let empty = if user.entries.is_empty() { " []" } else { "" };
                    w.line(
                        &format!("  {}:{empty}", quote_user(&user.id)),
                        &[Owner::User(u)],
                    );
                    for entry in &user.entries {
                        write_entry(&mut w, u, entry);
                    }
                }
            }
        }
    }
    for l in &comments.end {
        w.out.push_str(l);
        w.out.push('\n');
    }
    w.out
}

fn write_entry(w: &mut Writer<'_>, u: usize, entry: &Entry) {
    let e = entry.index;
    let (kind, id) = &entry.peer;
    let value = if *kind == "group" {
        quote(id)
    } else {
        quote_user(id)
    };
    w.leading(Owner::Entry(u, e), 4);
    w.leading(Owner::EntryField(u, e, kind), 4);
    let first = [Owner::Entry(u, e), Owner::EntryField(u, e, kind)];
    w.line(&format!("    - {kind}: {value}"), &first);
    if let Some(b) = entry.clear_roaming {
        let owner = Owner::EntryField(u, e, "clear_roaming");
        w.leading(owner, 6);
        w.line(&format!("      clear_roaming: {b}"), &[owner]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> String {
        match format(text).unwrap() {
            Formatted::Yaml(s) => s,
            Formatted::Json => panic!("taken for JSON"),
        }
    }

    #[test]
    fn sorts_orders_quotes_and_keeps_comments() {
        let text = "\
# top comment
absent:
  # carol's
  carol:
    - user: dave   # trailing
  alice:
    - {user: zed, clear_roaming: true}
    # before the group
    - group: '@TGS#2C'
version: 1
app: {admin: administrator, region: singapore, sdkappid: 1400000001}
# the end
";
        let want = "\
# top comment
version: 1
app:
  sdkappid: 1400000001
  region: singapore
  admin: administrator
absent:
  alice:
    - user: zed
      clear_roaming: true
    # before the group
    - group: \"@TGS#2C\"
  # carol's
  carol:
    - user: dave   # trailing
# the end
";
        assert_eq!(yaml(text), want);
        assert_eq!(yaml(want), want, "formatting twice changes nothing");
    }

    #[test]
    fn json_is_left_alone() {
        assert_eq!(format("{\"version\": 1}").unwrap(), Formatted::Json);
        assert_eq!(format("# c\n  {\"version\": 1}").unwrap(), Formatted::Json);
    }

    #[test]
    fn a_hash_inside_quotes_or_a_plain_scalar_is_not_a_comment() {
        assert_eq!(
            split_comment(r#"- group: "@TGS#1" # c"#),
            Some((r#"- group: "@TGS#1" "#, "# c"))
        );
        assert_eq!(split_comment("- user: a#b"), None);
        assert_eq!(
            split_comment("- user: o'neil # c"),
            Some(("- user: o'neil ", "# c"))
        );
        assert_eq!(
            split_comment("- user: 'it''s' # c"),
            Some(("- user: 'it''s' ", "# c"))
        );
    }

    #[test]
    fn ids_that_yaml_would_read_otherwise_are_quoted() {
        for id in ["123", "true", "No", "a b", "-x", "", "a:b", "1e3"] {
            assert!(quote_user(id).starts_with('"'), "{id}");
        }
        for id in ["alice", "user_01", "a.b-c@d"] {
            assert_eq!(quote_user(id), id);
        }
    }
}
