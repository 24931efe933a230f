//! The listing phase of `plan --refresh` and `apply --refresh`, as the binary shows it: builds
//! the client (credentials first, so a refusal calls nothing), runs
//! `timctl_core::refresh::observe`, and renders its events (a bar on a terminal, a line every
//! 2 s without one, JSON lines with `--json`) and the warnings naming users.

use std::io::IsTerminal;
use std::io::Write as _;
use std::time::{Duration, Instant};

use miette::WrapErr;
use timctl_core::api::{Endpoint, RecentContactGetList};
use timctl_core::client::{BaseUrl, Client, ClientConfig};
use timctl_core::desired::DesiredState;
use timctl_core::plan::Filter;
use timctl_core::plan::refresh::{self, Observations};
use timctl_core::refresh::{Event, ListOptions, RefreshError};
use timctl_core::stop::{Stop, StopReason};

use crate::args::{Global, RefreshArgs};
use crate::output::eprintln_lossy;

/// Retries of a transient get_list failure per page when `plan --refresh` is not told
/// (`--max-retries`), as apply's default.
pub(crate) const DEFAULT_MAX_RETRIES: u32 = 5;

/// How the listing phase reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Report {
    /// Progress on stderr (a bar on a terminal, else a line every 2 s).
    Human,
    /// One JSON event per line on stdout (`apply --json`), stamped with the run's ID as
    /// apply's own events are.
    Json(uuid::Uuid),
}

/// Reads every planned user's conversation list, retrying a transient failure of a page
/// `max_retries` times. Refuses, calling nothing, without credentials or with a bad
/// `--refresh-rate`. After Ctrl-C or SIGTERM it exits at once, 130 or 143: listing has nothing
/// to record, so nothing is waited for.
pub(crate) fn observe(
    global: &Global,
    args: &RefreshArgs,
    max_retries: u32,
    desired: &DesiredState,
    filter: &Filter,
    report: Report,
) -> miette::Result<Observations> {
    let rate = crate::args::calls_per_second(
        "--refresh-rate",
        args.refresh_rate,
        "get_list",
        RecentContactGetList::CALLS_PER_SECOND,
        global.quiet,
    )?;
    let credentials = crate::credentials::from_env()
        .wrap_err("--refresh reads the server's conversation lists, which needs credentials")?;
    let base_url = BaseUrl::resolve(desired.app.region, global.endpoint.as_deref())?;
    let mut config = ClientConfig::new(
        base_url,
        desired.app.sdkappid,
        desired.app.admin.as_str(),
        credentials,
    );
    config.set_rate::<RecentContactGetList>(rate);
    config.max_retries = max_retries;
    let client = Client::new(config)?;
    let wanted = refresh::wanted(desired, filter);
    // Enough users in flight to keep the limiter busy at 250 ms latency, as apply does.
    let opts = ListOptions::new(((rate / 4.0).ceil() as usize).max(1));

    let runtime = crate::args::runtime()?;
    let mut progress = Progress::new(report, global.quiet, wanted.len());
    let stop = client.stop_signal().clone();
    let result = runtime.block_on(async {
        watch_signals(stop.clone());
        timctl_core::refresh::observe(&wanted, &client, &opts, &stop, &mut |e| progress.event(e))
            .await
    });
    progress.finish();
    // Lists still in flight after a stop were dropped; their connections go with the runtime.
    runtime.shutdown_timeout(Duration::from_millis(100));
    let (seen, summary) = match result {
        Ok(done) => done,
        Err(RefreshError::Stopped {
            reason: reason @ (StopReason::Interrupted | StopReason::Terminated),
        }) => {
            eprintln_lossy!(
                "Stopped while listing the conversation lists: nothing was planned or changed."
            );
            std::process::exit(signal_exit_code(reason));
        }
        Err(e) => return Err(e.into()),
    };
    tracing::info!(
        "listed {} users in {} get_list calls in {:.1}s",
        summary.users,
        summary.pages,
        summary.elapsed_seconds
    );
    if !global.quiet {
        warn_users(&seen);
    }
    Ok(seen)
}

/// The warnings that name users: those that do not exist (perhaps typos) and those whose list
/// could not be read (their entries are planned as `unverified` deletes).
fn warn_users(seen: &Observations) {
    const SHOWN: usize = 100;
    let missing = refresh::missing_users(seen);
    if !missing.is_empty() {
        let shown: Vec<&str> = missing.iter().take(SHOWN).map(|u| u.as_str()).collect();
        eprintln_lossy!(
            "warning: {} users do not exist (50001), so they have no conversations: {}. \
             Their entries are recorded as absent; check the manifest for typos.",
            missing.len(),
            crate::output::shortened_list(&shown, missing.len())
        );
    }
    for (user, why) in refresh::unreadable_users(seen).into_iter().take(SHOWN) {
        eprintln_lossy!(
            "warning: the conversation list of {user} could not be read ({why}); its entries are \
             planned as deletes (unverified), none recorded."
        );
    }
}

/// 130 after Ctrl-C, 143 after SIGTERM (128 + the signal's number), as apply exits.
fn signal_exit_code(reason: StopReason) -> i32 {
    match reason {
        StopReason::Terminated => 143,
        _ => 130,
    }
}

/// Ctrl-C and SIGTERM stop the listing at once: nothing is planned from a partial look, and
/// the lists in flight are dropped rather than waited for. A second signal exits at once, in
/// case anything still holds the first up.
fn watch_signals(stop: Stop) {
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        loop {
            let reason = tokio::select! {
                r = tokio::signal::ctrl_c() => match r {
                    Ok(()) => StopReason::Interrupted,
                    Err(_) => return,
                },
                Some(()) = async {
                    match term.as_mut() {
                        Some(t) => t.recv().await,
                        None => std::future::pending().await,
                    }
                } => StopReason::Terminated,
            };
            if !stop.stop(reason) {
                eprintln_lossy!(
                    "{} again: exiting now.",
                    if reason == StopReason::Terminated {
                        "Terminated"
                    } else {
                        "Interrupted"
                    }
                );
                std::process::exit(signal_exit_code(reason));
            }
            eprintln_lossy!(
                "Stopping: no more conversation lists are read, and nothing is planned or changed."
            );
        }
    });
}

/// Renders the listing's events.
struct Progress {
    report: Report,
    quiet: bool,
    bar: Option<indicatif::ProgressBar>,
    started: Instant,
}

impl Progress {
    fn new(report: Report, quiet: bool, total: usize) -> Self {
        let bar =
            (report == Report::Human && !quiet && std::io::stderr().is_terminal()).then(|| {
                let bar = indicatif::ProgressBar::new(total as u64);
                let style = indicatif::ProgressStyle::with_template(
                    "{bar:40} {pos}/{len} users listed  {msg}  ETA {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
                bar.set_style(style);
                bar
            });
        Self {
            report,
            quiet,
            bar,
            started: Instant::now(),
        }
    }

    fn event(&mut self, e: &Event) {
        if let Report::Json(run) = self.report {
            if let Ok(line) = timctl_core::apply::event_line(run, jiff::Timestamp::now(), e) {
                // A reader that went away misses the rest; listing reads and changes nothing.
                let _ = writeln!(std::io::stdout(), "{line}");
            }
            return;
        }
        if self.quiet {
            return;
        }
        match (e, &self.bar) {
            (Event::Listed { .. }, Some(bar)) => bar.inc(1),
            (
                Event::ListProgress {
                    calls_per_second, ..
                },
                Some(bar),
            ) => bar.set_message(format!("{calls_per_second:.0} calls/s")),
            (
                Event::ListProgress {
                    done,
                    total,
                    in_flight,
                    calls_per_second,
                    eta_seconds,
                },
                None,
            ) => {
                // Once no user waits, the time left is however long the lists still paging
                // are: unknown, and said so rather than guessed from the users done.
                let eta = match eta_seconds {
                    Some(s) => format!("ETA {s:.0}s"),
                    None if *done > 0 && *in_flight == 1 => "1 list still paging".to_owned(),
                    None if *done > 0 && *in_flight > 1 => {
                        format!("{in_flight} lists still paging")
                    }
                    None => "ETA ?".to_owned(),
                };
                eprintln_lossy!(
                    "Listing conversation lists: {done}/{total} users, {calls_per_second:.0} calls/s, {eta} ({:.0}s elapsed)",
                    self.started.elapsed().as_secs_f64()
                );
            }
            _ => {}
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
