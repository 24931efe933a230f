//! What `apply` and the listing phase of `--refresh` print while they run: JSON lines, a
//! progress bar, or a short line now and then. The one progress renderer of the binary.
//!
//! Everything is printed by a thread of its own: the executor hands each event over a channel
//! and goes on, so neither a slow reader of stdout or stderr (a paused pipe, a backed-up CI log)
//! nor the progress bar's drawing ever holds up the results on their way to the state.

use std::io::{IsTerminal, Write};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Instant;

use timctl_core::apply::{Event, FailureGroup, RunSummary};
use timctl_core::ids::PeerKind;
use timctl_core::listing::ListingEvent;
use timctl_core::stop::StopReason;

/// What the printing thread is handed.
enum Msg {
    /// A line for stdout (a JSON event).
    Out(String),
    /// One deletion (or one user's list) done: the bar moves.
    Done,
    /// The bar's message, when there is a bar (the listing's calls per second).
    BarMessage(String),
    /// One deletion failed: the bar moves and the line is printed.
    Failed(String),
    /// A progress line, for when there is no bar.
    Progress(String),
}

/// The event sink of a run; [`Output::finish`] prints everything still queued.
pub(crate) struct Output {
    json: bool,
    run: uuid::Uuid,
    started: Instant,
    tx: Option<mpsc::Sender<Msg>>,
    printer: Option<JoinHandle<()>>,
}

impl Output {
    /// Events as JSON lines (`json`), else a bar on a terminal, else a line every few seconds
    /// (none when `quiet`). `total` is the number of deletions; `run` is the ID every JSON
    /// line carries.
    pub(crate) fn new(json: bool, quiet: bool, total: usize, run: uuid::Uuid) -> Self {
        Self::with_bar(json, quiet, run, || bar(total))
    }

    /// The listing phase's output: as [`Output::new`], `users` to list; feed it with
    /// [`Output::listing_event`].
    pub(crate) fn listing(json: bool, quiet: bool, users: usize, run: uuid::Uuid) -> Self {
        Self::with_bar(json, quiet, run, || listing_bar(users))
    }

    fn with_bar(
        json: bool,
        quiet: bool,
        run: uuid::Uuid,
        bar: impl FnOnce() -> indicatif::ProgressBar,
    ) -> Self {
        let bar = (!json && !quiet && std::io::stderr().is_terminal()).then(bar);
        let (tx, rx) = mpsc::channel::<Msg>();
        let printer = std::thread::spawn(move || print(rx, bar, quiet));
        Output {
            json,
            run,
            started: Instant::now(),
            tx: Some(tx),
            printer: Some(printer),
        }
    }

    fn send(&self, msg: Msg) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(msg);
        }
    }

    /// `--json`: the event as one line, with the time and the run's ID.
    fn json_line(&self, event: &impl serde::Serialize) {
        if let Ok(line) = timctl_core::apply::event_line(self.run, jiff::Timestamp::now(), event) {
            self.send(Msg::Out(line));
        }
    }

    /// Hands `event` over; never blocks on the terminal.
    pub(crate) fn event(&mut self, event: &Event) {
        if self.json {
            return self.json_line(event);
        }
        match event {
            Event::Deleted { .. } => self.send(Msg::Done),
            Event::Failed {
                conversation,
                code,
                message,
            } => self.send(Msg::Failed(failure_line(
                &conversation.from,
                conversation.kind,
                &conversation.peer,
                *code,
                message,
            ))),
            Event::Progress {
                done,
                total,
                failed,
                rate,
                percent,
                eta_seconds,
            } => self.send(Msg::Progress(progress_line(
                *done,
                *total,
                *failed,
                *rate,
                *percent,
                *eta_seconds,
            ))),
            Event::Planned { .. }
            | Event::Recorded { .. }
            | Event::Summary(_)
            | Event::Error { .. } => {}
        }
    }

    /// Hands a listing event over: JSON lines with `--json`, else the bar moves with each user
    /// and shows the calls per second, or a line every few seconds says how far it got.
    pub(crate) fn listing_event(&mut self, event: &ListingEvent) {
        if self.json {
            return self.json_line(event);
        }
        match event {
            ListingEvent::Listed { .. } => self.send(Msg::Done),
            ListingEvent::ListProgress {
                done,
                total,
                in_flight,
                calls_per_second,
                eta_seconds,
            } => {
                self.send(Msg::BarMessage(format!("{calls_per_second:.0} calls/s")));
                self.send(Msg::Progress(listing_line(
                    *done,
                    *total,
                    *in_flight,
                    *calls_per_second,
                    *eta_seconds,
                    self.started.elapsed().as_secs_f64(),
                )));
            }
            ListingEvent::Listing { .. } => {}
        }
    }

    /// Prints everything handed over and clears the bar, before the summary is printed.
    pub(crate) fn finish(&mut self) {
        drop(self.tx.take());
        if let Some(printer) = self.printer.take() {
            let _ = printer.join();
        }
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The bar: `181/s`, a whole number of deletions per second, not indicatif's `180.8846/s`.
fn bar(total: usize) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total as u64);
    let style = indicatif::ProgressStyle::with_template(
        "{bar:40} {pos}/{len} done  {rate}  ETA {eta}  {msg}",
    )
    .map(|s| {
        s.with_key(
            "rate",
            |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{}", per_second(state.per_sec()));
            },
        )
    })
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

/// The listing's bar: users listed, and the calls per second as its message.
fn listing_bar(users: usize) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(users as u64);
    let style = indicatif::ProgressStyle::with_template(
        "{bar:40} {pos}/{len} users listed  {msg}  ETA {eta}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

/// The listing's progress line without a terminal: `Listing conversation lists: 120/500 users,
/// 190 calls/s, ETA 2s (4s elapsed)`. Once no user waits, the time left is however long the
/// lists still paging are: unknown, and said so rather than guessed from the users done.
fn listing_line(
    done: usize,
    total: usize,
    in_flight: usize,
    calls_per_second: f64,
    eta_seconds: Option<f64>,
    elapsed_seconds: f64,
) -> String {
    let eta = match eta_seconds {
        Some(s) => format!("ETA {s:.0}s"),
        None if done > 0 && in_flight == 1 => "1 list still paging".to_owned(),
        None if done > 0 && in_flight > 1 => format!("{in_flight} lists still paging"),
        None => "ETA ?".to_owned(),
    };
    format!(
        "Listing conversation lists: {done}/{total} users, {calls_per_second:.0} calls/s, {eta} ({elapsed_seconds:.0}s elapsed)"
    )
}

/// A rate as a person reads it: `181/s`.
pub(crate) fn per_second(rate: f64) -> String {
    format!("{:.0}/s", rate)
}

/// The printing thread.
fn print(rx: mpsc::Receiver<Msg>, bar: Option<indicatif::ProgressBar>, quiet: bool) {
    let mut failed = 0usize;
    for msg in rx {
        // A closed stdout or stderr is not worth stopping deletions for.
        match msg {
            Msg::Out(line) => {
                let _ = writeln!(std::io::stdout().lock(), "{line}");
            }
            Msg::Done => {
                if let Some(bar) = &bar {
                    bar.inc(1);
                }
            }
            Msg::BarMessage(message) => {
                if let Some(bar) = &bar {
                    bar.set_message(message);
                }
            }
            Msg::Failed(line) => {
                failed += 1;
                match &bar {
                    Some(bar) => {
                        bar.inc(1);
                        bar.set_message(format!("{failed} failed"));
                        bar.println(line);
                    }
                    None => {
                        let _ = writeln!(std::io::stderr().lock(), "{line}");
                    }
                }
            }
            // The executor emits one every 2 s on its own clock: each is printed as it comes,
            // so the lines keep that beat (gating them again here on this thread's clock
            // skipped every other one).
            Msg::Progress(line) => {
                if bar.is_none() && !quiet {
                    let _ = writeln!(std::io::stderr().lock(), "{line}");
                }
            }
        }
    }
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let _ = std::io::stdout().flush();
}

/// A failure as a person reads it: `failed: alice → user:bob: 50002 (Incorrect request
/// parameter)`. The client's message already starts with the code when there is one; the code
/// is added only when it does not.
pub(crate) fn failure_line(
    from: &str,
    kind: PeerKind,
    peer: &str,
    code: Option<i64>,
    message: &str,
) -> String {
    match code {
        Some(code) if !message.starts_with(&code.to_string()) => {
            format!("failed: {from} → {kind}:{peer}: {code}: {message}")
        }
        _ => format!("failed: {from} → {kind}:{peer}: {message}"),
    }
}

/// The progress line without a terminal: `Progress: 120/500 done (24%), 0 failed, 197 per
/// second, ETA 2s`.
pub(crate) fn progress_line(
    done: usize,
    total: usize,
    failed: usize,
    rate: f64,
    percent: u32,
    eta_seconds: Option<u64>,
) -> String {
    let eta = eta_seconds.map_or_else(|| "unknown".to_owned(), duration);
    format!(
        "Progress: {done}/{total} done ({percent}%), {failed} failed, {rate:.0} per second, ETA {eta}"
    )
}

/// `45s`, `3m05s`, `2h03m`.
fn duration(seconds: u64) -> String {
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// The last line of a run: `Apply complete: …`, or `Apply stopped: …` when anything stopped
/// it (a signal, a fatal answer, too many failures, the state). The counts have the names of
/// the JSON summary's fields: `already absent` (50001: the user does not exist) and `recorded`
/// only when there are any.
pub(crate) fn final_line(s: &RunSummary) -> String {
    let verb = if s.stopped.is_some() {
        "stopped"
    } else {
        "complete"
    };
    let mut counts = vec![format!("{} deleted", s.deleted)];
    if s.already_absent > 0 {
        counts.push(format!("{} already absent", s.already_absent));
    }
    if s.recorded > 0 {
        counts.push(format!("{} recorded", s.recorded));
    }
    counts.push(format!("{} forgotten", s.forgotten));
    counts.push(format!("{} failed", s.failed));
    if s.not_started > 0 {
        counts.push(format!("{} not started", s.not_started));
    }
    format!("Apply {verb}: {}.", counts.join(", "))
}

/// The recap of a run's failures, grouped by code with the first few conversations of each,
/// and the command that retries them: nothing when nothing failed.
pub(crate) fn recap(s: &RunSummary, retry: &str) -> Vec<String> {
    if s.failures.is_empty() {
        return Vec::new();
    }
    let mut lines = vec![format!(
        "{} deletions failed; they are not in the state, so the next apply makes them again:",
        s.failed
    )];
    for FailureGroup {
        code,
        message,
        count,
        first,
    } in &s.failures
    {
        let what = match code {
            Some(code) if message.starts_with(&code.to_string()) => message.clone(),
            Some(code) => format!("{code}: {message}"),
            None => format!("no answer: {message}"),
        };
        let named: Vec<String> = first
            .iter()
            .map(|c| format!("{} → {}:{}", c.from, c.kind, c.peer))
            .collect();
        let more = count.saturating_sub(first.len());
        let more = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        lines.push(format!("  {count} × {what}: {}{more}", named.join(", ")));
    }
    lines.push(format!("Retry them: {retry}"));
    lines
}

/// The command that retries a run's failures: `timctl apply`, the manifests it was given,
/// `--user` for each failed user when there are few. Nothing secret goes in it (the state is
/// left to `--state`/`TIMCTL_STATE` as given, since a URL may hold a password).
pub(crate) fn retry_command(manifests: &[String], s: &RunSummary, saved_plan: bool) -> String {
    let mut words = vec!["timctl".to_owned(), "apply".to_owned()];
    if saved_plan {
        // A saved plan is stale once the run recorded anything: plan again from the manifests.
        words.push("-f".to_owned());
        words.push("MANIFESTS".to_owned());
    }
    for m in manifests {
        words.push("-f".to_owned());
        words.push(shell_word(m));
    }
    if !s.more_failed_users {
        for user in &s.failed_users {
            words.push("--user".to_owned());
            words.push(shell_word(user));
        }
    }
    words.join(" ")
}

/// `word`, quoted for a POSIX shell when it needs it.
fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./@:=+,%".contains(&b));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// Whether a run that ended this way was stopped by a signal.
pub(crate) fn signalled(s: &RunSummary) -> bool {
    matches!(
        s.stopped,
        Some(StopReason::Interrupted | StopReason::Terminated)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use timctl_core::apply::FailureRecap;

    #[test]
    fn a_failure_line_says_its_code_once() {
        assert_eq!(
            failure_line(
                "a",
                PeerKind::User,
                "b",
                Some(50002),
                "50002 (Incorrect request parameter)"
            ),
            "failed: a → user:b: 50002 (Incorrect request parameter)"
        );
        assert_eq!(
            failure_line("a", PeerKind::Group, "@TGS#g", Some(91000), "odd"),
            "failed: a → group:@TGS#g: 91000: odd"
        );
        assert_eq!(
            failure_line("a", PeerKind::User, "b", None, "timed out"),
            "failed: a → user:b: timed out"
        );
    }

    #[test]
    fn a_progress_line_has_the_share_done_and_the_eta() {
        assert_eq!(
            progress_line(120, 500, 1, 196.6, 24, Some(2)),
            "Progress: 120/500 done (24%), 1 failed, 197 per second, ETA 2s"
        );
        assert!(progress_line(0, 5, 0, 0.0, 0, None).ends_with("ETA unknown"));
        assert_eq!(duration(185), "3m05s");
        assert_eq!(duration(7380), "2h03m");
    }

    #[test]
    fn the_final_line_says_stopped_and_uses_the_json_names() {
        let mut s = RunSummary {
            deleted: 4,
            already_absent: 2,
            forgotten: 1,
            failed: 2,
            ..RunSummary::default()
        };
        assert_eq!(
            final_line(&s),
            "Apply complete: 4 deleted, 2 already absent, 1 forgotten, 2 failed."
        );
        s.stopped = Some(StopReason::Interrupted);
        s.not_started = 7;
        assert_eq!(
            final_line(&s),
            "Apply stopped: 4 deleted, 2 already absent, 1 forgotten, 2 failed, 7 not started."
        );
        assert_eq!(
            final_line(&RunSummary::default()),
            "Apply complete: 0 deleted, 0 forgotten, 0 failed."
        );
    }

    #[test]
    fn the_recap_groups_failures_and_names_the_retry() {
        let mut recap_of = FailureRecap::default();
        for i in 0..5 {
            recap_of.add(
                &format!("u{i}"),
                PeerKind::User,
                "p",
                Some(50002),
                "50002 (bad)",
            );
        }
        recap_of.add("t", PeerKind::Group, "@TGS#g", None, "timed out");
        let (failed_users, more_failed_users) = recap_of.users();
        let s = RunSummary {
            failed: 6,
            failures: recap_of.groups(),
            failed_users,
            more_failed_users,
            ..RunSummary::default()
        };
        let retry = retry_command(&["my manifests".to_owned()], &s, false);
        assert_eq!(
            retry,
            "timctl apply -f 'my manifests' --user t --user u0 --user u1 --user u2 --user u3 --user u4"
        );
        assert_eq!(
            recap(&s, &retry),
            [
                "6 deletions failed; they are not in the state, so the next apply makes them again:",
                "  5 × 50002 (bad): u0 → user:p, u1 → user:p, u2 → user:p and 2 more",
                "  1 × no answer: timed out: t → group:@TGS#g",
                &format!("Retry them: {retry}"),
            ]
        );
        assert!(recap(&RunSummary::default(), "x").is_empty());
    }

    #[test]
    fn rates_are_whole_numbers_per_second() {
        assert_eq!(per_second(180.8846), "181/s");
        assert_eq!(per_second(0.0), "0/s");
    }
}
