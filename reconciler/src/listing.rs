//! The listing phase of `plan --refresh` and `apply --refresh`, as the binary runs it: the
//! rate flag, the credentials (read only once the state's app is checked, so a refusal calls
//! nothing), the client, the runtime and the signal watcher around
//! `timctl_core::listing::list`; its events rendered by [`crate::progress::Output`], and the
//! warnings naming users. The users to list come from `timctl_core::listing::users_to_list`.

use std::time::Duration;

use miette::WrapErr;
use timctl_core::api::{Endpoint, RecentContactGetList};
use timctl_core::client::BaseUrl;
use timctl_core::desired::App;
use timctl_core::listing::{ListOptions, ListingError, Wanted};
use timctl_core::plan::observed::{self, Observations};
use timctl_core::stop::{Stop, StopReason};

use crate::args::{Global, RefreshArgs};
use crate::output::eprintln_lossy;
use crate::progress::Output;

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

/// Reads the conversation lists of the users `wanted` (of `app`), retrying a transient failure
/// of a page `max_retries` times. Refuses, calling nothing, without credentials or with a bad
/// `--refresh-rate`. After Ctrl-C or SIGTERM it exits at once, 130 or 143: listing has nothing
/// to record, so nothing is waited for.
pub(crate) fn list(
    global: &Global,
    args: &RefreshArgs,
    max_retries: u32,
    app: &App,
    wanted: &Wanted,
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
    let stop = Stop::new();
    let client = crate::client::build::<RecentContactGetList>(
        app,
        credentials,
        crate::client::Calls {
            base_url: BaseUrl::resolve(app.region, global.endpoint.as_deref())?,
            rate,
            max_retries,
            stop: &stop,
        },
    )?;
    // Enough users in flight to keep the limiter busy at 250 ms latency, as apply does.
    let opts = ListOptions::new(((rate / 4.0).ceil() as usize).max(1));

    let runtime = crate::args::runtime()?;
    let mut output = match report {
        Report::Human => Output::listing(false, global.quiet, wanted.len(), uuid::Uuid::nil()),
        Report::Json(run) => Output::listing(true, global.quiet, wanted.len(), run),
    };
    let result = runtime.block_on(async {
        crate::signals::watch(
            stop.clone(),
            crate::signals::OnSignal {
                stopping: "Stopping: no more conversation lists are read, and nothing is \
                           planned or changed."
                    .to_owned(),
                grace: None,
            },
        );
        timctl_core::listing::list(wanted, &client, &opts, &stop, &mut |e| {
            output.listing_event(e)
        })
        .await
    });
    output.finish();
    // Lists still in flight after a stop were dropped; their connections go with the runtime.
    runtime.shutdown_timeout(Duration::from_millis(100));
    let (seen, summary) = match result {
        Ok(done) => done,
        Err(ListingError::Stopped {
            reason: reason @ (StopReason::Interrupted | StopReason::Terminated),
        }) => {
            eprintln_lossy!(
                "Stopped while listing the conversation lists: nothing was planned or changed."
            );
            std::process::exit(crate::signals::exit_code(reason));
        }
        Err(e) => return Err(e.into()),
    };
    tracing::info!(
        "listed {} users in {} get_list calls in {:.1}s",
        summary.users,
        summary.pages,
        summary.elapsed_seconds
    );
    // Warnings survive `-q`: a user that does not exist may be a typo, and an unreadable list
    // means the plan could not look.
    warn_users(&seen);
    Ok(seen)
}

/// The warnings that name users: those that do not exist (perhaps typos) and those whose list
/// could not be read (their entries are planned as `unverified` deletes).
fn warn_users(seen: &Observations) {
    const SHOWN: usize = 100;
    let missing = observed::missing_users(seen);
    if !missing.is_empty() {
        let shown: Vec<&str> = missing.iter().take(SHOWN).map(|u| u.as_str()).collect();
        let (count, verb) = match missing.len() {
            1 => ("1 user".to_owned(), "does"),
            n => (format!("{n} users"), "do"),
        };
        eprintln_lossy!(
            "warning: {count} {verb} not exist (50001), so they have no conversations: {}. \
             Their entries are recorded as absent; check the manifest for typos.",
            crate::output::shortened_list(&shown, missing.len())
        );
    }
    for (user, why) in observed::unreadable_users(seen).into_iter().take(SHOWN) {
        eprintln_lossy!(
            "warning: the conversation list of {user} could not be read ({why}); its entries are \
             planned as deletes (unverified), none recorded."
        );
    }
}
