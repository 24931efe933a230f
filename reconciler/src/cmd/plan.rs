//! `timctl plan`.

use std::process::ExitCode;

use crate::args::Global;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    pub(crate) manifests: crate::args::ManifestArgs,
    #[command(flatten)]
    pub(crate) filter: crate::args::FilterArgs,
    /// Save the plan to FILE, for `timctl apply FILE`.
    #[arg(long, value_name = "FILE")]
    pub(crate) out: Option<std::path::PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub(crate) format: Format,
    /// Exit 2 when there are changes (0 when none, 1 on error).
    #[arg(long)]
    pub(crate) detailed_exitcode: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    Text,
    Json,
    Markdown,
}

pub(crate) fn run(_global: &Global, _args: &Args) -> miette::Result<ExitCode> {
    Err(miette::miette!("timctl plan is not implemented yet"))
}
