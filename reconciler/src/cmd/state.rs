//! `timctl state list|rm|migrate|history|runs|prune-history`: read the state and its history
//! (no lock), remove entries from it (under the lock), copy it to another backend (under both
//! locks), and prune old history (no writer lock). The logic is `timctl_core::ledger`'s.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use miette::{Context, IntoDiagnostic, miette};
use timctl_core::ids::{ConversationKey, Peer, UserId};
use timctl_core::ledger::history::{self, HistoryError, HistoryQuery};
use timctl_core::ledger::migrate::{self, MigrateError};
use timctl_core::ledger::remove;
use timctl_core::ledger::{
    self, AnyLedger, Ledger, LocatedStore, RunCommand, RunInfo, Snapshot, StateLocation, StateName,
};

use crate::args::Global;
use crate::origin::run_origin;

/// Which app's state, where a database holds several: the manifest's, `--sdkappid`, or the
/// only one.
#[derive(Debug, clap::Args)]
pub(crate) struct AppArgs {
    /// The app whose state to use (with the state in PostgreSQL); default: the manifest's, or
    /// the only app in the database.
    #[arg(long, value_name = "SDKAPPID")]
    sdkappid: Option<u64>,
    /// The manifest naming the app (default ./timctl.yaml, when it exists).
    #[arg(short = 'f', long = "manifest", value_name = "PATH")]
    manifests: Vec<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Args {
    /// List the recorded deletions.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Only this From_Account's entries.
        #[arg(long, value_name = "ID")]
        user: Option<String>,
        #[command(flatten)]
        app: AppArgs,
    },
    /// One entry of the state, and its history (newest first). For JSON, `state list --user
    /// FROM --json` and `state history --user FROM --peer PEER --json`.
    Show {
        /// The From_Account.
        from: String,
        /// The conversation: user:ID or group:ID.
        peer: String,
        #[command(flatten)]
        app: AppArgs,
    },
    /// Remove one entry from the state (the conversation is not touched).
    Rm {
        /// The From_Account.
        from: String,
        /// The conversation: user:ID or group:ID.
        peer: String,
        /// Say what would be removed, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Wait this long for another timctl's lock on the state (30s, 5m).
        #[arg(long, value_name = "DUR", value_parser = crate::args::parse_duration, default_value = "0s")]
        lock_timeout: std::time::Duration,
        #[command(flatten)]
        app: AppArgs,
    },
    /// Copy the state (entries, lineage, serial, runs, history) to another backend, SQLite or
    /// PostgreSQL, all or nothing; refuses when the destination already holds that state.
    Migrate {
        /// The destination: an SQLite file or a postgres:// URL.
        #[arg(long, value_name = "PATH|URL")]
        to: std::ffi::OsString,
        /// The destination state's name in PostgreSQL (default: --state-name).
        #[arg(long, value_name = "NAME")]
        to_state_name: Option<String>,
        /// Wait this long for another timctl's lock on either state (30s, 5m).
        #[arg(long, value_name = "DUR", value_parser = crate::args::parse_duration, default_value = "0s")]
        lock_timeout: std::time::Duration,
        #[command(flatten)]
        app: AppArgs,
    },
    /// What happened to the state's entries, when, and by which run; newest first.
    History {
        /// Only this From_Account's conversations.
        #[arg(long, value_name = "ID")]
        user: Option<String>,
        /// Only conversations with this peer: user:ID or group:ID.
        #[arg(long, value_name = "user:ID|group:ID")]
        peer: Option<String>,
        /// Only events at or after WHEN: an RFC 3339 time, or a duration back from now (7d).
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        /// Only events before WHEN: an RFC 3339 time, or a duration back from now (7d).
        #[arg(long, value_name = "WHEN")]
        until: Option<String>,
        /// Only this run's events (see `timctl state runs`).
        #[arg(long, value_name = "ID")]
        run: Option<String>,
        /// At most N events; 0 for all.
        #[arg(long, value_name = "N", default_value_t = 100)]
        limit: u64,
        /// Print JSON Lines, one event per line.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        app: AppArgs,
    },
    /// The runs that wrote the state (which command, version, commit, host, user, CI job,
    /// start, end, counts); newest first.
    Runs {
        /// At most N runs; 0 for all.
        #[arg(long, value_name = "N", default_value_t = 100)]
        limit: u64,
        /// Print JSON Lines, one run per line.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        app: AppArgs,
    },
    /// Delete the history's events older than WHEN, in one short transaction without the
    /// writer lock (it runs beside an apply); recorded as a run.
    PruneHistory {
        /// Delete events before WHEN: an RFC 3339 time, or a duration back from now (90d).
        #[arg(long, value_name = "WHEN")]
        before: String,
        /// Say how many events would go, delete nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        app: AppArgs,
    },
}

pub(crate) fn run(global: &Global, args: &Args) -> miette::Result<ExitCode> {
    match args {
        Args::List { json, user, app } => {
            let user = user.as_deref().map(user_id).transpose()?;
            list(global, app, user.as_ref(), *json)
        }
        Args::Show { from, peer, app } => show(global, app, user_id(from)?, peer_of(peer)?),
        Args::Rm {
            from,
            peer,
            dry_run,
            lock_timeout,
            app,
        } => rm(global, app, from, peer, *dry_run, *lock_timeout),
        Args::Migrate {
            to,
            to_state_name,
            lock_timeout,
            app,
        } => migrate(global, app, to, to_state_name.as_deref(), *lock_timeout),
        Args::History {
            user,
            peer,
            since,
            until,
            run,
            limit,
            json,
            app,
        } => {
            let now = jiff::Timestamp::now();
            let when = |flag: &str, text: &Option<String>| {
                text.as_deref()
                    .map(|t| history::parse_when(t, now).map_err(|why| miette!("{flag}: {why}")))
                    .transpose()
            };
            let query = HistoryQuery {
                user: user
                    .as_deref()
                    .map(|u| {
                        UserId::new(u)
                            .into_diagnostic()
                            .wrap_err_with(|| format!("--user {u:?} is not a valid UserID"))
                    })
                    .transpose()?,
                peer: peer
                    .as_deref()
                    .map(|p| {
                        p.parse::<Peer>()
                            .into_diagnostic()
                            .wrap_err("--peer must be user:ID or group:ID")
                    })
                    .transpose()?,
                since: when("--since", since)?,
                until: when("--until", until)?,
                run: run
                    .as_deref()
                    .map(|r| history::parse_run_id(r).map_err(|why| miette!("--run: {why}")))
                    .transpose()?,
                limit: (*limit > 0).then_some(*limit),
            };
            show_history(global, app, &query, *json)
        }
        Args::Runs { limit, json, app } => {
            show_runs(global, app, (*limit > 0).then_some(*limit), *json)
        }
        Args::PruneHistory {
            before,
            dry_run,
            app,
        } => {
            let before = history::parse_when(before, jiff::Timestamp::now())
                .map_err(|why| miette!("--before: {why}"))?;
            prune(global, app, before, *dry_run)
        }
    }
}

/// A history or run listing read to its end, or stopped by a closed stdout (a quiet exit 0).
fn streamed(result: Result<(), HistoryError>) -> miette::Result<()> {
    match result {
        Ok(()) => Ok(()),
        Err(HistoryError::Write(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            Err(crate::output::ClosedStdout.into())
        }
        Err(HistoryError::Write(e)) => Err(e)
            .into_diagnostic()
            .wrap_err("cannot write the history to stdout"),
        Err(HistoryError::Ledger(e)) => Err(e.into()),
    }
}

/// How a listing is printed: a table (its header before the first row, `empty` in its place
/// when nothing matched) or JSON Lines (nothing when nothing matched).
struct Listing<'a, T> {
    json: bool,
    header: &'a dyn Fn(&mut dyn Write) -> std::io::Result<()>,
    row: fn(&T, &mut dyn Write) -> std::io::Result<()>,
    line: fn(&T, &mut dyn Write) -> std::io::Result<()>,
    empty: &'a str,
}

/// Streams what `read` yields to stdout as `listing` says, never holding it all: a history of
/// ten million events prints in constant memory. A closed stdout is a quiet exit.
fn stream<T>(
    listing: Listing<'_, T>,
    read: impl FnOnce(&mut dyn FnMut(&T) -> std::io::Result<()>) -> Result<(), HistoryError>,
) -> miette::Result<()> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut header = !listing.json;
    let result = read(&mut |item| {
        if std::mem::take(&mut header) {
            (listing.header)(&mut out)?;
        }
        if listing.json {
            (listing.line)(item, &mut out)
        } else {
            (listing.row)(item, &mut out)
        }
    });
    streamed(result.and_then(|()| {
        if header {
            writeln!(out, "{}", listing.empty).map_err(HistoryError::Write)?;
        }
        out.flush().map_err(HistoryError::Write)
    }))
}

fn show_history(
    global: &Global,
    app: &AppArgs,
    query: &HistoryQuery,
    json: bool,
) -> miette::Result<ExitCode> {
    let ledger = open(global, app)?;
    let listing = Listing {
        json,
        header: &|out| history::write_event_header(out),
        row: history::write_event_row,
        line: history::write_event_json,
        empty: "No events.",
    };
    stream(listing, |each| ledger.history(query, each))?;
    Ok(ExitCode::SUCCESS)
}

fn show_runs(
    global: &Global,
    app: &AppArgs,
    limit: Option<u64>,
    json: bool,
) -> miette::Result<ExitCode> {
    let ledger = open(global, app)?;
    let listing = Listing {
        json,
        header: &|out| history::write_run_header(out),
        row: history::write_run_row,
        line: history::write_run_json,
        empty: "No runs.",
    };
    stream(listing, |each| ledger.runs_newest_first(limit, each))?;
    Ok(ExitCode::SUCCESS)
}

fn prune(
    global: &Global,
    app: &AppArgs,
    before: jiff::Timestamp,
    dry_run: bool,
) -> miette::Result<ExitCode> {
    let (location, name) = (global.state_location()?, global.state_name()?);
    let sdkappid = asked_app(&location, app)?;
    let mut run = RunInfo::start(RunCommand::StatePruneHistory, "", run_origin());
    let pruned = ledger::prune_history(&location, &name, sdkappid, before, dry_run, &mut run)?;
    let Some(pruned) = pruned else {
        return Err(miette!(
            "there is no state at {location}; nothing was pruned"
        ));
    };
    let at = history::millis(before);
    crate::output::to_stdout("the result", |out| {
        if dry_run {
            writeln!(
                out,
                "Would delete {pruned} events before {at} (dry run; nothing changed)."
            )
        } else {
            writeln!(
                out,
                "Deleted {pruned} events before {at} (run {}).",
                run.run_id
            )
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The app asked for: `--sdkappid`, else the manifest's (`-f`, or `./timctl.yaml` when it
/// exists). Only a PostgreSQL state needs it; an SQLite file is bound to one app.
fn asked_app(location: &StateLocation, app: &AppArgs) -> miette::Result<Option<u64>> {
    if let Some(id) = app.sdkappid {
        return Ok(Some(id));
    }
    let manifests = if !app.manifests.is_empty() {
        app.manifests.clone()
    } else if matches!(location, StateLocation::Postgres(_))
        && std::path::Path::new("timctl.yaml").exists()
    {
        vec![PathBuf::from("timctl.yaml")]
    } else {
        return Ok(None);
    };
    Ok(Some(timctl_core::manifest::load(&manifests)?.app.sdkappid))
}

/// The app whose state to lock: the one asked for, else the SDKAppID the state is bound to
/// (SQLite) or the only app with such a state in the database (PostgreSQL). `None`: no state.
fn app_to_lock(store: &LocatedStore, app: &AppArgs) -> miette::Result<Option<u64>> {
    match asked_app(store.location(), app)? {
        Some(id) => Ok(Some(id)),
        None => Ok(store.only_app()?),
    }
}

fn open(global: &Global, app: &AppArgs) -> miette::Result<AnyLedger> {
    let (location, name) = (global.state_location()?, global.state_name()?);
    let sdkappid = asked_app(&location, app)?;
    let ledger = ledger::open_read(&location, &name, sdkappid)?;
    if let Some(id) = sdkappid {
        ledger.check_app(id)?;
    }
    Ok(ledger)
}

/// A UserID given on the command line.
fn user_id(text: &str) -> miette::Result<UserId> {
    UserId::new(text)
        .into_diagnostic()
        .wrap_err_with(|| format!("{text:?} is not a valid UserID"))
}

/// A conversation given on the command line.
fn peer_of(text: &str) -> miette::Result<Peer> {
    text.parse()
        .into_diagnostic()
        .wrap_err("the conversation must be user:ID or group:ID")
}

fn list(
    global: &Global,
    app: &AppArgs,
    user: Option<&UserId>,
    json: bool,
) -> miette::Result<ExitCode> {
    let ledger = open(global, app)?;
    // One snapshot: the serial printed is the serial of the entries printed.
    let mut snapshot = ledger.snapshot()?;
    if let (Some(user), Some(s)) = (user, snapshot.as_mut()) {
        // Entries are sorted by From_Account first: one user's are one run of them.
        s.entries.retain(|e| &e.key.from == user);
    }
    crate::output::to_stdout("the state", |out| {
        if json {
            let (meta, entries) = snapshot
                .as_ref()
                .map_or((None, &[][..]), |s| (Some(&s.meta), &s.entries[..]));
            timctl_core::ledger::write_list_json(meta, entries, out)
        } else {
            write_list_text(&ledger, snapshot.as_ref(), user, out)
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `state show FROM PEER`: the entry as `state list` prints it (or that there is none), then
/// the conversation's history, newest first. A conversation the state no longer holds may
/// still have a history: that is the auditor's question about a former entry.
fn show(global: &Global, app: &AppArgs, from: UserId, peer: Peer) -> miette::Result<ExitCode> {
    let ledger = open(global, app)?;
    let snapshot = ledger.snapshot()?;
    let key = timctl_core::ids::ConversationKey::new(from.clone(), peer.clone());
    let entry = snapshot
        .as_ref()
        .and_then(|s| s.entries.iter().find(|e| e.key == key));
    crate::output::to_stdout("the entry", |out| match (&snapshot, entry) {
        (None, _) => writeln!(out, "No state at {} yet.", ledger.location()),
        (Some(_), None) => writeln!(out, "{key}: not in the state {}.", ledger.location()),
        (Some(_), Some(e)) => write_entry_line(e, out),
    })?;
    let query = HistoryQuery {
        user: Some(from),
        peer: Some(peer),
        ..HistoryQuery::default()
    };
    let listing = Listing {
        json: false,
        header: &|out| {
            writeln!(out, "\nHistory, newest first:")?;
            history::write_event_header(out)
        },
        row: history::write_event_row,
        line: history::write_event_json,
        empty: "No history.",
    };
    stream(listing, |each| ledger.history(&query, each))?;
    Ok(ExitCode::SUCCESS)
}

fn write_list_text(
    ledger: &AnyLedger,
    snapshot: Option<&Snapshot>,
    user: Option<&UserId>,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let Some(Snapshot { meta, entries, .. }) = snapshot else {
        return writeln!(out, "No state at {} yet.", ledger.location());
    };
    let of_user = user.map(|u| format!(" of {u}")).unwrap_or_default();
    writeln!(
        out,
        "State {}: SDKAppID {}, lineage {}, serial {}, {} entries{of_user}.",
        ledger.location(),
        meta.sdkappid,
        meta.state.lineage,
        meta.state.serial,
        entries.len()
    )?;
    for e in entries {
        write_entry_line(e, out)?;
    }
    Ok(())
}

/// One entry, as `state list` and `state show` print it: when it was deleted, or seen absent
/// by a refresh (no call was made), and whether roaming messages were cleared.
fn write_entry_line(e: &ledger::StateEntry, out: &mut dyn Write) -> std::io::Result<()> {
    let what = match e.origin {
        ledger::Origin::Deleted => "deleted",
        ledger::Origin::Absent => "seen absent",
    };
    writeln!(
        out,
        "{} {} {what} {}{}",
        e.key.from,
        e.key.peer,
        e.deleted_at,
        if e.clear_roaming {
            " (roaming messages cleared)"
        } else {
            ""
        }
    )
}

fn rm(
    global: &Global,
    app: &AppArgs,
    from: &str,
    peer: &str,
    dry_run: bool,
    lock_timeout: std::time::Duration,
) -> miette::Result<ExitCode> {
    let from = UserId::new(from)
        .into_diagnostic()
        .wrap_err_with(|| format!("FROM {from:?} is not a valid UserID"))?;
    let peer: Peer = peer
        .parse()
        .into_diagnostic()
        .wrap_err("the conversation must be user:ID or group:ID")?;
    let key = ConversationKey::new(from, peer);
    let store = global.state_store()?;
    let sdkappid = asked_app(store.location(), app)?;
    if dry_run {
        // A dry run changes nothing, so it needs no lock, like `state list`.
        remove::check_entry(&store, sdkappid, &key)?;
        crate::output::to_stdout("the result", |out| {
            writeln!(
                out,
                "Would remove {key} from the state (dry run; nothing changed)."
            )
        })?;
        return Ok(ExitCode::SUCCESS);
    }
    let run = RunInfo::start(RunCommand::StateRm, "", run_origin());
    let removed = remove::remove_entry(&store, sdkappid, &key, lock_timeout, run)?;
    // Removed whether or not anyone reads this line.
    crate::output::to_stdout("the result (the entry was removed)", |out| {
        writeln!(
            out,
            "Removed {key} from the state (serial {}). The conversation itself was not touched.",
            removed.state.serial
        )
    })?;
    Ok(ExitCode::SUCCESS)
}

fn migrate(
    global: &Global,
    app: &AppArgs,
    to: &std::ffi::OsStr,
    to_name: Option<&str>,
    lock_timeout: std::time::Duration,
) -> miette::Result<ExitCode> {
    let from = global.state_store()?;
    let to = StateLocation::parse(to)?;
    let to_name = to_name.map(StateName::new).transpose()?;
    let dest = migrate::destination(&from, to, to_name)?;
    let Some(sdkappid) = app_to_lock(&from, app)? else {
        return Err(miette!("there is no state at {from} to migrate"));
    };
    let run = RunInfo::start(RunCommand::StateMigrate, "", run_origin());
    let copied = match migrate::migrate(&from, &dest, sdkappid, lock_timeout, run) {
        Ok(copied) => copied,
        // A state error renders with its own code and help.
        Err(MigrateError::Ledger(e)) => return Err(e.into()),
        Err(e) => return Err(e.into()),
    };
    crate::output::to_stdout("the result (the state was copied)", |out| {
        writeln!(
            out,
            "Copied the state of SDKAppID {sdkappid} ({} entries, {} runs, {} events; lineage {}, serial {}) from {} to {}. \
             The source is unchanged; point --state at the copy from now on.",
            copied.entries,
            copied.runs,
            copied.events,
            copied.meta.state.lineage,
            copied.meta.state.serial,
            copied.from,
            copied.to
        )
    })?;
    Ok(ExitCode::SUCCESS)
}
