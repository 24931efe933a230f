//! `timctl show`.

use std::process::ExitCode;

use crate::args::Global;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// A plan saved by `timctl plan --out`.
    pub(crate) planfile: std::path::PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = crate::cmd::plan::Format::Text)]
    pub(crate) format: crate::cmd::plan::Format,
}

pub(crate) fn run(_global: &Global, _args: &Args) -> miette::Result<ExitCode> {
    Err(miette::miette!("timctl show is not implemented yet"))
}
