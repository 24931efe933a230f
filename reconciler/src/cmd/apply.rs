//! `timctl apply [PLANFILE]`: flags, the plan shown, the question asked, events printed, the
//! exit code. The operation itself, and the order that keeps it safe (plan without the lock,
//! lock, the state checked again under it, the run's row written before the first call), is
//! `timctl_core::apply`.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use miette::{Context, IntoDiagnostic, miette};
use timctl_core::api::{Endpoint, RecentContactDelete};
use timctl_core::apply::{
    self, Deletion, Event, ExecOptions, Locking, Prepared, RunSummary, Source,
};
use timctl_core::client::BaseUrl;
use timctl_core::plan::{self, Plan, render};
use timctl_core::stop::{Stop, StopReason};

use crate::args::Global;
use crate::listing::Report;
use crate::output::{eprint_lossy, eprintln_lossy};
use crate::progress::Output;

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

pub(crate) fn run(global: &Global, args: &Args) -> miette::Result<ExitCode> {
    // One ID for every event of this apply, refusals included; the history names the run by
    // it once the run starts.
    let run_id = uuid::Uuid::new_v4();
    match apply(global, args, run_id) {
        // A pipeline's artifact says why, even when nothing was called: an `error` event, then
        // the `summary`, as the last event always is. The error itself still goes to stderr.
        Err(e) if args.exec.json && !crate::output::is_closed_stdout(&e) => {
            let mut output = Output::new(true, global.quiet, 0, run_id);
            output.event(&Event::Error {
                message: crate::redact::text(&report_chain(&e)),
            });
            output.event(&Event::Summary(RunSummary::default()));
            output.finish();
            Err(e)
        }
        result => result,
    }
}

/// A report's message and its causes, on one line.
fn report_chain(report: &miette::Report) -> String {
    let mut text = String::new();
    for cause in report.chain() {
        let line = cause.to_string();
        if text.ends_with(&line) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&line);
    }
    text
}

fn apply(global: &Global, args: &Args, run_id: uuid::Uuid) -> miette::Result<ExitCode> {
    // Everything that can be refused is checked before anything is called or written.
    let exec = &args.exec;
    let rate = crate::args::calls_per_second(
        "--rate",
        exec.rate,
        "delete",
        RecentContactDelete::CALLS_PER_SECOND,
        global.quiet,
    )?;
    // Enough calls in flight to keep the rate up at 250 ms latency.
    let concurrency = match exec.concurrency {
        Some(0) => return Err(miette!("--concurrency must be at least 1 call in flight")),
        Some(n) => n,
        None => ((rate / 4.0).ceil() as usize).max(1),
    };
    // The state is read once before the lock: for the plan, and with `--refresh` first for
    // the app check that comes before any list is read.
    let (source, state, store) = match &args.planfile {
        Some(path) => {
            let saved = plan::saved::read(path)?;
            let store = global.state_store()?;
            let state = open_read(&store, saved.app.sdkappid)?;
            (Source::Saved(saved), state, store)
        }
        None => {
            let filter = args.filter.filter()?;
            let desired = timctl_core::manifest::load(&args.manifests.manifests)?;
            let store = global.state_store()?;
            let state = open_read(&store, desired.app.sdkappid)?;
            let seen = if args.refresh.refresh {
                // The app is checked before any call: a refresh against another app's state
                // would read lists for nothing.
                let wanted = timctl_core::listing::users_to_list(&desired, &state, &filter)?;
                let report = if args.exec.json {
                    Report::Json(run_id)
                } else {
                    Report::Human
                };
                Some(crate::listing::list(
                    global,
                    &args.refresh,
                    exec.max_retries,
                    &desired.app,
                    &wanted,
                    report,
                )?)
            } else {
                None
            };
            let source = Source::Manifests {
                filter,
                desired,
                seen,
            };
            (source, state, store)
        }
    };
    let mut prepared = apply::prepare(source, &state)?;
    drop(state);
    let base_url = BaseUrl::resolve(prepared.plan().app.region, global.endpoint.as_deref())?;

    // Shown and approved; shown and approved again when the state moved on while this apply
    // waited for the lock (the plan is then made again under the lock, which it keeps).
    let mut credentials = None;
    let locked = loop {
        if !approve(&prepared, args, global, run_id)? {
            return Ok(ExitCode::SUCCESS);
        }
        // Forgetting needs no call, so a plan without deletions needs no credentials.
        if prepared.plan().summary.delete > 0 && credentials.is_none() {
            credentials = Some(crate::credentials::from_env()?);
        }
        if !prepared.is_saved() && !args.auto_approve {
            confirm(args.exec.json)?;
        }
        match prepared.lock(&store, exec.lock_timeout)? {
            Locking::Ready(locked) => {
                break locked
                    .ran_from(crate::origin::run_origin())
                    .with_run_id(run_id);
            }
            Locking::Replanned(again) => {
                eprintln_lossy!(
                    "The state changed while this apply waited for the lock; it planned again \
                     under the lock:"
                );
                prepared = again;
            }
        }
    };

    let stop = Stop::new();
    let client = match credentials {
        Some(credentials) => Some(crate::client::build::<RecentContactDelete>(
            &locked.plan().app,
            credentials,
            crate::client::Calls {
                base_url,
                rate,
                max_retries: exec.max_retries,
                stop: &stop,
            },
        )?),
        None => None,
    };
    let runtime = crate::args::runtime()?;
    let mut opts = ExecOptions::new(concurrency);
    // At most one second of calls unrecorded: a stalled state holds the calls back after that.
    opts.max_unrecorded = (rate.ceil() as usize).max(1);
    let mut output = Output::new(
        args.exec.json,
        global.quiet,
        locked.plan().summary.delete as usize,
        run_id,
    );
    let applied = runtime.block_on(async {
        crate::signals::watch(stop.clone(), on_signal());
        let mut on_event = |e: &Event| output.event(e);
        match &client {
            Some(client) => locked.run(client, &stop, &opts, &mut on_event).await,
            None => locked.run(&NoCalls, &stop, &opts, &mut on_event).await,
        }
    });
    output.finish();
    // In-flight calls have finished; nothing else is waiting on the runtime.
    runtime.shutdown_timeout(Duration::from_secs(1));
    let summary = applied?.summary;
    let manifests: Vec<String> = args
        .manifests
        .manifests
        .iter()
        .map(|m| m.to_string_lossy().into_owned())
        .collect();
    let retry = crate::progress::retry_command(
        if args.planfile.is_some() {
            &[]
        } else {
            &manifests
        },
        &summary,
        args.planfile.is_some(),
    );
    report(&summary, args.exec.json, &retry);
    Ok(exit_code(&summary))
}

/// Shows the plan and checks `--max-deletes`. False when there is nothing to do (and says so).
fn approve(
    prepared: &Prepared,
    args: &Args,
    global: &Global,
    run_id: uuid::Uuid,
) -> miette::Result<bool> {
    let quiet = global.quiet;
    let plan = prepared.plan();
    let asking = !prepared.is_saved() && !args.auto_approve;
    // `-q` prints warnings, errors and the last line only; a plan someone is asked to approve
    // is still shown, since nobody can approve what they cannot see.
    if !prepared.is_saved() && !args.exec.json && (asking || !quiet) {
        match crate::output::print_plan(
            plan,
            crate::output::Format::Text,
            args.limit,
            global.color_stdout(),
        ) {
            Ok(()) => {}
            // With --auto-approve, or with nothing to do, nobody has to read the plan: when the
            // reader of stdout has gone (`| head`), the run goes on, as it does when only its
            // summary is lost.
            Err(e)
                if (args.auto_approve || !plan.has_changes())
                    && crate::output::is_closed_stdout(&e) => {}
            // Nobody can approve a plan nobody can see.
            Err(e) if crate::output::is_closed_stdout(&e) => {
                return Err(miette!(
                    help = "keep stdout open to be asked, or pass --auto-approve",
                    "cannot show the plan for approval: stdout was closed; nothing was changed"
                ));
            }
            Err(e) => return Err(e),
        }
    } else if asking && plan.has_changes() {
        // `--json` keeps stdout for events, but nobody is asked to approve what they cannot see.
        eprint_lossy!(
            "{}",
            render::text(plan, (args.limit != 0).then_some(args.limit))
        );
    }
    if !plan.has_changes() {
        nothing_to_do(args.exec.json, quiet, run_id);
        return Ok(false);
    }
    check_max_deletes(plan, args.exec.max_deletes)?;
    Ok(true)
}

fn check_max_deletes(plan: &Plan, max: Option<u64>) -> miette::Result<()> {
    if let Some(max) = max
        && plan.summary.delete > max
    {
        return Err(miette!(
            help = "raise --max-deletes if this is intended, or narrow the plan with --user",
            "the plan deletes {} conversations, more than --max-deletes {max}; nothing was changed",
            plan.summary.delete
        ));
    }
    Ok(())
}

/// The run of a plan without changes: no lock, no state written, the same output.
fn nothing_to_do(json: bool, quiet: bool, run_id: uuid::Uuid) {
    let summary = RunSummary::default();
    if json {
        let mut output = Output::new(true, quiet, 0, run_id);
        output.event(&Event::Planned {
            delete: 0,
            forget: 0,
        });
        output.event(&Event::Summary(summary.clone()));
        output.finish();
    }
    report(&summary, json, "timctl apply");
}

/// The deleter of a plan without deletions: never called, so it needs no credentials.
struct NoCalls;

impl apply::Deleter for NoCalls {
    async fn delete(&self, _: &Deletion) -> apply::DeletionOutcome {
        apply::DeletionOutcome::NotSent
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
        eprint_lossy!("{question}");
    } else {
        let mut stdout = std::io::stdout();
        if let Err(e) = write!(stdout, "{question}").and_then(|()| stdout.flush()) {
            return Err(miette!(
                "cannot ask for approval on stdout: {e}; nothing was changed"
            ));
        }
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

/// How long a stopped run may take to finish its calls in flight and record them before it
/// exits anyway: a state that has stalled (a stopped database server, a network black hole)
/// must not keep a cancelled CI job alive. Inside the 10 s most CI systems and Kubernetes give
/// between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(8);

/// Ctrl-C and SIGTERM: the first stops new calls (in-flight ones finish and are recorded),
/// and the run exits by itself at the latest [`STOP_GRACE`] later; a second signal exits at
/// once. The state stays consistent either way: every batch is one transaction, and what was
/// confirmed but not recorded (at most about a second of calls) is made again by the next
/// apply.
fn on_signal() -> crate::signals::OnSignal {
    crate::signals::OnSignal {
        stopping: format!(
            "Stopping: no new calls; the calls in flight finish and are recorded (at most {} \
             s). A second Ctrl-C or SIGTERM exits at once.",
            STOP_GRACE.as_secs()
        ),
        grace: Some((
            STOP_GRACE,
            format!(
                "The calls in flight and the state did not finish within {} s of the signal: \
                 exiting now. Deletions confirmed in the last second may not be recorded; \
                 the next apply makes them again.",
                STOP_GRACE.as_secs()
            ),
        )),
    }
}

/// The stop's message, the recap of failures and the command that retries them, the warnings,
/// and the last line: all of it printed under `-q` too (warnings, errors and the last line are
/// what `-q` keeps).
fn report(s: &RunSummary, json: bool, retry: &str) {
    let deletions = |n: usize| match n {
        1 => "1 deletion was".to_owned(),
        n => format!("{n} deletions were"),
    };
    if let Some(message) = &s.stop_message {
        eprintln_lossy!("Error: {message}");
    }
    for line in crate::progress::recap(s, retry) {
        eprintln_lossy!("{line}");
    }
    match s.stopped {
        _ if crate::progress::signalled(s) => eprintln_lossy!(
            "Stopped before the end: {} not started; run apply again to finish.",
            deletions(s.not_started)
        ),
        Some(_) if s.not_started > 0 => eprintln_lossy!(
            "{} not started; fix the problem above and run apply again.",
            deletions(s.not_started)
        ),
        _ => {}
    }
    if s.missing_user_count > 0 {
        let (users, verb) = match s.missing_user_count {
            1 => ("1 user".to_owned(), "does"),
            n => (format!("{n} users"), "do"),
        };
        eprintln_lossy!(
            "warning: {users} {verb} not exist (50001), so they have no conversations: {}. \
             Their entries count as done (already absent); check the manifest for typos.",
            crate::output::shortened_list(&s.missing_users, s.missing_user_count)
        );
        if s.missing_in_one_to_one > 0 {
            eprintln_lossy!(
                "warning: {} of these were one-to-one conversations, where 50001 may instead \
                 mean that the other participant does not exist (an account deleted after the \
                 conversation began); such a conversation can still be in the user's list: \
                 `timctl plan --refresh` shows it.",
                s.missing_in_one_to_one
            );
        }
    }
    if json {
        return;
    }
    // The work is done and recorded whoever reads this: a closed stdout (`timctl apply | head`)
    // must neither panic nor change the exit code, which says how the run went.
    let _ = writeln!(std::io::stdout(), "{}", crate::progress::final_line(s));
}

/// 0 when everything succeeded; 130 after Ctrl-C and 143 after SIGTERM; 1 otherwise.
fn exit_code(s: &RunSummary) -> ExitCode {
    match s.stopped {
        Some(StopReason::Interrupted) => ExitCode::from(130),
        Some(StopReason::Terminated) => ExitCode::from(143),
        _ if s.succeeded() => ExitCode::SUCCESS,
        _ => ExitCode::from(1),
    }
}

/// The state `store` names as it is now, read without the lock, for the app `sdkappid`.
fn open_read(
    store: &timctl_core::ledger::LocatedStore,
    sdkappid: u64,
) -> miette::Result<timctl_core::ledger::AnyLedger> {
    Ok(timctl_core::ledger::open_read(
        store.location(),
        store.name(),
        Some(sdkappid),
    )?)
}
