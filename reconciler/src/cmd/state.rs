//! `timctl state`.

use std::process::ExitCode;

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

pub(crate) fn run(_global: &Global, _args: &Args) -> miette::Result<ExitCode> {
    Err(miette::miette!("timctl state is not implemented yet"))
}
