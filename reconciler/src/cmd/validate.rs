//! `timctl validate`.

use std::process::ExitCode;

use crate::args::Global;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    pub(crate) manifests: crate::args::ManifestArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub(crate) format: Format,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    Text,
    Json,
    Github,
}

pub(crate) fn run(_global: &Global, _args: &Args) -> miette::Result<ExitCode> {
    Err(miette::miette!("timctl validate is not implemented yet"))
}
