//! What `apply` prints while it runs: JSON lines, a progress bar, or a short line now and then.
//!
//! Everything is printed by a thread of its own: the executor hands each event over a channel
//! and goes on, so neither a slow reader of stdout or stderr (a paused pipe, a backed-up CI log)
//! nor the progress bar's drawing ever holds up the results on their way to the state.

use std::io::{IsTerminal, Write};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use timctl_core::apply::Event;

/// Without a terminal, how often a progress line is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// What the printing thread is handed.
enum Msg {
    /// A line for stdout (a JSON event).
    Out(String),
    /// One deletion done (the bar moves).
    Done,
    /// One deletion failed: the bar moves and the line is printed.
    Failed(String),
    /// A progress line, for when there is no bar.
    Progress(String),
}

/// The event sink of a run; [`Output::finish`] prints everything still queued.
pub(crate) struct Output {
    json: bool,
    tx: Option<mpsc::Sender<Msg>>,
    printer: Option<JoinHandle<()>>,
}

impl Output {
    /// Events as JSON lines (`json`), else a bar on a terminal, else a line every few seconds
    /// (none when `quiet`). `total` is the number of deletions.
    pub(crate) fn new(json: bool, quiet: bool, total: usize) -> Self {
        let bar = (!json && !quiet && std::io::stderr().is_terminal()).then(|| bar(total));
        let (tx, rx) = mpsc::channel::<Msg>();
        let printer = std::thread::spawn(move || print(rx, bar, quiet));
        Output {
            json,
            tx: Some(tx),
            printer: Some(printer),
        }
    }

    fn send(&self, msg: Msg) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(msg);
        }
    }

    /// Hands `event` over; never blocks on the terminal.
    pub(crate) fn event(&mut self, event: &Event) {
        if self.json {
            if let Ok(line) = serde_json::to_string(event) {
                self.send(Msg::Out(line));
            }
            return;
        }
        match event {
            Event::Deleted { .. } => self.send(Msg::Done),
            Event::Failed {
                from,
                kind,
                peer,
                code,
                message,
            } => {
                let code = code.map_or_else(String::new, |c| format!(" ({c})"));
                self.send(Msg::Failed(format!(
                    "failed: {from} → {kind}:{peer}{code}: {message}"
                )));
            }
            Event::Progress {
                done,
                total,
                failed,
                rate,
            } => self.send(Msg::Progress(format!(
                "Progress: {done}/{total} done, {failed} failed, {rate:.0} per second"
            ))),
            Event::Planned { .. } | Event::Recorded { .. } | Event::Summary(_) => {}
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
        "{bar:40} {pos}/{len} deleted  {rate}  ETA {eta}  {msg}",
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

/// A rate as a person reads it: `181/s`.
pub(crate) fn per_second(rate: f64) -> String {
    format!("{:.0}/s", rate)
}

/// The printing thread.
fn print(rx: mpsc::Receiver<Msg>, bar: Option<indicatif::ProgressBar>, quiet: bool) {
    let mut failed = 0usize;
    let mut last_line = Instant::now();
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
            Msg::Progress(line) => {
                if bar.is_none() && !quiet && last_line.elapsed() >= PROGRESS_EVERY {
                    last_line = Instant::now();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_whole_numbers_per_second() {
        assert_eq!(per_second(180.8846), "181/s");
        assert_eq!(per_second(0.0), "0/s");
    }
}
