//! The plan's JSON document: what `plan --format json` prints and what `plan --out` saves.
//!
//! ```json
//! {"format_version":2,
//!  "app":{"sdkappid":1400000001,"region":"singapore","admin":"administrator"},
//!  "state":{"lineage":"…","serial":7},            // or null: there was no state
//!  "manifest_digest":"…",
//!  "refreshed":true,"refreshed_at":"2026-11-29T17:00:00Z",   // false and null without --refresh
//!  "changes":[{"action":"delete","reason":"present","from":"alice","type":"user","peer":"bob","clear_roaming":true}],
//!  "summary":{"delete":1,"record":0,"forget":0,"unchanged":0}}
//! ```
//!
//! Version 1 (before refresh) had no `refreshed`, `refreshed_at`, `reason` or `summary.record`;
//! it is still read: its deletes read as reason `new`, its forgets as `not_in_manifest`.
//!
//! A saved plan is exactly this document: self-contained, and free of secrets because a plan
//! holds none. Reading one checks everything a hand edit could break (IDs, order, counts).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::ser::{SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};

use super::{Action, Change, Plan, Reason, Summary};
use crate::api::Region;
use crate::desired::App;
use crate::ids::{ConversationKey, Peer, PeerKind, UserId};
use crate::ledger::StateRef;

/// The plan document's format version. Bump it when the document changes incompatibly.
pub const FORMAT_VERSION: u32 = 2;

/// Why a saved plan could not be read or written.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum PlanFileError {
    /// An I/O error on the plan file.
    #[error("cannot {doing} the plan file {path}")]
    #[diagnostic(code(timctl::plan::io))]
    Io {
        /// What timctl was doing.
        doing: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Not a well-formed plan document.
    #[error("{path}:{line}:{column}: not a timctl plan: {message}")]
    #[diagnostic(
        code(timctl::plan::syntax),
        help("a plan file is what `timctl plan --out FILE` wrote; make a new one")
    )]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// Written by a newer timctl.
    #[error("{path}: plan format_version {found}; this timctl ({version}) reads up to {supported}")]
    #[diagnostic(
        code(timctl::plan::newer_format),
        help("use the timctl version that made the plan, or make the plan again with this one")
    )]
    NewerFormat {
        /// The file.
        path: PathBuf,
        /// Its format version.
        found: u32,
        /// The newest this timctl reads.
        supported: u32,
        /// This timctl's version.
        version: &'static str,
    },
    /// Well-formed, but inconsistent (edited by hand?).
    #[error("{path}: the plan is inconsistent: {what}")]
    #[diagnostic(
        code(timctl::plan::invalid),
        help("a plan must be applied exactly as `timctl plan --out` wrote it; make a new one")
    )]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
}

/// A saved plan that no longer matches the state: apply must refuse it and change nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, miette::Diagnostic)]
#[diagnostic(
    code(timctl::plan::stale),
    help(
        "the state moved on since the plan was made (another apply, or `state rm`), or --state names another file than then; nothing was changed: plan again and review it"
    )
)]
pub enum StalePlan {
    /// There was no state when the plan was made, and there is one now.
    #[error("the plan was made with no state, but there is a state now (lineage {}, serial {})", now.lineage, now.serial)]
    StateAppeared {
        /// The state now.
        now: StateRef,
    },
    /// There was a state, and there is none now.
    #[error("the plan was made against state lineage {}, serial {}, but there is no state now", then.lineage, then.serial)]
    StateVanished {
        /// The state then.
        then: StateRef,
    },
    /// Another ledger (deleted and created again, or another file).
    #[error("the plan was made against state lineage {}, but the state is lineage {} now", then.lineage, now.lineage)]
    LineageChanged {
        /// The state then.
        then: StateRef,
        /// The state now.
        now: StateRef,
    },
    /// The same ledger, written to since.
    #[error("the plan was made against state serial {}, but the state is at serial {} now", then.serial, now.serial)]
    SerialChanged {
        /// The state then.
        then: StateRef,
        /// The state now.
        now: StateRef,
    },
}

/// Whether a plan made against `planned` may be applied to a ledger now at `current`: only
/// when both are the same lineage and serial, or both are "no state".
pub fn check_state(planned: Option<StateRef>, current: Option<StateRef>) -> Result<(), StalePlan> {
    match (planned, current) {
        (None, None) => Ok(()),
        (None, Some(now)) => Err(StalePlan::StateAppeared { now }),
        (Some(then), None) => Err(StalePlan::StateVanished { then }),
        (Some(then), Some(now)) if then.lineage != now.lineage => {
            Err(StalePlan::LineageChanged { then, now })
        }
        (Some(then), Some(now)) if then.serial != now.serial => {
            Err(StalePlan::SerialChanged { then, now })
        }
        (Some(_), Some(_)) => Ok(()),
    }
}

// ----- writing: borrowed views, so that a million changes are not copied -----

struct ChangesDoc<'a>(&'a [Change]);

impl Serialize for ChangesDoc<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(ChangeDoc))
    }
}

struct ChangeDoc<'a>(&'a Change);

impl Serialize for ChangeDoc<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let c = self.0;
        let mut st = s.serialize_struct("Change", 6)?;
        st.serialize_field("action", c.action.as_str())?;
        st.serialize_field("reason", c.reason.as_str())?;
        st.serialize_field("from", c.key.from.as_str())?;
        st.serialize_field("type", c.key.peer.kind().as_str())?;
        st.serialize_field("peer", c.key.peer.id())?;
        st.serialize_field("clear_roaming", &c.clear_roaming)?;
        st.end()
    }
}

struct PlanDoc<'a>(&'a Plan);

impl Serialize for PlanDoc<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let p = self.0;
        let mut st = s.serialize_struct("Plan", 8)?;
        st.serialize_field("format_version", &FORMAT_VERSION)?;
        st.serialize_field("app", &p.app)?;
        st.serialize_field("state", &p.state)?;
        st.serialize_field("manifest_digest", &p.manifest_digest)?;
        st.serialize_field("refreshed", &p.refreshed())?;
        st.serialize_field("refreshed_at", &p.refreshed_at)?;
        st.serialize_field("changes", &ChangesDoc(&p.changes))?;
        st.serialize_field("summary", &p.summary)?;
        st.end()
    }
}

/// Writes the plan's JSON document (one line, then a newline) to `out`.
pub fn to_writer(plan: &Plan, out: &mut dyn Write) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, &PlanDoc(plan)).map_err(std::io::Error::other)?;
    out.write_all(b"\n")
}

/// The plan's JSON document as a string.
pub fn to_json(plan: &Plan) -> String {
    let mut out = Vec::new();
    to_writer(plan, &mut out).expect("writing to a Vec cannot fail");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

/// Saves the plan to `path`, atomically and durably: a reader sees the old file or the whole
/// new one, and after a crash the rename is on disk too.
///
/// The document goes to a temporary file created in the same directory with a fresh random
/// name and `O_EXCL` (so it never opens an existing file or follows a link planted there),
/// synced, renamed over `path` (which replaces a link at `path` rather than writing through
/// it), and then the directory is synced so that the rename itself survives a power loss.
pub fn write(plan: &Plan, path: &Path) -> Result<(), PlanFileError> {
    let io = |doing| {
        move |source| PlanFileError::Io {
            doing,
            path: path.to_owned(),
            source,
        }
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".timctl-plan-")
        .tempfile_in(dir)
        .map_err(io("create a temporary file beside"))?;
    let mut out = std::io::BufWriter::new(tmp);
    to_writer(plan, &mut out).map_err(io("write"))?;
    let tmp = out.into_inner().map_err(|e| io("write")(e.into_error()))?;
    tmp.as_file().sync_all().map_err(io("sync"))?;
    // On failure the temporary file is removed when `PersistError`'s file is dropped.
    tmp.persist(path).map_err(|e| io("replace")(e.error))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("sync the directory of"))?;
    Ok(())
}

// ----- reading -----

#[derive(Deserialize)]
struct Probe {
    format_version: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AppIn {
    sdkappid: u64,
    region: Region,
    admin: UserId,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
enum ActionIn {
    Delete,
    Record,
    Forget,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeIn {
    action: ActionIn,
    /// Required from version 2 on (checked after parsing, to name the change).
    #[serde(default)]
    reason: Option<String>,
    from: UserId,
    #[serde(rename = "type")]
    kind: PeerKind,
    peer: String,
    clear_roaming: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanIn {
    #[allow(dead_code)] // checked through `Probe` first
    format_version: u32,
    app: AppIn,
    state: Option<StateRef>,
    manifest_digest: String,
    /// Version 2 on.
    #[serde(default)]
    refreshed: Option<bool>,
    /// Version 2 on; `null` when not refreshed, so a missing field and `null` differ.
    #[serde(default, deserialize_with = "present")]
    refreshed_at: Option<Option<jiff::Timestamp>>,
    changes: Vec<ChangeIn>,
    summary: Summary,
}

/// Tells a field given as `null` (`Some(None)`) from a missing one (`None`, by `default`).
fn present<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<jiff::Timestamp>>, D::Error> {
    Option::<jiff::Timestamp>::deserialize(d).map(Some)
}

/// Reads a plan document; `path` names it in errors.
pub fn from_json(text: &str, path: &Path) -> Result<Plan, PlanFileError> {
    let syntax = |e: serde_json::Error| PlanFileError::Syntax {
        path: path.to_owned(),
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    };
    let probe: Probe = serde_json::from_str(text).map_err(syntax)?;
    if probe.format_version > FORMAT_VERSION {
        return Err(PlanFileError::NewerFormat {
            path: path.to_owned(),
            found: probe.format_version,
            supported: FORMAT_VERSION,
            version: env!("CARGO_PKG_VERSION"),
        });
    }
    let invalid = |what: String| PlanFileError::Invalid {
        path: path.to_owned(),
        what,
    };
    if probe.format_version == 0 {
        return Err(invalid("format_version 0 does not exist".to_owned()));
    }
    let doc: PlanIn = serde_json::from_str(text).map_err(syntax)?;
    let version = probe.format_version;
    let refreshed_at = match (version, doc.refreshed, doc.refreshed_at) {
        (1, None, None) => None,
        (1, _, _) => {
            return Err(invalid(
                "a format_version 1 plan has no `refreshed` or `refreshed_at`".to_owned(),
            ));
        }
        (_, Some(false), Some(None)) => None,
        (_, Some(true), Some(Some(at))) => Some(at),
        (_, None, _) | (_, _, None) => {
            return Err(invalid(
                "`refreshed` and `refreshed_at` are required from format_version 2 on".to_owned(),
            ));
        }
        (_, Some(refreshed), Some(_)) => {
            return Err(invalid(format!(
                "`refreshed` is {refreshed} but `refreshed_at` is {}",
                if refreshed { "null" } else { "set" }
            )));
        }
    };
    if version == 1 && doc.summary.record != 0 {
        return Err(invalid(
            "a format_version 1 plan has no `summary.record`".to_owned(),
        ));
    }
    let mut changes = Vec::with_capacity(doc.changes.len());
    for (index, c) in doc.changes.into_iter().enumerate() {
        let peer = Peer::from_parts(c.kind, c.peer)
            .map_err(|e| invalid(format!("changes[{index}]: {e}")))?;
        let action = match c.action {
            ActionIn::Delete => Action::Delete,
            ActionIn::Record => Action::Record,
            ActionIn::Forget => Action::Forget,
        };
        let reason = match (version, c.reason) {
            (1, None) if action == Action::Delete => Reason::New,
            (1, None) if action == Action::Forget => Reason::NotInManifest,
            (1, _) => {
                return Err(invalid(format!(
                    "changes[{index}]: a format_version 1 plan has only deletes and forgets, without reasons"
                )));
            }
            (_, None) => {
                return Err(invalid(format!("changes[{index}]: no `reason`")));
            }
            (_, Some(text)) => Reason::parse(&text)
                .ok_or_else(|| invalid(format!("changes[{index}]: unknown reason `{text}`")))?,
        };
        if reason.action() != action {
            return Err(invalid(format!(
                "changes[{index}]: reason `{}` does not go with action `{}`",
                reason.as_str(),
                action.as_str()
            )));
        }
        if refreshed_at.is_none() && reason.needs_refresh() {
            return Err(invalid(format!(
                "changes[{index}]: reason `{}` in a plan that was not refreshed",
                reason.as_str()
            )));
        }
        let change = Change::new(ConversationKey::new(c.from, peer), reason, c.clear_roaming);
        if let Some(prev) = changes.last().map(|p: &Change| &p.key)
            && *prev >= change.key
        {
            return Err(invalid(format!(
                "changes[{index}] ({}) is out of order or repeated",
                change.key
            )));
        }
        changes.push(change);
    }
    let counted = Summary::count(&changes, doc.summary.unchanged);
    if counted != doc.summary {
        return Err(invalid(format!(
            "the summary says {} to delete, {} to record and {} to forget, the changes hold {}, {} and {}",
            doc.summary.delete,
            doc.summary.record,
            doc.summary.forget,
            counted.delete,
            counted.record,
            counted.forget
        )));
    }
    Ok(Plan {
        app: App {
            sdkappid: doc.app.sdkappid,
            region: doc.app.region,
            admin: doc.app.admin,
        },
        state: doc.state,
        manifest_digest: doc.manifest_digest,
        changes,
        summary: doc.summary,
        refreshed_at,
    })
}

/// Reads a saved plan file.
pub fn read(path: &Path) -> Result<Plan, PlanFileError> {
    use crate::input::{Accept, ReadError, read_capped};

    let io = |source| PlanFileError::Io {
        doing: "read",
        path: path.to_owned(),
        source,
    };
    // A FIFO is accepted (`apply <(…)`), capped like any file; a device is not.
    let bytes = read_capped(path, MAX_PLAN_BYTES, Accept::RegularOrFifo).map_err(|e| match e {
        ReadError::Io(e) => io(e),
        other => io(std::io::Error::other(other)),
    })?;
    let text =
        String::from_utf8(bytes).map_err(|_| io(std::io::Error::other("it is not UTF-8 text")))?;
    from_json(&text, path)
}

/// The largest plan file read: far above a plan for millions of changes (about 120 bytes
/// each), far below what would exhaust memory.
pub const MAX_PLAN_BYTES: u64 = 1024 * 1024 * 1024;
