//! `timctl plan`: reads the manifests and the state (no lock, no credentials), prints the diff,
//! optionally saves it. Calls nothing, changes nothing but the `--out` file.

use std::process::ExitCode;

use timctl_core::plan::{self, render};

use crate::args::Global;
use crate::listing::Report;
use crate::output::{Format, eprintln_lossy};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    pub(crate) manifests: crate::args::ManifestArgs,
    #[command(flatten)]
    pub(crate) filter: crate::args::FilterArgs,
    #[command(flatten)]
    pub(crate) refresh: crate::args::RefreshArgs,
    /// With --refresh: retries of a transient get_list failure per page (as apply's
    /// --max-retries; default 5).
    #[arg(long, value_name = "N", requires = "refresh")]
    pub(crate) max_retries: Option<u32>,
    /// With --refresh: exit 2 only when a conversation that must not exist is on the server (a
    /// delete with reason present or came_back); 1, after printing the plan, when any user's
    /// list could not be read (an alarm that cannot look is not green); else 0. The scheduled
    /// drift alarm.
    #[arg(long, requires = "refresh", conflicts_with = "detailed_exitcode")]
    pub(crate) drift_exitcode: bool,
    /// Save the plan to FILE, for `timctl apply FILE`.
    #[arg(long, value_name = "FILE")]
    pub(crate) out: Option<std::path::PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub(crate) format: Format,
    /// Exit 2 when there are changes (delete, record or forget; 0 when none, 1 on error).
    #[arg(long)]
    pub(crate) detailed_exitcode: bool,
    /// Show at most N changes in text and markdown, counting the rest (0: all). JSON and the
    /// saved plan always hold every change.
    #[arg(long, value_name = "N", default_value_t = render::DEFAULT_LIMIT)]
    pub(crate) limit: usize,
}

/// Reads the manifests into the desired state.
fn load_manifests(
    paths: &[std::path::PathBuf],
) -> miette::Result<timctl_core::desired::DesiredState> {
    Ok(timctl_core::manifest::load(paths)?)
}

pub(crate) fn run(global: &Global, args: &Args) -> miette::Result<ExitCode> {
    let filter = args.filter.filter()?;
    let started = std::time::Instant::now();
    let desired = load_manifests(&args.manifests.manifests)?;
    tracing::info!(
        "read {} manifest entries from {} files in {:.3?}",
        desired.entries.len(),
        desired.files,
        started.elapsed()
    );
    let ledger = timctl_core::ledger::open_read(
        &global.state_location()?,
        &global.state_name()?,
        Some(desired.app.sdkappid),
    )?;
    let seen = if args.refresh.refresh {
        // The app is checked before any call: a refresh against another app's state would
        // read lists for nothing.
        let wanted = timctl_core::listing::users_to_list(&desired, &ledger, &filter)?;
        Some(crate::listing::list(
            global,
            &args.refresh,
            args.max_retries
                .unwrap_or(crate::listing::DEFAULT_MAX_RETRIES),
            &desired.app,
            &wanted,
            Report::Human,
        )?)
    } else {
        None
    };
    // Users the drift alarm could not look at: their lists were unreadable.
    let unchecked: Vec<String> = seen
        .iter()
        .flat_map(plan::observed::unreadable_users)
        .map(|(user, _)| user.to_string())
        .collect();
    let started = std::time::Instant::now();
    let plan = plan::make(&desired, &ledger, &filter, seen.as_ref())?;
    tracing::info!("read the state and diffed in {:.3?}", started.elapsed());
    drop(desired);
    if plan.state.is_none() {
        // A mistyped --state reads as "no state": say so, or every entry silently plans as new.
        eprintln_lossy!(
            "warning: no state at {}: every entry is planned as new (check --state or \
             TIMCTL_STATE if a state should exist)",
            global.state_location()?
        );
    }
    if let Some(out) = &args.out {
        plan::saved::write(&plan, out)?;
    }
    crate::output::print_plan(&plan, args.format, args.limit, global.color_stdout())?;
    if let Some(out) = &args.out
        && !global.quiet
    {
        eprintln_lossy!(
            "Saved the plan to {}. `timctl apply {}` carries out exactly this plan.",
            out.display(),
            out.display()
        );
    }
    if args.drift_exitcode && !unchecked.is_empty() {
        // Said even with -q: this is why the alarm is not green.
        eprintln_lossy!(
            "error: the drift alarm could not check {} users, whose conversation lists could not \
             be read: {}. Exiting 1: an alarm that cannot look must not pass.",
            unchecked.len(),
            crate::output::shortened_list(&unchecked[..unchecked.len().min(100)], unchecked.len())
        );
        return Ok(ExitCode::from(1));
    }
    Ok(
        if (args.detailed_exitcode && plan.has_changes())
            || (args.drift_exitcode && plan.has_drift())
        {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        },
    )
}
