//! Manifests: YAML files read and validated into a [`DesiredState`].
//!
//! [`load`] expands the paths it is given (directories recurse over `*.yaml`/`*.yml`, sorted),
//! reads and checks each file on its own (in parallel, one worker per core), then merges them:
//! the `app` blocks must agree and no (user, conversation) may appear twice anywhere. Every
//! problem of the run is collected into one [`ManifestErrors`], each with its file:line:column.

mod error;
pub mod fmt;
mod model;
mod redact;
mod schema;
mod tree;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use miette::{NamedSource, SourceSpan};
use serde_saphyr::Spanned;

pub use error::{ManifestErrors, Position, Problem};
pub use redact::Secrets;
pub use schema::{Draft, schema};

use crate::desired::{App, DesiredEntry, DesiredState};
use crate::ids::{ConversationKey, GroupId, Peer, UserId};
use crate::input::{Accept, Links, ReadError};
use model::{AppSpec, EntrySpec, Integer, ManifestFile};

/// The largest manifest file accepted. serde-saphyr also caps the scalar text of one document at
/// 64 MiB; a bigger file fails here first, with a message that says what to do. At about
/// 28 bytes per entry this is over two million entries per file, within the memory target.
pub const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

const HELP_SCHEMA: &str = "see the manifest format in README.md, or run `timctl schema` for the JSON Schema your editor can check against";

/// Reads, checks and merges the manifests at `paths` (files, or directories whose `*.yaml` and
/// `*.yml` files below are read in sorted order).
///
/// On success `entries` is sorted by (from, peer) and unique, with defaults applied; `digest`
/// is a BLAKE3 digest of the files' contents that does not depend on their order; `files` is
/// how many files were read. On failure every problem found is returned.
pub fn load(paths: &[PathBuf]) -> Result<DesiredState, ManifestErrors> {
    let mut problems = Vec::new();
    let files = expand_paths(paths, &mut problems);
    if files.is_empty() {
        if problems.is_empty() {
            problems.push(Problem::whole_file(
                0,
                Path::new("."),
                "no manifest was given",
                "pass a manifest file or directory with -f",
            ));
        }
        return Err(ManifestErrors::new(problems));
    }

    let mut loaded = load_files(&files);
    for file in &loaded {
        problems.extend(file.problems.iter().cloned());
    }
    let app = merge_apps(&files, &loaded, &mut problems);
    let digest = digest(&loaded);
    let entries = merge_entries(&files, &mut loaded, &mut problems);
    if !problems.is_empty() {
        attach_sources(&mut problems, &files);
        return Err(ManifestErrors::new(problems));
    }
    let Some(app) = app else {
        unreachable!("a run without an app block has a problem reported by merge_apps")
    };
    Ok(DesiredState {
        app,
        entries,
        digest,
        files: files.len(),
    })
}

/// The run's one app: the first file's `app` block, every other one checked to be identical
/// (a problem naming both places when not), and a problem when no file has one (unless a
/// block was there but invalid, or a file did not parse: those already say so).
fn merge_apps(
    files: &[ManifestPath],
    loaded: &[LoadedFile],
    problems: &mut Vec<Problem>,
) -> Option<App> {
    // The first block, and the index of its file.
    let mut first: Option<(usize, &PlacedApp)> = None;
    for (index, file) in loaded.iter().enumerate() {
        let Some(this) = &file.app else {
            continue;
        };
        match first {
            None => first = Some((index, this)),
            Some((first_index, first_app)) if first_app.app != this.app => {
                let mut p = file.problem_at(
                    this.at,
                    None,
                    // The other place is not in the message: `other` carries it, and the text
                    // output prints it on a line of its own, never wrapped.
                    format!(
                        "this app block ({}) differs from the first one ({})",
                        describe_app(&this.app),
                        describe_app(&first_app.app)
                    ),
                    "all manifests of one run are about one app: give `app` in one file, or repeat it identically",
                );
                p.other = Some((files[first_index].path.clone(), first_app.at));
                problems.push(p);
            }
            Some(_) => {}
        }
    }
    let app_seen_bad = loaded.iter().any(|f| f.app_invalid);
    if first.is_none() && !app_seen_bad && loaded.iter().all(|f| f.parsed) {
        problems.push(Problem::whole_file(
            0,
            &files[0].path,
            "no manifest has an `app` block",
            "add `app: {sdkappid: ..., region: ..., admin: ...}` to one of the manifests",
        ));
    }
    first.map(|(_, placed)| placed.app.clone())
}

/// Every file's entries, merged into one sorted list; each entry listed twice (in one file or
/// in two) is a problem naming both places. The files' entries are moved out.
fn merge_entries(
    files: &[ManifestPath],
    loaded: &mut [LoadedFile],
    problems: &mut Vec<Problem>,
) -> Vec<DesiredEntry> {
    // Each file's entries are already sorted by (from, peer), and stable sorting keeps equal
    // keys in file order and then line order. Concatenating in file order and sorting again
    // merges the sorted runs in linear time, so the first of a duplicate pair comes first.
    let total = loaded.iter().map(|f| f.entries.len()).sum();
    let mut all: Vec<PlacedEntry> = Vec::with_capacity(total);
    for file in loaded.iter_mut() {
        all.append(&mut file.entries);
    }
    all.sort_by(|a, b| a.entry.key.cmp(&b.entry.key));
    for pair in all.windows(2) {
        let (first, second) = (&pair[0], &pair[1]);
        if first.entry.key == second.entry.key {
            let mut p = loaded[second.file as usize].problem_at(
                second.at,
                None,
                format!(
                    "{} is listed twice for user {:?}",
                    second.entry.key.peer,
                    second.entry.key.from.as_str(),
                ),
                "remove one of the two entries",
            );
            p.other = Some((files[first.file as usize].path.clone(), first.at));
            problems.push(p);
        }
    }
    all.into_iter().map(|placed| placed.entry).collect()
}

/// The BLAKE3 digest of the files' own digests, sorted: the same manifests in another order
/// (or split differently into directories) have the same digest.
fn digest(loaded: &[LoadedFile]) -> String {
    let mut digests: Vec<[u8; 32]> = loaded.iter().filter_map(|f| f.digest).collect();
    digests.sort_unstable();
    let mut hasher = blake3::Hasher::new();
    for d in &digests {
        hasher.update(d);
    }
    hasher.finalize().to_hex().to_string()
}

/// A fingerprint of the manifests' raw bytes: equal fingerprints mean [`load`] would read the
/// same files, in the same order, with the same content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fingerprint([u8; 32]);

/// The [`Fingerprint`] of the manifests at `paths`: the files [`load`] would read (the same
/// expansion of directories, the same order, the same refusal of links met while walking),
/// each read with the same bound, their names and bytes hashed with BLAKE3 and nothing
/// parsed. `None` when `load` would report a problem before parsing (a missing path, a file
/// that cannot be read, over [`MAX_FILE_BYTES`], or not a regular file): the caller then
/// loads, which says what is wrong.
///
/// It lets a long-running reader (serve's reload) skip parsing a set that has not changed; it
/// is a different value from [`DesiredState::digest`], which ignores the files' names and order.
pub fn fingerprint(paths: &[PathBuf]) -> Option<Fingerprint> {
    let mut problems = Vec::new();
    let files = expand_paths(paths, &mut problems);
    if !problems.is_empty() || files.is_empty() {
        return None;
    }
    let mut hasher = blake3::Hasher::new();
    for file in &files {
        let bytes = crate::input::read_capped_with(
            &file.path,
            MAX_FILE_BYTES,
            Accept::RegularOnly,
            file.links,
        )
        .ok()?;
        // Each name and content with its length first, so that no two different sets of files
        // hash the same bytes.
        let name = file.path.as_os_str().as_encoded_bytes();
        hasher.update(&(name.len() as u64).to_le_bytes());
        hasher.update(name);
        hasher.update(&(bytes.len() as u64).to_le_bytes());
        hasher.update(&bytes);
    }
    Some(Fingerprint(*hasher.finalize().as_bytes()))
}

/// Checks each file at `paths` on its own, as `load` does, without the checks between files
/// (one `app`, no duplicate across files): for `timctl fmt`, which may be given several
/// manifest sets at once and rewrites only files that are valid by themselves. Returns the
/// files, in `load`'s order, each with whether a link in its name may be followed.
pub fn check_files(paths: &[PathBuf]) -> Result<Vec<(PathBuf, Links)>, ManifestErrors> {
    let mut problems = Vec::new();
    let files = expand_paths(paths, &mut problems);
    let loaded = load_files(&files);
    for file in &loaded {
        problems.extend(file.problems.iter().cloned());
        // A duplicate within one file is a problem of that file.
        for pair in file.entries.windows(2) {
            let (first, second) = (&pair[0], &pair[1]);
            if first.entry.key == second.entry.key {
                let mut p = file.problem_at(
                    second.at,
                    None,
                    format!(
                        "{} is listed twice for user {:?}",
                        second.entry.key.peer,
                        second.entry.key.from.as_str(),
                    ),
                    "remove one of the two entries",
                );
                p.other = Some((file.path.clone(), first.at));
                problems.push(p);
            }
        }
    }
    if !problems.is_empty() {
        attach_sources(&mut problems, &files);
        return Err(ManifestErrors::new(problems));
    }
    Ok(files.into_iter().map(|f| (f.path, f.links)).collect())
}

/// Gives each problem that has a place but no code frame yet the text of its file. The text
/// is read again here, on the error path only, so that a successful load keeps no copies.
fn attach_sources(problems: &mut [Problem], files: &[ManifestPath]) {
    let mut texts: std::collections::HashMap<PathBuf, Option<Arc<str>>> = Default::default();
    for p in problems
        .iter_mut()
        .filter(|p| p.source.is_none() && p.position.is_some())
    {
        let links = files
            .get(p.file_index)
            .filter(|f| f.path == p.file)
            .map_or(Links::Refuse, |f| f.links);
        let text = texts.entry(p.file.clone()).or_insert_with(|| {
            // Bounded like the first read, and a walked file is again not read through a
            // link: the file may have changed since.
            crate::input::read_capped_with(&p.file, MAX_FILE_BYTES, Accept::RegularOnly, links)
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .map(Arc::from)
        });
        if let Some(text) = text {
            p.attach_source(text);
        }
    }
}

fn describe_app(app: &App) -> String {
    format!(
        "sdkappid {}, region {}, admin {:?}",
        app.sdkappid,
        app.region.name(),
        app.admin.as_str()
    )
}

/// A file to read, and whether a link in its name may be followed: yes for a path given with
/// `-f` (the user named it), no for a file found by walking a directory.
struct ManifestPath {
    path: PathBuf,
    links: Links,
}

/// Turns the paths given into the list of files to read: files as given, directories expanded
/// to their `*.yaml`/`*.yml` files below, sorted. A path given twice is read once.
fn expand_paths(paths: &[PathBuf], problems: &mut Vec<Problem>) -> Vec<ManifestPath> {
    let mut files = Vec::new();
    for path in paths {
        match std::fs::metadata(path) {
            Ok(meta) if meta.is_dir() => {
                let mut found = Vec::new();
                if let Err((dir, e)) = walk(path, &mut found) {
                    problems.push(Problem::whole_file(
                        0,
                        &dir,
                        format!("cannot read the directory: {e}"),
                        "check the path and its permissions",
                    ));
                    continue;
                }
                if found.is_empty() {
                    problems.push(Problem::whole_file(
                        0,
                        path,
                        "the directory has no *.yaml or *.yml files",
                        "point -f at a manifest file, or at a directory that holds manifests",
                    ));
                }
                found.sort();
                files.extend(found.into_iter().map(|path| ManifestPath {
                    path,
                    links: Links::Refuse,
                }));
            }
            Ok(_) => files.push(ManifestPath {
                path: path.clone(),
                links: Links::Follow,
            }),
            Err(e) => problems.push(Problem::whole_file(
                0,
                path,
                if e.kind() == std::io::ErrorKind::NotFound {
                    "the manifest does not exist".to_owned()
                } else {
                    format!("cannot read the manifest: {e}")
                },
                "check the -f path (default ./timctl.yaml)",
            )),
        }
    }
    let mut seen = std::collections::HashSet::new();
    files.retain(|f| seen.insert(f.path.clone()));
    files
}

/// Collects the `*.yaml`/`*.yml` files below `dir`. Hidden entries (`.git`, `.timctl`) are
/// skipped: they are never manifests. Symbolic links, to files or directories, are skipped
/// too, as ripgrep does by default: a link committed to a manifests repository could point at
/// `/proc/self/environ`, a credentials file or `/`, and whatever timctl reads may end up in a
/// code frame in a CI log. Only what is a directory or a regular file in the tree itself is
/// walked or read; a FIFO or device named `*.yaml` is reported, never read.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), (PathBuf, std::io::Error)> {
    let entries = std::fs::read_dir(dir).map_err(|e| (dir.to_owned(), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| (dir.to_owned(), e))?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        // The entry's own type (lstat), never its target's.
        let file_type = entry.file_type().map_err(|e| (path.clone(), e))?;
        if file_type.is_symlink() {
            continue;
        }
        if file_type.is_dir() {
            walk(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
    Ok(())
}

/// A valid `app` block and where it is in its file.
struct PlacedApp {
    app: App,
    at: Position,
}

/// A manifest entry and where it is: its file (index into the run's files) and its place.
struct PlacedEntry {
    entry: DesiredEntry,
    file: u32,
    at: Position,
}

/// One file, read and checked on its own.
struct LoadedFile {
    path: PathBuf,
    index: usize,
    /// The text, kept only when there is a problem to show a code frame for.
    text: Option<Arc<str>>,
    parsed: bool,
    app: Option<PlacedApp>,
    app_invalid: bool,
    /// Sorted by (from, peer), stable.
    entries: Vec<PlacedEntry>,
    problems: Vec<Problem>,
    digest: Option<[u8; 32]>,
}

impl LoadedFile {
    fn problem_at(
        &self,
        pos: Position,
        byte_span: Option<(usize, usize)>,
        message: impl Into<String>,
        help: impl Into<String>,
    ) -> Problem {
        let source = self.text.as_ref().map(|text| {
            let span = match byte_span {
                Some((offset, len)) => SourceSpan::from((offset, len)),
                None => SourceSpan::from((offset_of(text, pos), 0)),
            };
            (
                NamedSource::new(self.path.display().to_string(), Arc::clone(text))
                    .with_language("YAML"),
                span,
            )
        });
        Problem {
            file: self.path.clone(),
            position: Some(pos),
            message: message.into(),
            help: help.into(),
            other: None,
            source,
            file_index: self.index,
        }
    }
}

/// The byte offset of a 1-based line and column (counted in characters) in `text`.
pub(crate) fn offset_of(text: &str, pos: Position) -> usize {
    let mut offset = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        if i + 1 == pos.line as usize {
            let col = pos.column.saturating_sub(1) as usize;
            return offset
                + line
                    .char_indices()
                    .nth(col)
                    .map_or(line.trim_end_matches('\n').len(), |(b, _)| b);
        }
        offset += line.len();
    }
    text.len()
}

/// Reads every file, spreading them over the cores. The result is in the order of `files`.
fn load_files(files: &[ManifestPath]) -> Vec<LoadedFile> {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(files.len());
    if workers <= 1 {
        return files
            .iter()
            .enumerate()
            .map(|(i, f)| load_file(i, &f.path, f.links))
            .collect();
    }
    let next = AtomicUsize::new(0);
    let mut results: Vec<(usize, LoadedFile)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(path) = files.get(i) else { break };
                        mine.push((i, load_file(i, &path.path, path.links)));
                    }
                    mine
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| match h.join() {
                Ok(v) => v,
                // A panic in a worker is a bug in timctl, not in the input; pass it on.
                Err(payload) => std::panic::resume_unwind(payload),
            })
            .collect()
    });
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, f)| f).collect()
}

fn load_file(index: usize, path: &Path, links: Links) -> LoadedFile {
    let mut file = LoadedFile {
        path: path.to_owned(),
        index,
        text: None,
        parsed: false,
        app: None,
        app_invalid: false,
        entries: Vec::new(),
        problems: Vec::new(),
        digest: None,
    };
    let whole = |msg: String, help: &str| Problem::whole_file(index, path, msg, help);

    let bytes = match crate::input::read_capped_with(
        path,
        MAX_FILE_BYTES,
        Accept::RegularOnly,
        links,
    ) {
        Ok(b) => b,
        Err(ReadError::TooLarge { .. }) => {
            file.problems.push(whole(
                format!(
                    "the manifest is larger than {} MiB, the most read per file",
                    MAX_FILE_BYTES / (1024 * 1024)
                ),
                "split it into several files in one directory and pass the directory with -f",
            ));
            return file;
        }
        Err(ReadError::NotRegular { what }) => {
            file.problems.push(whole(
                format!("the manifest is {what}; timctl reads manifests only from regular files"),
                "write the manifest to a file first (`generate > timctl.yaml`) and pass that file with -f",
            ));
            return file;
        }
        Err(ReadError::Io(e)) => {
            file.problems.push(whole(
                format!("cannot read the manifest: {e}"),
                "check the path and its permissions",
            ));
            return file;
        }
    };
    file.digest = Some(*blake3::hash(&bytes).as_bytes());
    let text: String = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
            let line_start = valid.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
            let column = String::from_utf8_lossy(&valid[line_start..])
                .chars()
                .count()
                + 1;
            let mut p = whole(
                format!(
                    "the manifest is not UTF-8: invalid byte 0x{:02X}",
                    e.as_bytes()[valid.len()]
                ),
                "save the file as UTF-8 (IDs are printable ASCII anyway)",
            );
            p.position = Some(Position {
                line: line as u32,
                column: column as u32,
            });
            file.problems.push(p);
            return file;
        }
    };
    if is_blank(&text) {
        file.problems.push(whole(
            "the manifest is empty".to_owned(),
            "start it with `version: 1`, or remove the file",
        ));
        return file;
    }

    let parsed: Result<ManifestFile, _> = serde_saphyr::from_str_with_options(
        &text,
        options(text.len(), serde_saphyr::DuplicateKeyPolicy::Error),
    );
    match parsed {
        Ok(manifest) => {
            file.parsed = true;
            check(&mut file, Parts::from(manifest));
        }
        // serde stops at the first problem. When the file is well-formed YAML, read it again
        // as a tree and walk that, so that every problem of the file is reported in this run;
        // only a file that is not YAML at all (or over a budget) stops at its first problem.
        Err(e) => {
            file.text = Some(Arc::from(text.as_str()));
            match tree::parse(&text) {
                Ok(root) => {
                    file.parsed = true;
                    let parts = tree::Walk::new(&mut file, &text).file(root);
                    check(&mut file, parts);
                    if file.problems.is_empty() {
                        // The walk is as strict as serde everywhere; should it ever miss what
                        // serde saw, serde's problem is still reported.
                        file.parsed = false;
                        file.entries.clear();
                        push_parse_error(&mut file, &e);
                    }
                }
                Err(_) => push_parse_error(&mut file, &e),
            }
        }
    }
    file
}

/// Reports serde-saphyr's error `e` (the file's only problem) at its place.
fn push_parse_error(file: &mut LoadedFile, e: &serde_saphyr::Error) {
    let (pos, span) = match e.location() {
        // serde reports a missing top-level `version` at the end of the document;
        // the start is where it belongs.
        _ if matches!(
            e.without_snippet(),
            serde_saphyr::Error::SerdeMissingField {
                field: "version",
                ..
            }
        ) =>
        {
            (Position { line: 1, column: 1 }, Some((0, 0)))
        }
        Some(l) if l.line() > 0 => (
            Position {
                line: l.line() as u32,
                column: l.column().max(1) as u32,
            },
            l.span()
                .byte_offset()
                .map(|o| (o as usize, l.span().byte_len().unwrap_or(0) as usize)),
        ),
        _ => (Position { line: 1, column: 1 }, None),
    };
    let (message, help) = describe_parse_error(e);
    let p = file.problem_at(pos, span, message, help);
    file.problems.push(p);
}

/// Whether the text holds nothing but whitespace, comments and document markers.
fn is_blank(text: &str) -> bool {
    text.lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with('#') || l == "---" || l == "..."
    })
}

/// The parser's options. The default budget refuses documents over 250,000 nodes, far below a
/// big app's manifest (about five nodes per entry), so the node and event limits grow with the
/// input: a node takes at least a byte or two of text, so a budget proportional to the
/// length admits every honest document while still bounding the work. The alias, anchor,
/// depth and scalar-bytes limits stay at their defaults: they are what stops alias bombs
/// ("billion laughs") and stack-deep nesting, and a manifest needs none of those.
fn options(len: usize, duplicate_keys: serde_saphyr::DuplicateKeyPolicy) -> serde_saphyr::Options {
    let defaults = serde_saphyr::Budget::default();
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_nodes: defaults.max_nodes.max(len + 1024),
            max_events: defaults.max_events.max(2 * len + 2048),
            max_depth: 32,
        },
        duplicate_keys: duplicate_keys,
        // YAML 1.2 booleans only, as editors and JSON Schema validators read the file.
        strict_booleans: true,
        with_snippet: false,
    }
}

/// The parser's message in timctl's words, without its own "at line X column Y" (the place is
/// reported separately), and advice that fits the kind of error.
fn describe_parse_error(e: &serde_saphyr::Error) -> (String, String) {
    use serde_saphyr::Error as E;
    let mut message = e.without_snippet().to_string();
    if let Some(i) = message.find(" at line ") {
        message.truncate(i);
    }
    match e.without_snippet() {
        E::SerdeUnknownField { .. } => (
            message,
            "remove the key or fix its spelling; the allowed keys are listed above".to_owned(),
        ),
        E::SerdeMissingField { field, .. } => (
            message,
            match *field {
                "version" => "start the file with `version: 1`".to_owned(),
                _ => format!("add `{field}:` here"),
            },
        ),
        E::DuplicateMappingKey { key, .. } => (
            match key {
                Some(k) => format!("the key `{k}` is repeated in this mapping"),
                None => "a key is repeated in this mapping".to_owned(),
            },
            "a key may appear once per mapping: merge the two or remove one (for a user, put all its entries under one key)".to_owned(),
        ),
        E::MultipleDocuments { .. } => (
            "the file holds more than one YAML document (a second `---`)".to_owned(),
            "put one manifest per file; split the documents into separate files".to_owned(),
        ),
        E::SerdeUnknownVariant { .. } => (message, "use one of the values listed above".to_owned()),
        E::Budget { .. }
        | E::AliasExpansionLimitExceeded { .. }
        | E::AliasReplayLimitExceeded { .. }
        | E::AliasReplayStackDepthExceeded { .. } => (
            message,
            "manifests need no anchors, aliases or deep nesting: write the entries out".to_owned(),
        ),
        E::UnsupportedTag { .. }
        | E::TaggedScalarCannotDeserializeIntoString { .. }
        | E::TaggedEnumMismatch { .. }
        | E::TaggedStructFieldName { .. }
        | E::InvalidBinaryBase64 { .. }
        | E::BinaryNotUtf8 { .. } => (
            format!("a YAML tag is not allowed here ({message})"),
            "remove the tag (`!!int`, `!!str`, `!name`): a manifest holds plain YAML values, \
             and `timctl schema` gives each key's type"
                .to_owned(),
        ),
        E::Unexpected { .. }
        | E::InvalidScalar { .. }
        | E::SerdeInvalidType { .. }
        | E::SerdeInvalidValue { .. } => (
            // serde-saphyr names its location-keeping wrapper where a tagged or otherwise odd
            // value met it; that wrapper means nothing to the person who wrote the file.
            format!("wrong type: {}", message.replace("a span-aware newtype wrapper", "a plain value")),
            HELP_SCHEMA.to_owned(),
        ),
        _ => (
            message,
            "fix the YAML syntax here (indent with spaces, not tabs; quote IDs with special characters)".to_owned(),
        ),
    }
}

fn pos_of<T>(s: &Spanned<T>) -> Position {
    Position {
        line: s.referenced.line() as u32,
        column: s.referenced.column() as u32,
    }
}

fn span_of<T>(s: &Spanned<T>) -> Option<(usize, usize)> {
    let span = s.referenced.span();
    Some((
        span.byte_offset()? as usize,
        span.byte_len().unwrap_or(0) as usize,
    ))
}

/// What a file says, as far as it could be read: from the typed reading (all of it) or from the
/// tree walk (the parts that are well-formed; what was not is already reported).
#[derive(Default)]
struct Parts {
    version: Option<Spanned<Integer>>,
    app: Option<AppParts>,
    default_clear: bool,
    users: Vec<(Spanned<String>, Vec<Spanned<EntrySpec>>)>,
}

/// An app block: its place, and each of its fields that could be read.
#[derive(Default)]
struct AppParts {
    at: Position,
    sdkappid: Option<Integer>,
    region: Option<crate::api::Region>,
    admin: Option<Spanned<String>>,
    /// Every field was there and well-typed.
    complete: bool,
}

impl AppParts {
    fn broken(at: Position) -> Self {
        AppParts {
            at,
            ..AppParts::default()
        }
    }
}

impl From<ManifestFile> for Parts {
    fn from(manifest: ManifestFile) -> Self {
        Parts {
            version: Some(manifest.version),
            app: manifest.app.map(|app| {
                let at = pos_of(&app);
                let AppSpec {
                    sdkappid,
                    region,
                    admin,
                } = app.value;
                AppParts {
                    at,
                    sdkappid: Some(sdkappid),
                    region: Some(region),
                    admin: Some(admin),
                    complete: true,
                }
            }),
            default_clear: manifest
                .defaults
                .and_then(|d| d.clear_roaming.map(|b| b.0))
                .unwrap_or(false),
            users: manifest.absent.unwrap_or_default().0,
        }
    }
}

/// The checks that need more than the parser: version, IDs, exactly one of user/group, and
/// defaults. Fills `file.entries` sorted by (from, peer). Problems are added to the file's.
fn check(file: &mut LoadedFile, manifest: Parts) {
    let mut problems = std::mem::take(&mut file.problems);
    if let Some(version) = &manifest.version
        && version.value.0 != 1
    {
        problems.push(file.problem_at(
            pos_of(version),
            span_of(version),
            format!("unsupported manifest version {}", version.value.0),
            "write `version: 1`, the only version this timctl reads",
        ));
    }
    if let Some(app) = &manifest.app {
        let admin = app
            .admin
            .as_ref()
            .and_then(|admin| match UserId::new(admin.value.as_str()) {
                Ok(admin) => Some(admin),
                Err(e) => {
                    problems.push(file.problem_at(
                        pos_of(admin),
                        span_of(admin),
                        format!("app.admin: {e}"),
                        "use the app admin's UserID: 1 to 32 bytes of printable ASCII",
                    ));
                    None
                }
            });
        if app.sdkappid == Some(Integer(0)) {
            problems.push(file.problem_at(
                app.at,
                None,
                "app.sdkappid is 0",
                "use the SDKAppID from the Tencent Cloud Chat console",
            ));
        }
        match (app.sdkappid, app.region, admin) {
            (Some(Integer(sdkappid)), Some(region), Some(admin))
                if sdkappid != 0 && app.complete =>
            {
                file.app = Some(PlacedApp {
                    app: App {
                        sdkappid,
                        region,
                        admin,
                    },
                    at: app.at,
                });
            }
            _ => file.app_invalid = true,
        }
    }
    let default_clear = manifest.default_clear;
    let index = file.index as u32;
    let users = manifest.users;
    let mut entries = Vec::with_capacity(users.iter().map(|(_, e)| e.len()).sum());
    for (key, list) in users {
        let from = match UserId::new(key.value.as_str()) {
            Ok(u) => Some(u),
            Err(e) => {
                problems.push(file.problem_at(
                    pos_of(&key),
                    span_of(&key),
                    format!("user {:?} under `absent`: {e}", key.value),
                    "a UserID is 1 to 32 bytes of printable ASCII (0x20 to 0x7E); quote it in YAML if it has special characters",
                ));
                None
            }
        };
        // The peers of a user whose own ID is bad: that user's entries go nowhere, but a peer
        // listed twice under it is still a problem to report in this run.
        let mut orphans: Vec<(Peer, Position)> = Vec::new();
        for entry in list {
            let pos = pos_of(&entry);
            let entry_span = span_of(&entry);
            let spec = entry.value;
            let peer = match (spec.user, spec.group) {
                (Some(u), None) => UserId::new(u.value.as_str())
                    .map(Peer::User)
                    .map_err(|e| (u, e, 32)),
                (None, Some(g)) => GroupId::new(g.value.as_str())
                    .map(Peer::Group)
                    .map_err(|e| (g, e, 48)),
                (Some(_), Some(_)) => {
                    problems.push(file.problem_at(
                        pos,
                        entry_span,
                        "this entry has both `user` and `group`",
                        "an entry is one conversation: split it into a `user:` entry and a `group:` entry",
                    ));
                    continue;
                }
                (None, None) => {
                    problems.push(file.problem_at(
                        pos,
                        entry_span,
                        "this entry has neither `user` nor `group`",
                        "say which conversation: `- user: ID` for one-to-one, `- group: ID` for a group",
                    ));
                    continue;
                }
            };
            match peer {
                Ok(peer) => match &from {
                    Some(from) => entries.push(PlacedEntry {
                        entry: DesiredEntry {
                            key: ConversationKey::new(from.clone(), peer),
                            clear_roaming: spec.clear_roaming.map_or(default_clear, |b| b.0),
                        },
                        file: index,
                        at: pos,
                    }),
                    None => match orphans.iter().find(|(p, _)| *p == peer) {
                        Some((_, first)) => {
                            let mut p = file.problem_at(
                                pos,
                                None,
                                format!("{peer} is listed twice for user {:?}", key.value),
                                "remove one of the two entries",
                            );
                            p.other = Some((file.path.clone(), *first));
                            problems.push(p);
                        }
                        None => orphans.push((peer, pos)),
                    },
                },
                Err((value, e, max)) => problems.push(file.problem_at(
                    pos_of(&value),
                    span_of(&value),
                    format!("{e}: {:?}", value.value),
                    format!("IDs are 1 to {max} bytes of printable ASCII (0x20 to 0x7E)"),
                )),
            }
        }
    }
    entries.sort_by(|a, b| a.entry.key.cmp(&b.entry.key));
    file.entries = entries;
    file.problems = problems;
}

#[cfg(test)]
mod fingerprint_tests {
    use super::*;

    const APP: &str =
        "version: 1\napp: {sdkappid: 1400000001, region: singapore, admin: administrator}\n";

    fn write(path: &Path, text: &str) {
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn follows_the_files_load_reads_and_their_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("manifests");
        std::fs::create_dir_all(root.join("team")).unwrap();
        write(&root.join("app.yaml"), APP);
        write(
            &root.join("team/alice.yml"),
            "version: 1\nabsent:\n  alice:\n    - user: bob\n",
        );
        let paths = vec![root.clone()];
        let first = fingerprint(&paths).expect("a readable set has a fingerprint");
        assert_eq!(
            fingerprint(&paths),
            Some(first),
            "the same bytes, the same fingerprint"
        );

        // What load never reads changes nothing: another extension, a hidden file, a link.
        write(&root.join("notes.txt"), "not a manifest");
        write(&root.join(".hidden.yaml"), "version: 1\n");
        std::os::unix::fs::symlink(root.join("app.yaml"), root.join("linked.yaml")).unwrap();
        assert_eq!(fingerprint(&paths), Some(first));
        load(&paths).expect("the set stays valid");

        // One byte of one file changes it; the same bytes under another name are another set.
        write(
            &root.join("team/alice.yml"),
            "version: 1\nabsent:\n  alice:\n    - user: bab\n",
        );
        let edited = fingerprint(&paths).unwrap();
        assert_ne!(edited, first);
        write(
            &root.join("team/alice.yml"),
            "version: 1\nabsent:\n  alice:\n    - user: bob\n",
        );
        assert_eq!(fingerprint(&paths), Some(first), "back to the same bytes");
        std::fs::rename(root.join("team/alice.yml"), root.join("team/alice2.yml")).unwrap();
        assert_ne!(
            fingerprint(&paths),
            Some(first),
            "a renamed file is another set"
        );

        // A new manifest file is read by load, so it changes the fingerprint too.
        write(&root.join("team/carol.yaml"), "version: 1\nabsent: {}\n");
        assert_ne!(fingerprint(&paths).unwrap(), edited);
    }

    #[test]
    fn is_none_where_load_reports_a_problem_before_parsing() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.yaml");
        assert_eq!(fingerprint(std::slice::from_ref(&missing)), None);
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        assert_eq!(fingerprint(std::slice::from_ref(&empty)), None);
        assert_eq!(fingerprint(&[]), None);
        // A file bigger than load reads is not fingerprinted either.
        let big = dir.path().join("big.yaml");
        let file = std::fs::File::create(&big).unwrap();
        file.set_len(MAX_FILE_BYTES + 1).unwrap();
        assert_eq!(fingerprint(std::slice::from_ref(&big)), None);
        assert!(load(std::slice::from_ref(&big)).is_err());
    }
}
