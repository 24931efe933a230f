//! Standard output, written in one place so that a reader going away is handled once.
//!
//! A closed stdout (`timctl plan | head -1`) is not an error: the reader has what it wanted.
//! Rust ignores SIGPIPE, so the write fails with `BrokenPipe`; timctl then stops writing and
//! exits quietly with status 0, as ripgrep does. Any other write error is reported.
//!
//! Standard error is written with [`eprintln_lossy!`] and [`eprint_lossy!`], never `eprintln!`,
//! which panics when stderr is closed (`timctl apply 2>&1 | head`): a lost warning must not
//! turn a finished, recorded run into exit 101.

use std::io::Write;

/// `eprintln!` without its panic: a line to a closed stderr is lost, and nothing else.
macro_rules! eprintln_lossy {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}
pub(crate) use eprintln_lossy;

/// One line for a person on stderr, or, under serve's `--log-format json`, the same text as one
/// JSON object in the shape of the log's other lines (`timestamp`, `level`, `fields.message`),
/// so that a log collector parsing one object per line never meets plain text.
pub(crate) fn status_line(json: bool, level: &str, text: &str) {
    if json {
        let line = serde_json::json!({
            "timestamp": jiff::Timestamp::now().to_string(),
            "level": level,
            "fields": { "message": text },
        });
        eprintln_lossy!("{line}");
    } else {
        eprintln_lossy!("{text}");
    }
}

/// `eprint!` without its panic: text to a closed stderr is lost, and nothing else.
macro_rules! eprint_lossy {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut stderr = std::io::stderr();
        let _ = write!(stderr, $($arg)*).and_then(|()| stderr.flush());
    }};
}
pub(crate) use eprint_lossy;

use miette::{Context, IntoDiagnostic};

/// Stdout was closed by its reader: `main` exits 0 without a message.
#[derive(Debug)]
pub(crate) struct ClosedStdout;

impl std::fmt::Display for ClosedStdout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stdout was closed")
    }
}

impl std::error::Error for ClosedStdout {}

impl miette::Diagnostic for ClosedStdout {}

/// Writes `what` (for the message of a real failure) to stdout through `write`, buffered and
/// flushed at the end.
pub(crate) fn to_stdout(
    what: &str,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> miette::Result<()> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match write(&mut out).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(ClosedStdout.into()),
        written => written
            .into_diagnostic()
            .wrap_err_with(|| format!("cannot write {what} to stdout")),
    }
}

/// Whether `report` says only that stdout was closed.
pub(crate) fn is_closed_stdout(report: &miette::Report) -> bool {
    report.downcast_ref::<ClosedStdout>().is_some()
}

/// `shown`, comma-separated, then ` and N more` for the rest of `total`: a list of users in a
/// warning, kept to one line.
pub(crate) fn shortened_list(shown: &[impl AsRef<str>], total: usize) -> String {
    let names: Vec<&str> = shown.iter().map(AsRef::as_ref).collect();
    match total.saturating_sub(shown.len()) {
        0 => names.join(", "),
        more => format!("{} and {more} more", names.join(", ")),
    }
}

/// How a plan is printed (`plan --format`, `show --format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    Text,
    Json,
    Markdown,
}

/// Prints a plan in `format` on stdout; text is coloured when `colour`
/// ([`crate::args::Global::color_stdout`]); text and markdown show at most `limit` changes
/// (0: all).
pub(crate) fn print_plan(
    plan: &timctl_core::plan::Plan,
    format: Format,
    limit: usize,
    colour: bool,
) -> miette::Result<()> {
    use timctl_core::plan::{render, saved};
    let limit = (limit != 0).then_some(limit);
    to_stdout("the plan", |out| match format {
        Format::Text => render::write_text_styled(plan, limit, colour, out),
        Format::Json => saved::to_writer(plan, out),
        Format::Markdown => render::write_markdown(plan, limit, out),
    })
}

/// Each problem once, with its place in the snippet's header (or in the title for a problem
/// about a whole file), then the count last, as rustc and cargo do:
/// `error: could not validate the manifests due to 3 previous errors`. Without the run's
/// secrets, whichever command prints them.
pub(crate) fn print_problems(errors: &timctl_core::manifest::ManifestErrors, doing: &str) {
    let errors = &crate::redact::problems(errors);
    let mut stderr = std::io::stderr().lock();
    for problem in errors.problems() {
        let rendered = format!("{:?}", miette::Report::new(problem.clone()));
        let _ = writeln!(stderr, "{}", rendered.trim_end());
        // The other place of a duplicate on a line of its own, outside miette's wrapping, so
        // that a terminal can make the whole path clickable.
        if let Some((file, place)) = &problem.other {
            let _ = writeln!(
                stderr,
                "  note: the other place is {}:{place}",
                file.display()
            );
        }
        let _ = writeln!(stderr);
    }
    let n = errors.problems().len();
    let _ = writeln!(
        stderr,
        "error: could not {doing} the manifests due to {n} previous {}",
        plural(n, "error", "errors")
    );
}

/// `one` or `many`, as `n` says.
pub(crate) fn plural<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 { one } else { many }
}

#[cfg(test)]
mod tests {
    use super::shortened_list;

    #[test]
    fn a_shortened_list_counts_what_it_leaves_out() {
        assert_eq!(shortened_list(&["a", "b"], 2), "a, b");
        assert_eq!(shortened_list(&["a", "b"], 5), "a, b and 3 more");
        assert_eq!(shortened_list(&[String::from("a")], 1), "a");
    }
}
