//! `timctl state list|rm`: read the state (no lock) and remove entries from it (under the lock).

use std::io::Write;
use std::process::ExitCode;

use miette::{Context, IntoDiagnostic};
use timctl_core::ids::{ConversationKey, Peer, UserId};
use timctl_core::ledger::{
    Ledger, LedgerWriter, Snapshot, SqliteLedger, SqliteLedgerWriter, StateLock,
};

use crate::args::Global;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Args {
    /// List the recorded deletions.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
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
    },
}

pub(crate) fn run(global: &Global, args: &Args) -> miette::Result<ExitCode> {
    match args {
        Args::List { json } => list(global, *json),
        Args::Rm {
            from,
            peer,
            dry_run,
            lock_timeout,
        } => rm(global, from, peer, *dry_run, *lock_timeout),
    }
}

fn list(global: &Global, json: bool) -> miette::Result<ExitCode> {
    let ledger = SqliteLedger::open_read_only(&global.state)?;
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
    ledger: &SqliteLedger,
    snapshot: Option<&Snapshot>,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let Some(Snapshot { meta, entries, .. }) = snapshot else {
        return writeln!(out, "No state at {} yet.", ledger.path().display());
    };
    writeln!(
        out,
        "State {}: SDKAppID {}, lineage {}, serial {}, {} entries.",
        ledger.path().display(),
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
        miette::miette!(
            help = "`timctl state list` shows what the state holds",
            "{from} {peer} is not in the state {location}; nothing was removed"
        )
    };
    if dry_run {
        // A dry run changes nothing, so it needs no lock, like `state list`.
        let ledger = SqliteLedger::open_read_only(&global.state)?;
        let found = ledger
            .entries()?
            .iter()
            .any(|e| e.key.from == from && e.key.peer == peer);
        if !found {
            return Err(missing(&ledger.location()));
        }
        println!("Would remove {from} {peer} from the state (dry run; nothing changed).");
        return Ok(ExitCode::SUCCESS);
    }
    let lock = StateLock::acquire(&global.state, "state rm", lock_timeout)?;
    let Some(mut ledger) = SqliteLedgerWriter::open_existing(&global.state, lock)? else {
        return Err(missing(&global.state.display().to_string()));
    };
    let written = ledger.forget(&[ConversationKey::new(from.clone(), peer.clone())])?;
    if written.affected == 0 {
        return Err(missing(&ledger.location()));
    }
    println!(
        "Removed {from} {peer} from the state (serial {}). The conversation itself was not touched.",
        written.state.serial
    );
    Ok(ExitCode::SUCCESS)
}
