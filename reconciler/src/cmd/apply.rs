//! `timctl apply [PLANFILE]`: plans (or reads a saved plan), asks, then carries the plan out
//! through `timctl_core::apply::execute` and prints what happened.
//!
//! The order matters for safety: the credentials, the endpoint and the lock are checked before
//! anything is called; the state is read under the lock, so a plan cannot go stale between
//! planning and applying; a saved plan is refused, changing nothing, when the state has moved on.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use miette::{Context, IntoDiagnostic, miette};
use timctl_core::api::{Endpoint, RecentContactDelete};
use timctl_core::apply::{
    self, Deletion, Event, ExecOptions, LedgerRecorder, StopHandle, StopReason, Summary,
};
use timctl_core::client::{self, BaseUrl, Client, ClientConfig};
use timctl_core::ledger::{
    Ledger, LedgerWriter, RunInfo, SqliteLedger, SqliteLedgerWriter, StateLock,
};
use timctl_core::plan::{self, Action, Plan, render};

use crate::args::Global;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// A plan saved by `timctl plan --out`: carry out exactly it, reading no manifest.
    #[arg(value_name = "PLANFILE", conflicts_with_all = ["manifests", "reassert", "users", "exclude_users", "refresh", "refresh_rate"])]
    pub(crate) planfile: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub(crate) manifests: crate::args::ManifestArgs,
    #[command(flatten)]
    pub(crate) filter: crate::args::FilterArgs,
    #[command(flatten)]
    pub(crate) refresh: crate::args::RefreshArgs,
    #[command(flatten)]
    pub(crate) exec: crate::args::ExecArgs,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub(crate) auto_approve: bool,
    /// Show at most N changes of the plan before asking, counting the rest (0: all).
    #[arg(long, value_name = "N", default_value_t = render::DEFAULT_LIMIT)]
    pub(crate) limit: usize,
}

/// The highest `--rate` taken: far above any quota, low enough to keep the limiter's window
/// small.
const MAX_RATE: u32 = 100_000;

/// Without a terminal, how often a progress line is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

pub(crate) fn run(global: &Global, args: &Args) -> miette::Result<ExitCode> {
    // Everything that can be refused is checked before anything is called or written.
    let exec = &args.exec;
    let documented = RecentContactDelete::CALLS_PER_SECOND;
    let rate = match exec.rate {
        Some(0) => return Err(miette!("--rate must be at least 1 call per second")),
        Some(r) if r > MAX_RATE => {
            return Err(miette!(
                "--rate {r} is more than any quota; the most timctl takes is {MAX_RATE}"
            ));
        }
        Some(r) => f64::from(r),
        None => client::default_rate(documented),
    };
    if rate > f64::from(documented) && !global.quiet {
        eprintln!(
            "warning: --rate {rate} is above the documented limit of {documented} calls per second; \
             use it only if Tencent raised your app's quota, or calls will be refused (60007)"
        );
    }
    // Enough calls in flight to keep the rate up at 250 ms latency.
    let concurrency = exec
        .concurrency
        .unwrap_or_else(|| (rate / 4.0).ceil() as usize)
        .max(1);

    // Plan without the lock, so that a refusal (bad input, no terminal, --max-deletes, an
    // answer other than yes) creates nothing, not even the lock file. The lock is taken only to
    // go ahead, and the state is checked again under it: if another apply moved it on while
    // this one was planning or asking, the plan is refused, as a stale saved plan is.
    enum Input {
        Saved(Plan),
        Manifests(timctl_core::desired::DesiredState, plan::Filter),
    }
    let input = match &args.planfile {
        Some(path) => Input::Saved(plan::saved::read(path)?),
        None => {
            let filter = super::plan::filter(&args.filter)?;
            Input::Manifests(
                timctl_core::manifest::load(&args.manifests.manifests)?,
                filter,
            )
        }
    };
    let current = SqliteLedger::open_read_only(&global.state)?;
    let (plan, saved) = match input {
        Input::Saved(plan) => {
            current.check_app(plan.app.sdkappid)?;
            plan::check_state(plan.state, current.state_ref())?;
            (plan, true)
        }
        Input::Manifests(desired, filter) if args.refresh.refresh => {
            current.check_app(desired.app.sdkappid)?;
            let report = if args.exec.json {
                super::refresh::Report::Json
            } else {
                super::refresh::Report::Human
            };
            let seen = super::refresh::observe(global, &args.refresh, &desired, &filter, report)?;
            (
                plan::refresh::make(&desired, &current, &filter, &seen)?,
                false,
            )
        }
        Input::Manifests(desired, filter) => (plan::make(&desired, &current, &filter)?, false),
    };
    drop(current);
    let base_url = BaseUrl::resolve(plan.app.region, global.endpoint.as_deref())?;

    let asking = !saved && !args.auto_approve;
    if !saved && !args.exec.json {
        super::plan::print(&plan, super::plan::Format::Text, args.limit)?;
    } else if asking && plan.has_changes() {
        // `--json` keeps stdout for events, but nobody is asked to approve what they cannot see.
        eprint!(
            "{}",
            render::text(&plan, (args.limit != 0).then_some(args.limit))
        );
    }
    if !plan.has_changes() {
        let summary = Summary::default();
        if args.exec.json {
            let mut output = Output::new(true, global.quiet, 0);
            output.event(&Event::Planned {
                delete: 0,
                forget: 0,
            });
            output.event(&Event::Summary(summary.clone()));
            output.finish();
        }
        report(&summary, args.exec.json, global.quiet);
        return Ok(ExitCode::SUCCESS);
    }
    // Forgetting needs no call, so a plan without deletions needs no credentials.
    let credentials = if plan.summary.delete > 0 {
        Some(crate::credentials::from_env()?)
    } else {
        None
    };
    if let Some(max) = exec.max_deletes
        && plan.summary.delete > max
    {
        return Err(miette!(
            help = "raise --max-deletes if this is intended, or narrow the plan with --user",
            "the plan deletes {} conversations, more than --max-deletes {max}; nothing was changed",
            plan.summary.delete
        ));
    }
    if asking {
        confirm(args.exec.json)?;
    }

    // The client obeys the core stop signal; the executor still has its own `StopHandle`
    // until the two are one (issue 12.2), so the signal handler raises both.
    let client_stop = timctl_core::stop::Stop::new();
    let client = match credentials {
        Some(credentials) => {
            let mut config = ClientConfig::new(
                base_url,
                plan.app.sdkappid,
                plan.app.admin.as_str(),
                credentials,
            );
            config.set_rate::<RecentContactDelete>(rate);
            config.max_retries = exec.max_retries;
            config.stop = client_stop.clone();
            Some(Client::new(config)?)
        }
        None => None,
    };

    let lock = StateLock::acquire(&global.state, "apply", exec.lock_timeout)?;
    let current = SqliteLedger::open_read_only(&global.state)?;
    current.check_app(plan.app.sdkappid)?;
    plan::check_state(plan.state, current.state_ref())?;
    drop(current);
    let writer = SqliteLedgerWriter::create_or_open(&global.state, plan.app.sdkappid, lock)?;
    let mut recorder = LedgerRecorder {
        writer,
        run: RunInfo::new(plan.manifest_digest.clone()),
    };
    let (deletions, records, forgets) = split(plan);
    // Records need no call: they are written first, in one transaction, so that a run stopped
    // later still keeps what the refresh saw.
    let recorded = records.len();
    recorder
        .writer
        .record_absent(&recorder.run, &records)
        .wrap_err("cannot record the conversations seen absent; nothing was called")?;
    if args.exec.json {
        for r in &records {
            let event = serde_json::json!({
                "event": "recorded",
                "from": r.key.from.as_str(),
                "type": r.key.peer.kind().as_str(),
                "peer": r.key.peer.id(),
                "clear_roaming": r.clear_roaming,
            });
            println!("{event}");
        }
    }
    drop(records);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .into_diagnostic()
        .wrap_err("cannot start the async runtime")?;
    let stop = StopHandle::default();
    let opts = ExecOptions {
        concurrency,
        ..ExecOptions::default()
    };
    let mut output = Output::new(args.exec.json, global.quiet, deletions.len());
    let (summary, recorder, record_error) = runtime.block_on(async {
        watch_signals(stop.clone(), client_stop.clone());
        // Records were written before the executor ran; its summary counts them too.
        let mut on_event = |e: &Event| match e {
            Event::Summary(s) => output.event(&Event::Summary(Summary {
                recorded,
                ..s.clone()
            })),
            e => output.event(e),
        };
        match &client {
            Some(client) => {
                apply::execute(
                    deletions,
                    forgets,
                    client,
                    recorder,
                    &opts,
                    &stop,
                    &mut on_event,
                )
                .await
            }
            None => {
                apply::execute(
                    deletions,
                    forgets,
                    &NoCalls,
                    recorder,
                    &opts,
                    &stop,
                    &mut on_event,
                )
                .await
            }
        }
    });
    output.finish();
    drop(recorder);
    // In-flight calls have finished; nothing else is waiting on the runtime.
    runtime.shutdown_timeout(Duration::from_secs(1));

    let summary = Summary {
        recorded,
        ..summary
    };
    report(&summary, args.exec.json, global.quiet);
    if let Some(e) = record_error {
        eprintln!("Error: {e}. The deletions not recorded will be made again by the next apply.");
    }
    Ok(exit_code(&summary))
}

/// The plan's deletions, records (stamped with when the plan read the server) and forgets, for
/// the executor. Takes the plan so that its changes are moved, not copied: at a million entries
/// a copy is a hundred megabytes.
fn split(
    plan: Plan,
) -> (
    Vec<Deletion>,
    Vec<timctl_core::ledger::Deleted>,
    Vec<timctl_core::ids::ConversationKey>,
) {
    let seen_at = plan.refreshed_at.unwrap_or_else(jiff::Timestamp::now);
    let mut deletions = Vec::with_capacity(plan.summary.delete as usize);
    let mut records = Vec::with_capacity(plan.summary.record as usize);
    let mut forgets = Vec::with_capacity(plan.summary.forget as usize);
    for c in plan.changes {
        match c.action {
            Action::Delete => deletions.push(Deletion {
                key: c.key,
                clear_roaming: c.clear_roaming,
            }),
            Action::Record => records.push(timctl_core::ledger::Deleted {
                key: c.key,
                clear_roaming: c.clear_roaming,
                deleted_at: seen_at,
            }),
            Action::Forget => forgets.push(c.key),
        }
    }
    (deletions, records, forgets)
}

/// The deleter of a plan without deletions: never called, so it needs no credentials.
struct NoCalls;

impl apply::Deleter for NoCalls {
    async fn delete(&self, _: &Deletion) -> apply::CallOutcome {
        apply::CallOutcome::NotSent
    }
}

/// Asks for `yes` on a terminal; refuses without one.
fn confirm(json: bool) -> miette::Result<()> {
    if !std::io::stdin().is_terminal() {
        return Err(miette!(
            help = "run it on a terminal to be asked, pass --auto-approve, or save the plan with \
                    `timctl plan --out FILE` and run `timctl apply FILE`",
            "refusing to apply without confirmation: standard input is not a terminal; nothing was changed"
        ));
    }
    let question = "\nDo you want to perform these actions?\n  There is no undo. Only 'yes' will be accepted to approve.\n\n  Enter a value: ";
    if json {
        eprint!("{question}");
        let _ = std::io::stderr().flush();
    } else {
        print!("{question}");
        let _ = std::io::stdout().flush();
    }
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .into_diagnostic()
        .wrap_err("cannot read the answer from standard input")?;
    if answer.trim() == "yes" {
        Ok(())
    } else {
        Err(miette!("apply cancelled; nothing was changed"))
    }
}

/// Ctrl-C and SIGTERM: the first stops new calls (in-flight ones finish and are recorded);
/// a second Ctrl-C exits at once. The state stays consistent either way: every batch is one
/// transaction.
fn watch_signals(stop: StopHandle, client_stop: timctl_core::stop::Stop) {
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!("cannot watch SIGTERM: {e}");
                    None
                }
            };
        loop {
            let reason = tokio::select! {
                r = tokio::signal::ctrl_c() => match r {
                    Ok(()) => StopReason::Interrupted,
                    Err(_) => return,
                },
                Some(()) = async { match term.as_mut() { Some(t) => t.recv().await, None => std::future::pending().await } } => StopReason::Terminated,
            };
            if !stop.stop(reason) {
                if reason == StopReason::Interrupted {
                    eprintln!("Interrupted again: exiting now.");
                    std::process::exit(130);
                }
                continue;
            }
            client_stop.stop(match reason {
                StopReason::Terminated => timctl_core::stop::StopReason::Terminated,
                _ => timctl_core::stop::StopReason::Interrupted,
            });
            eprintln!(
                "Stopping: no new calls; the calls in flight finish and are recorded. \
                 Press Ctrl-C again to exit at once."
            );
        }
    });
}

/// Where events go: JSON lines, a progress bar, or a short line now and then.
///
/// Lines are written by a thread of their own: the executor hands them over and goes on, so a
/// slow reader of stdout or stderr (a paused pipe, a backed-up CI log) never holds up the
/// results on their way to the state.
struct Output {
    json: bool,
    quiet: bool,
    bar: Option<indicatif::ProgressBar>,
    failed: usize,
    last_line: std::time::Instant,
    lines: Option<std::sync::mpsc::Sender<Line>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

/// A line for stdout or stderr.
enum Line {
    Out(String),
    Err(String),
}

impl Output {
    fn new(json: bool, quiet: bool, total: usize) -> Self {
        let bar = (!json && !quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new(total as u64);
            let style = indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} deleted  {per_sec}  ETA {eta}  {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
            bar.set_style(style);
            bar
        });
        let (lines, rx) = std::sync::mpsc::channel::<Line>();
        let writer = std::thread::spawn(move || {
            for line in rx {
                // A closed stdout or stderr is not worth stopping deletions for.
                let _ = match line {
                    Line::Out(l) => writeln!(std::io::stdout().lock(), "{l}"),
                    Line::Err(l) => writeln!(std::io::stderr().lock(), "{l}"),
                };
            }
            let _ = std::io::stdout().flush();
        });
        Output {
            json,
            quiet,
            bar,
            failed: 0,
            last_line: std::time::Instant::now(),
            lines: Some(lines),
            writer: Some(writer),
        }
    }

    fn line(&self, line: Line) {
        if let Some(lines) = &self.lines {
            let _ = lines.send(line);
        }
    }

    fn event(&mut self, event: &Event) {
        if self.json {
            if let Ok(line) = serde_json::to_string(event) {
                self.line(Line::Out(line));
            }
            return;
        }
        match event {
            Event::Deleted { .. } => {
                if let Some(bar) = &self.bar {
                    bar.inc(1);
                }
            }
            Event::Failed {
                from,
                kind,
                peer,
                code,
                message,
            } => {
                self.failed += 1;
                let code = code.map_or_else(String::new, |c| format!(" ({c})"));
                let line = format!("failed: {from} → {kind}:{peer}{code}: {message}");
                match &self.bar {
                    Some(bar) => {
                        bar.inc(1);
                        bar.set_message(format!("{} failed", self.failed));
                        bar.println(line);
                    }
                    None => self.line(Line::Err(line)),
                }
            }
            Event::Progress {
                done,
                total,
                failed,
                rate,
            } => {
                if self.bar.is_none() && !self.quiet && self.last_line.elapsed() >= PROGRESS_EVERY {
                    self.last_line = std::time::Instant::now();
                    self.line(Line::Err(format!(
                        "Progress: {done}/{total} done, {failed} failed, {rate:.0} per second"
                    )));
                }
            }
            Event::Planned { .. } | Event::Summary(_) => {}
        }
    }

    /// Clears the bar and writes out every line handed over, before the summary is printed.
    fn finish(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        drop(self.lines.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// The warnings and the last line.
fn report(s: &Summary, json: bool, quiet: bool) {
    if let Some(message) = &s.stop_message {
        eprintln!("Error: {message}");
    }
    match s.stopped {
        Some(StopReason::Interrupted | StopReason::Terminated) => eprintln!(
            "Stopped before the end: {} deletions were not started; run apply again to finish.",
            s.not_started
        ),
        Some(_) if s.not_started > 0 => eprintln!(
            "{} deletions were not started; fix the problem above and run apply again.",
            s.not_started
        ),
        _ => {}
    }
    if s.missing_user_count > 0 && !quiet {
        let more = s.missing_user_count - s.missing_users.len();
        let more = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        eprintln!(
            "warning: {} users do not exist (50001), so they have no conversations: {}{more}. \
             Their entries count as done; check the manifest for typos.",
            s.missing_user_count,
            s.missing_users.join(", ")
        );
    }
    if !json && s.recorded > 0 {
        println!(
            "Apply complete: {} deleted, {} recorded, {} forgotten, {} failed.",
            s.deleted + s.already_absent,
            s.recorded,
            s.forgotten,
            s.failed
        );
    } else if !json {
        println!(
            "Apply complete: {} deleted, {} forgotten, {} failed.",
            s.deleted + s.already_absent,
            s.forgotten,
            s.failed
        );
    }
}

/// 0 when everything succeeded; 130 after Ctrl-C and 143 after SIGTERM; 1 otherwise.
fn exit_code(s: &Summary) -> ExitCode {
    match s.stopped {
        Some(StopReason::Interrupted) => ExitCode::from(130),
        Some(StopReason::Terminated) => ExitCode::from(143),
        _ if s.succeeded() => ExitCode::SUCCESS,
        _ => ExitCode::from(1),
    }
}
