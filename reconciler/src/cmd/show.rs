//! `timctl show`: prints a saved plan.

use std::process::ExitCode;

use crate::args::Global;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// A plan saved by `timctl plan --out`.
    pub(crate) planfile: std::path::PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = crate::output::Format::Text)]
    pub(crate) format: crate::output::Format,
    /// Show at most N changes in text and markdown, counting the rest (0: all).
    #[arg(long, value_name = "N", default_value_t = timctl_core::plan::render::DEFAULT_LIMIT)]
    pub(crate) limit: usize,
}

pub(crate) fn run(global: &Global, args: &Args) -> miette::Result<ExitCode> {
    let plan = timctl_core::plan::saved::read(&args.planfile)?;
    crate::output::print_plan(&plan, args.format, args.limit, global.color_stdout())?;
    Ok(ExitCode::SUCCESS)
}
