//! `timctl apply`.

use std::process::ExitCode;

use crate::args::Global;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// A plan saved by `timctl plan --out`: carry out exactly it, reading no manifest.
    #[arg(value_name = "PLANFILE", conflicts_with_all = ["manifests", "reassert", "users", "exclude_users"])]
    pub(crate) planfile: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub(crate) manifests: crate::args::ManifestArgs,
    #[command(flatten)]
    pub(crate) filter: crate::args::FilterArgs,
    #[command(flatten)]
    pub(crate) exec: crate::args::ExecArgs,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub(crate) auto_approve: bool,
}

pub(crate) fn run(_global: &Global, _args: &Args) -> miette::Result<ExitCode> {
    Err(miette::miette!("timctl apply is not implemented yet"))
}
