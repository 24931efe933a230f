//! `timctl state list|rm|migrate`: read the state (no lock), remove entries from it (under the
//! lock), and copy it to another backend (under both locks).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use miette::{Context, IntoDiagnostic, miette};
use timctl_core::ids::{ConversationKey, Peer, UserId};
use timctl_core::ledger::{
    self, AnyLedger, Ledger, LedgerWriter, LocatedStore, Snapshot, StateLocation, StateName,
};

use crate::args::Global;

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
    /// Copy the state (entries, lineage, serial, runs) to another backend, SQLite or
    /// PostgreSQL; refuses when the destination already holds that state.
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
}

pub(crate) fn run(global: &Global, args: &Args) -> miette::Result<ExitCode> {
    match args {
        Args::List { json, app } => list(global, app, *json),
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
    }
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

fn list(global: &Global, app: &AppArgs, json: bool) -> miette::Result<ExitCode> {
    let ledger = open(global, app)?;
    // One snapshot: the serial printed is the serial of the entries printed.
    let snapshot = ledger.snapshot()?;
    crate::output::to_stdout("the state", |out| {
        if json {
            let (meta, entries) = snapshot
                .as_ref()
                .map_or((None, &[][..]), |s| (Some(&s.meta), &s.entries[..]));
            timctl_core::ledger::write_list_json(meta, entries, out)
        } else {
            write_list_text(&ledger, snapshot.as_ref(), out)
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

fn write_list_text(
    ledger: &AnyLedger,
    snapshot: Option<&Snapshot>,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let Some(Snapshot { meta, entries, .. }) = snapshot else {
        return writeln!(out, "No state at {} yet.", ledger.location());
    };
    writeln!(
        out,
        "State {}: SDKAppID {}, lineage {}, serial {}, {} entries.",
        ledger.location(),
        meta.sdkappid,
        meta.state.lineage,
        meta.state.serial,
        entries.len()
    )?;
    for e in entries {
        writeln!(
            out,
            "{} {} deleted {}{}",
            e.key.from,
            e.key.peer,
            e.deleted_at,
            if e.clear_roaming {
                " (roaming messages cleared)"
            } else {
                ""
            }
        )?;
    }
    Ok(())
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
    let missing = |location: &str| {
        miette!(
            help = "`timctl state list` shows what the state holds",
            "{from} {peer} is not in the state {location}; nothing was removed"
        )
    };
    if dry_run {
        // A dry run changes nothing, so it needs no lock, like `state list`.
        let ledger = open(global, app)?;
        let found = ledger
            .entries()?
            .iter()
            .any(|e| e.key.from == from && e.key.peer == peer);
        if !found {
            return Err(missing(&ledger.location()));
        }
        crate::output::to_stdout("the result", |out| {
            writeln!(
                out,
                "Would remove {from} {peer} from the state (dry run; nothing changed)."
            )
        })?;
        return Ok(ExitCode::SUCCESS);
    }
    let store = global.state_store()?;
    let Some(sdkappid) = app_to_lock(&store, app)? else {
        return Err(missing(&store.to_string()));
    };
    let Some(mut ledger) = store.open_existing_writer(sdkappid, "state rm", lock_timeout)? else {
        return Err(missing(&store.to_string()));
    };
    let written = ledger.forget(&[ConversationKey::new(from.clone(), peer.clone())])?;
    if written.affected == 0 {
        return Err(missing(&ledger.location()));
    }
    // Removed whether or not anyone reads this line.
    crate::output::to_stdout("the result (the entry was removed)", |out| {
        writeln!(
            out,
            "Removed {from} {peer} from the state (serial {}). The conversation itself was not touched.",
            written.state.serial
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
    let dest = StateLocation::parse(to)?;
    let dest_name = match (&dest, to_name) {
        (_, Some(name)) => StateName::new(name)?,
        (StateLocation::Sqlite(_), None) => StateName::default(),
        (StateLocation::Postgres(_), None) => from.name().clone(),
    };
    let dest = LocatedStore::new(dest, dest_name)?;
    if from == dest {
        return Err(miette!(
            "--to names the state being copied ({from}); give another destination"
        ));
    }
    let Some(sdkappid) = app_to_lock(&from, app)? else {
        return Err(miette!("there is no state at {from} to migrate"));
    };
    let operation = "state migrate";
    let Some(source) = from.open_existing_writer(sdkappid, operation, lock_timeout)? else {
        return Err(miette!("there is no state at {from} to migrate"));
    };
    let refuse = |dest: &dyn Ledger| {
        miette!(
            help = "migrate to another destination, or remove that state first",
            "the destination {} already holds a state of SDKAppID {sdkappid}; nothing was copied",
            dest.location()
        )
    };
    if let Some(existing) = dest.open_existing_writer(sdkappid, operation, lock_timeout)? {
        return Err(refuse(&existing));
    }
    let mut copy = dest.create_or_open_writer(sdkappid, operation, lock_timeout)?;
    // Between the two opens another timctl may have written a state there: never overwrite it.
    if copy.state_ref().is_some_and(|s| s.serial != 1) || !copy.entries()?.is_empty() {
        return Err(refuse(&copy));
    }
    let Snapshot {
        meta,
        runs,
        entries,
    } = source
        .snapshot()?
        .ok_or_else(|| miette!("there is no state at {from} to migrate"))?;
    copy.import(&meta, &runs, &entries)?;
    crate::output::to_stdout("the result (the state was copied)", |out| {
        writeln!(
            out,
            "Copied the state of SDKAppID {sdkappid} ({} entries, lineage {}, serial {}) from {} to {}. \
             The source is unchanged; point --state at the copy from now on.",
            entries.len(),
            meta.state.lineage,
            meta.state.serial,
            source.location(),
            copy.location()
        )
    })?;
    Ok(ExitCode::SUCCESS)
}
