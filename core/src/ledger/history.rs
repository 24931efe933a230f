//! The state's history: an append-only log of every change timctl made to the entries, and the
//! runs that made them (`timctl state history`, `timctl state runs`).
//!
//! Events are appended by the writers in the same transaction as the change they describe
//! (`sqlite/writer.rs`, `postgres/writer.rs`, both through `LedgerWriter::record_items`);
//! nothing updates one, and only [`prune`](crate::ledger::AnyLedger) (`state prune-history`)
//! deletes them. Reading streams them, newest first, from one read transaction, through a
//! callback: a history of ten million events is never held in memory.

use crate::ids::{ConversationKey, Peer, UserId};
use crate::ledger::{LedgerError, RunInfo};
use crate::plan::Reason;

/// The `format_version` of every `state history --json` and `state runs --json` line.
pub const FORMAT_VERSION: u32 = 1;

/// What happened to an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventAction {
    /// A confirmed deletion (or a user that does not exist).
    Deleted,
    /// A refresh saw the conversation absent; no call was made.
    Recorded,
    /// Dropped from the state because no manifest names it any more.
    Forgotten,
    /// Removed by `timctl state rm`.
    Removed,
}

impl EventAction {
    /// Every action, for parsing.
    pub const ALL: [EventAction; 4] = [
        EventAction::Deleted,
        EventAction::Recorded,
        EventAction::Forgotten,
        EventAction::Removed,
    ];

    /// `deleted`, `recorded`, `forgotten` or `removed`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventAction::Deleted => "deleted",
            EventAction::Recorded => "recorded",
            EventAction::Forgotten => "forgotten",
            EventAction::Removed => "removed",
        }
    }

    /// The action spelled `s`, if any.
    pub fn parse(s: &str) -> Option<EventAction> {
        EventAction::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// Why it happened: the plan's reason, `enforced` (serve, after a callback), or `requested`
/// (`state rm`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventReason {
    /// The plan's reason (`new`, `came_back`, `absent`, `not_in_manifest`, …).
    Plan(Reason),
    /// serve deleted it after a callback said it came back.
    Enforced,
    /// A person asked (`state rm`).
    Requested,
}

impl EventReason {
    /// As `state history` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            EventReason::Plan(r) => r.as_str(),
            EventReason::Enforced => "enforced",
            EventReason::Requested => "requested",
        }
    }

    /// The reason spelled `s`, if any.
    pub fn parse(s: &str) -> Option<EventReason> {
        match s {
            "enforced" => Some(EventReason::Enforced),
            "requested" => Some(EventReason::Requested),
            other => Reason::parse(other).map(EventReason::Plan),
        }
    }
}

/// One event of the history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// When (to the millisecond): the confirmation of a deletion, the refresh that saw an
    /// absence, the moment of a forget or removal.
    pub at: jiff::Timestamp,
    /// What happened.
    pub action: EventAction,
    /// Why.
    pub reason: EventReason,
    /// Which conversation.
    pub key: ConversationKey,
    /// Whether roaming messages were cleared (for a forget or removal: what the entry said).
    pub clear_roaming: bool,
    /// The run that did it.
    pub run_id: uuid::Uuid,
    /// For an enforced deletion: the callback that triggered it, a JSON object.
    pub trigger: Option<serde_json::Value>,
    /// For an enforced deletion: from the callback's arrival to the confirmed deletion.
    pub latency_ms: Option<u64>,
}

/// Which events to read: each filter given narrows; newest first, at most `limit` (`None`:
/// all).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Only this From_Account's conversations.
    pub user: Option<UserId>,
    /// Only conversations with this peer.
    pub peer: Option<Peer>,
    /// Only events at or after this instant.
    pub since: Option<jiff::Timestamp>,
    /// Only events before this instant.
    pub until: Option<jiff::Timestamp>,
    /// Only this run's events.
    pub run: Option<uuid::Uuid>,
    /// At most this many (`None`: all).
    pub limit: Option<u64>,
}

/// Why the history could not be read to its end.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum HistoryError {
    /// The state could not be read.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Ledger(#[from] LedgerError),
    /// The reader of the events failed (stdout closed, a full disk).
    #[error("cannot write the history")]
    Write(#[source] std::io::Error),
}

impl From<super::PgError> for HistoryError {
    fn from(e: super::PgError) -> Self {
        HistoryError::Ledger(e.into())
    }
}

/// Reads a WHEN: an RFC 3339 time, or a duration back from `now` (`7d`, `24h`, `30m`).
pub fn parse_when(text: &str, now: jiff::Timestamp) -> Result<jiff::Timestamp, String> {
    let text = text.trim();
    if let Ok(at) = text.parse::<jiff::Timestamp>() {
        return Ok(at);
    }
    let back = humantime::parse_duration(text).map_err(|_| {
        format!(
            "{text:?} is neither an RFC 3339 time (2026-01-31T12:00:00Z) nor a duration back from now (7d, 24h)"
        )
    })?;
    let back = jiff::SignedDuration::try_from(back).map_err(|_| format!("{text:?} is too long"))?;
    now.checked_sub(back)
        .map_err(|_| format!("{text:?} reaches before the earliest time timctl can show"))
}

/// Reads a run's ID (a UUID, as `state runs` shows it).
pub fn parse_run_id(text: &str) -> Result<uuid::Uuid, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a run ID (a UUID, as `timctl state runs` shows)"))
}

/// Writes one event as a JSON line (`state history --json`): `format_version`, `at`, `action`,
/// `reason`, `from`, `type`, `peer`, `clear_roaming`, `run`, and, for an enforced deletion,
/// `trigger` and `latency_ms` (else absent).
pub fn write_event_json(event: &Event, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    /// The line, its fields in the documented order.
    #[derive(serde::Serialize)]
    struct Line<'a> {
        format_version: u32,
        at: String,
        action: &'static str,
        reason: &'static str,
        from: &'a str,
        #[serde(rename = "type")]
        kind: &'static str,
        peer: &'a str,
        clear_roaming: bool,
        run: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        trigger: Option<&'a serde_json::Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        latency_ms: Option<u64>,
    }
    let line = Line {
        format_version: FORMAT_VERSION,
        at: millis(event.at),
        action: event.action.as_str(),
        reason: event.reason.as_str(),
        from: event.key.from.as_str(),
        kind: event.key.peer.kind().as_str(),
        peer: event.key.peer.id(),
        clear_roaming: event.clear_roaming,
        run: event.run_id.to_string(),
        trigger: event.trigger.as_ref(),
        latency_ms: event.latency_ms,
    };
    serde_json::to_writer(&mut *out, &line).map_err(std::io::Error::from)?;
    out.write_all(b"\n")
}

/// The header of `state history`'s table.
pub fn write_event_header(out: &mut dyn std::io::Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<24}  {:<9}  {:<15}  {:<20}  {:<30}  {:<8}  RUN",
        "AT", "ACTION", "REASON", "FROM", "CONVERSATION", "ROAMING"
    )
}

/// One row of `state history`'s table (columns of fixed width, since the rows are streamed).
pub fn write_event_row(event: &Event, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<24}  {:<9}  {:<15}  {:<20}  {:<30}  {:<8}  {}",
        millis(event.at),
        event.action.as_str(),
        event.reason.as_str(),
        event.key.from.as_str(),
        event.key.peer.to_string(),
        if event.clear_roaming { "cleared" } else { "-" },
        event.run_id
    )
}

/// Writes one run as a JSON line (`state runs --json`): `format_version`, `run`, `command`,
/// `timctl_version`, `commit`, `manifest_digest`, `host`, `os_user`, `ci_job_url`,
/// `started_at`, `ended_at`, `counts` (unknowns as `null`).
pub fn write_run_json(run: &RunInfo, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    /// The line, its fields in the documented order.
    #[derive(serde::Serialize)]
    struct Line<'a> {
        format_version: u32,
        run: String,
        command: &'static str,
        timctl_version: &'a str,
        commit: Option<&'a str>,
        manifest_digest: &'a str,
        host: Option<&'a str>,
        os_user: Option<&'a str>,
        ci_job_url: Option<&'a str>,
        started_at: String,
        ended_at: Option<String>,
        counts: Option<&'a std::collections::BTreeMap<String, u64>>,
    }
    let line = Line {
        format_version: FORMAT_VERSION,
        run: run.run_id.to_string(),
        command: run.command.as_str(),
        timctl_version: &run.timctl_version,
        commit: run.origin.commit.as_deref(),
        manifest_digest: &run.manifest_digest,
        host: run.origin.host.as_deref(),
        os_user: run.origin.os_user.as_deref(),
        ci_job_url: run.origin.ci_job_url.as_deref(),
        started_at: millis(run.started_at),
        ended_at: run.ended_at.map(millis),
        counts: run.counts.as_ref(),
    };
    serde_json::to_writer(&mut *out, &line).map_err(std::io::Error::from)?;
    out.write_all(b"\n")
}

/// The header of `state runs`' table.
pub fn write_run_header(out: &mut dyn std::io::Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<36}  {:<19}  {:<24}  {:<24}  {:<20}  COUNTS",
        "RUN", "COMMAND", "STARTED", "ENDED", "HOST"
    )
}

/// One row of `state runs`' table.
pub fn write_run_row(run: &RunInfo, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let counts = run.counts.as_ref().map_or_else(
        || "-".to_owned(),
        |c| {
            c.iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        },
    );
    writeln!(
        out,
        "{:<36}  {:<19}  {:<24}  {:<24}  {:<20}  {}{}",
        run.run_id,
        run.command.as_str(),
        millis(run.started_at),
        run.ended_at.map_or_else(|| "-".to_owned(), millis),
        run.origin.host.as_deref().unwrap_or("-"),
        counts,
        run.origin
            .ci_job_url
            .as_deref()
            .map(|u| format!(" ({u})"))
            .unwrap_or_default()
    )
}

/// RFC 3339 in UTC with milliseconds: `2026-01-31T12:00:00.123Z`.
pub fn millis(at: jiff::Timestamp) -> String {
    format!("{at:.3}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_when_is_a_time_or_a_duration_back_from_now() {
        let now: jiff::Timestamp = "2026-02-10T00:00:00Z".parse().unwrap();
        assert_eq!(
            parse_when("7d", now).unwrap(),
            "2026-02-03T00:00:00Z".parse::<jiff::Timestamp>().unwrap()
        );
        assert_eq!(
            parse_when("2026-01-01T10:00:00+02:00", now).unwrap(),
            "2026-01-01T08:00:00Z".parse::<jiff::Timestamp>().unwrap()
        );
        let err = parse_when("last tuesday", now).unwrap_err();
        assert!(err.contains("RFC 3339"), "{err}");
    }

    #[test]
    fn an_event_line_has_its_fields_in_the_documented_order() {
        let event = Event {
            at: jiff::Timestamp::from_millisecond(1_700_000_000_120).unwrap(),
            action: EventAction::Deleted,
            reason: EventReason::Plan(Reason::CameBack),
            key: ConversationKey::new(
                UserId::new("alice").unwrap(),
                "group:@TGS#1".parse().unwrap(),
            ),
            clear_roaming: true,
            run_id: uuid::Uuid::nil(),
            trigger: None,
            latency_ms: None,
        };
        let mut out = Vec::new();
        write_event_json(&event, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"format_version\":1,\"at\":\"2023-11-14T22:13:20.120Z\",\"action\":\"deleted\",\
             \"reason\":\"came_back\",\"from\":\"alice\",\"type\":\"group\",\"peer\":\"@TGS#1\",\
             \"clear_roaming\":true,\"run\":\"00000000-0000-0000-0000-000000000000\"}\n"
        );
    }

    #[test]
    fn times_are_shown_in_utc_with_milliseconds() {
        let at = jiff::Timestamp::from_millisecond(1_700_000_000_120).unwrap();
        assert_eq!(millis(at), "2023-11-14T22:13:20.120Z");
    }

    #[test]
    fn ci_job_urls_come_from_github_or_gitlab_variables() {
        let github = |name: &str| match name {
            "GITHUB_ACTIONS" => Some("true".to_owned()),
            "GITHUB_SERVER_URL" => Some("https://github.com".to_owned()),
            "GITHUB_REPOSITORY" => Some("o/r".to_owned()),
            "GITHUB_RUN_ID" => Some("42".to_owned()),
            _ => None,
        };
        assert_eq!(
            crate::ledger::RunOrigin::ci_job_url(github).as_deref(),
            Some("https://github.com/o/r/actions/runs/42")
        );
        let gitlab = |name: &str| match name {
            "GITLAB_CI" => Some("true".to_owned()),
            "CI_JOB_URL" => Some("https://gitlab.example/o/r/-/jobs/7".to_owned()),
            _ => None,
        };
        assert_eq!(
            crate::ledger::RunOrigin::ci_job_url(gitlab).as_deref(),
            Some("https://gitlab.example/o/r/-/jobs/7")
        );
        let neither = |name: &str| (name == "CI_JOB_URL").then(|| "https://x".to_owned());
        assert_eq!(crate::ledger::RunOrigin::ci_job_url(neither), None);
    }
}
