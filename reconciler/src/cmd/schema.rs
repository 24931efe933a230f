//! `timctl schema`.

use std::process::ExitCode;

use crate::args::Global;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Write the schema to FILE instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub(crate) out: Option<std::path::PathBuf>,
    /// JSON Schema draft.
    #[arg(long, value_enum, default_value_t = Draft::Draft2020_12)]
    pub(crate) draft: Draft,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Draft {
    #[value(name = "2020-12")]
    Draft2020_12,
    #[value(name = "07")]
    Draft07,
}

pub(crate) fn run(_global: &Global, _args: &Args) -> miette::Result<ExitCode> {
    Err(miette::miette!("timctl schema is not implemented yet"))
}
