//! `timctl usersig`.

use std::process::ExitCode;

use crate::args::Global;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The SDKAppID; default the manifest's app.sdkappid.
    #[arg(long, value_name = "N")]
    pub(crate) sdkappid: Option<u64>,
    /// The account; default the manifest's app.admin.
    #[arg(long, value_name = "ID")]
    pub(crate) identifier: Option<String>,
    /// Lifetime of a new UserSig (e.g. 24h, 180d).
    #[arg(long, value_name = "DUR", value_parser = crate::args::parse_duration, default_value = "24h", conflicts_with = "verify")]
    pub(crate) expire: std::time::Duration,
    /// Check this UserSig instead of making one: exit 0 when valid, 1 with the reason.
    #[arg(long, value_name = "SIG")]
    pub(crate) verify: Option<String>,
    #[command(flatten)]
    pub(crate) manifests: crate::args::ManifestArgs,
}

pub(crate) fn run(_global: &Global, _args: &Args) -> miette::Result<ExitCode> {
    Err(miette::miette!("timctl usersig is not implemented yet"))
}
