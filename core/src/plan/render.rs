//! A plan for people: text for a terminal, Markdown for a pull-request comment. (The JSON
//! document is in [`super::saved`].)
//!
//! Long plans stay readable: both show at most `limit` changes and then count the rest. A plan
//! holds no secrets, so neither does its rendering.

use std::io::{self, Write};

use super::{Action, Change, Plan, Reason, Summary};

/// How many changes text and Markdown show by default; the rest are counted.
pub const DEFAULT_LIMIT: usize = 200;

/// `Plan: N to delete, M to forget, K unchanged.`, or `Plan: N to delete, R to record, M to
/// forget, K unchanged.` when there are records.
pub fn summary_line(s: &Summary) -> String {
    if s.record > 0 {
        format!(
            "Plan: {} to delete, {} to record, {} to forget, {} unchanged.",
            s.delete, s.record, s.forget, s.unchanged
        )
    } else {
        format!(
            "Plan: {} to delete, {} to forget, {} unchanged.",
            s.delete, s.forget, s.unchanged
        )
    }
}

/// The line saying when a refreshed plan read the server (`None` for a plan that did not).
pub fn refreshed_line(plan: &Plan) -> Option<String> {
    plan.refreshed_at.map(|at| {
        format!("Refreshed at {at}: planned from the server's conversation lists and the state.")
    })
}

/// What a refresh learned about a delete, for people; `None` for the reasons of a plan made
/// from the state alone (a delete there needs no explaining).
fn delete_note(reason: Reason) -> Option<&'static str> {
    match reason {
        Reason::Present => Some("on the server"),
        Reason::CameBack => Some("came back on the server"),
        Reason::Unverified => Some("its list could not be read"),
        Reason::New
        | Reason::ClearRoaming
        | Reason::Reassert
        | Reason::NotInManifest
        | Reason::Absent => None,
    }
}

/// The line for a plan with no changes.
pub const NO_CHANGES: &str = "No changes. The state matches the manifest.";

/// What was left out when only `limit` changes were shown.
struct Rest {
    changes: usize,
    delete: usize,
    record: usize,
    forget: usize,
    users: usize,
}

/// The changes to show and the count of those left out (`None` when all are shown).
fn split(changes: &[Change], limit: Option<usize>) -> (&[Change], Option<Rest>) {
    let shown = limit.map_or(changes.len(), |l| l.min(changes.len()));
    let (head, tail) = changes.split_at(shown);
    if tail.is_empty() {
        return (head, None);
    }
    let count = |a: Action| tail.iter().filter(|c| c.action == a).count();
    let mut users = 0;
    let mut last = None;
    for c in tail {
        if last != Some(&c.key.from) {
            users += 1;
            last = Some(&c.key.from);
        }
    }
    let rest = Rest {
        changes: tail.len(),
        delete: count(Action::Delete),
        record: count(Action::Record),
        forget: count(Action::Forget),
        users,
    };
    (head, Some(rest))
}

fn rest_sentence(rest: &Rest) -> String {
    let record = if rest.record > 0 {
        format!("{} to record, ", rest.record)
    } else {
        String::new()
    };
    format!(
        "{} more change{} ({} to delete, {record}{} to forget) for {} user{} not shown; --limit 0 shows all, --format json lists them",
        rest.changes,
        if rest.changes == 1 { "" } else { "s" },
        rest.delete,
        rest.forget,
        rest.users,
        if rest.users == 1 { "" } else { "s" },
    )
}

/// ANSI styles for a terminal, as Terraform colours its plans: deletions red, records green,
/// forgets yellow, users and the summary bold.
struct Paint {
    on: bool,
}

impl Paint {
    const RED: &'static str = "\x1b[31m";
    const GREEN: &'static str = "\x1b[32m";
    const YELLOW: &'static str = "\x1b[33m";
    const BOLD: &'static str = "\x1b[1m";
    const RESET: &'static str = "\x1b[0m";

    fn paint(&self, style: &str, text: &str) -> String {
        if self.on {
            format!("{style}{text}{}", Self::RESET)
        } else {
            text.to_owned()
        }
    }
}

/// Writes the text rendering: changes grouped by user, then the summary line. `limit`: at most
/// that many changes (`None`: all).
pub fn write_text(plan: &Plan, limit: Option<usize>, out: &mut dyn Write) -> io::Result<()> {
    write_text_styled(plan, limit, false, out)
}

/// [`write_text`], coloured with ANSI escapes when `colour` (a terminal that wants them: the
/// binary decides from `--color` and `NO_COLOR`).
pub fn write_text_styled(
    plan: &Plan,
    limit: Option<usize>,
    colour: bool,
    out: &mut dyn Write,
) -> io::Result<()> {
    let paint = Paint { on: colour };
    if let Some(line) = refreshed_line(plan) {
        writeln!(out, "{line}")?;
        writeln!(out)?;
    }
    if !plan.has_changes() {
        writeln!(out, "{NO_CHANGES}")?;
        return Ok(());
    }
    let (shown, rest) = split(&plan.changes, limit);
    let mut last = None;
    for c in shown {
        if last != Some(&c.key.from) {
            writeln!(out, "{}", paint.paint(Paint::BOLD, c.key.from.as_str()))?;
            last = Some(&c.key.from);
        }
        match c.action {
            Action::Delete => {
                let notes: Vec<&str> = [
                    c.clear_roaming.then_some("and clear roaming messages"),
                    delete_note(c.reason),
                ]
                .into_iter()
                .flatten()
                .collect();
                let delete = paint.paint(Paint::RED, "- delete");
                if notes.is_empty() {
                    writeln!(out, "  {delete} {}", c.key.peer)?
                } else {
                    writeln!(out, "  {delete} {} ({})", c.key.peer, notes.join("; "))?
                }
            }
            Action::Record => writeln!(
                out,
                "  {} {} (not on the server)",
                paint.paint(Paint::GREEN, "+ record"),
                c.key.peer
            )?,
            Action::Forget => writeln!(
                out,
                "  {} {} (no call; no longer in the manifest)",
                paint.paint(Paint::YELLOW, "~ forget"),
                c.key.peer
            )?,
        }
    }
    if let Some(rest) = rest {
        writeln!(out, "  … {}.", rest_sentence(&rest))?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "{}",
        paint.paint(Paint::BOLD, &summary_line(&plan.summary))
    )
}

/// The text rendering as a string.
pub fn text(plan: &Plan, limit: Option<usize>) -> String {
    let mut out = Vec::new();
    write_text(plan, limit, &mut out).expect("writing to a Vec cannot fail");
    String::from_utf8(out).expect("IDs are ASCII")
}

/// An ID inside Markdown: every character but letters, digits, spaces, `-` and `.` becomes an HTML
/// entity, so no ID can end a table cell, open a link, start emphasis, mention or emoji.
fn md_code(s: &str) -> String {
    let mut out = String::from("<code>");
    for ch in s.chars() {
        if ch.is_ascii_alphanumeric() || matches!(ch, ' ' | '-' | '.') {
            out.push(ch);
        } else {
            out.push_str(&format!("&#{};", u32::from(ch)));
        }
    }
    out.push_str("</code>");
    out
}

/// Writes the Markdown rendering, for a pull-request comment: a summary table, then the changes
/// in a collapsible block.
pub fn write_markdown(plan: &Plan, limit: Option<usize>, out: &mut dyn Write) -> io::Result<()> {
    let s = &plan.summary;
    if plan.has_changes() && s.record > 0 {
        writeln!(
            out,
            "### timctl plan: {} to delete, {} to record, {} to forget, {} unchanged",
            s.delete, s.record, s.forget, s.unchanged
        )?;
    } else if plan.has_changes() {
        writeln!(
            out,
            "### timctl plan: {} to delete, {} to forget, {} unchanged",
            s.delete, s.forget, s.unchanged
        )?;
    } else {
        writeln!(out, "### timctl plan: no changes")?;
    }
    writeln!(out)?;
    let state = match &plan.state {
        Some(st) => format!(
            "lineage {}, serial {}",
            md_code(&st.lineage.to_string()),
            st.serial
        ),
        None => "none yet".to_owned(),
    };
    writeln!(
        out,
        "App {} ({}), admin {} · state: {} · manifest digest {}",
        plan.app.sdkappid,
        plan.app.region,
        md_code(plan.app.admin.as_str()),
        state,
        md_code(&plan.manifest_digest),
    )?;
    writeln!(out)?;
    if let Some(at) = plan.refreshed_at {
        writeln!(
            out,
            "Refreshed at {at}: planned from the server's conversation lists and the state."
        )?;
        writeln!(out)?;
    }
    writeln!(out, "| Action | Conversations |")?;
    writeln!(out, "|---|--:|")?;
    writeln!(out, "| delete | {} |", s.delete)?;
    if plan.refreshed() || s.record > 0 {
        writeln!(out, "| record | {} |", s.record)?;
    }
    writeln!(out, "| forget | {} |", s.forget)?;
    writeln!(out, "| unchanged | {} |", s.unchanged)?;
    writeln!(out)?;
    if !plan.has_changes() {
        writeln!(out, "{NO_CHANGES}")?;
        return Ok(());
    }
    let (shown, rest) = split(&plan.changes, limit);
    writeln!(out, "<details>")?;
    writeln!(out, "<summary>{} changes</summary>", plan.changes.len())?;
    writeln!(out)?;
    writeln!(
        out,
        "| From | Action | Reason | Conversation | Clear roaming |"
    )?;
    writeln!(out, "|---|---|---|---|---|")?;
    for c in shown {
        writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            md_code(c.key.from.as_str()),
            c.action.as_str(),
            c.reason.as_str(),
            md_code(&c.key.peer.to_string()),
            if c.clear_roaming { "yes" } else { "no" }
        )?;
    }
    if let Some(rest) = rest {
        writeln!(out)?;
        writeln!(out, "_… {}._", rest_sentence(&rest))?;
    }
    writeln!(out)?;
    writeln!(out, "</details>")
}

/// The Markdown rendering as a string.
pub fn markdown(plan: &Plan, limit: Option<usize>) -> String {
    let mut out = Vec::new();
    write_markdown(plan, limit, &mut out).expect("writing to a Vec cannot fail");
    String::from_utf8(out).expect("IDs are ASCII")
}
