//! `timctl completions SHELL`: a completion script generated from the same clap definitions
//! as `--help`, so the two never drift apart.

use std::io::Write;
use std::process::ExitCode;

use miette::{Context, IntoDiagnostic};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub(crate) shell: clap_complete::Shell,
}

pub(crate) fn run(args: &Args) -> miette::Result<ExitCode> {
    let mut cmd = crate::args::command();
    // Generated into memory first: clap_complete panics on a write error, and a closed pipe
    // (`timctl completions bash | head`) must be an error, not a panic.
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "timctl", &mut script);
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(&script)
        .and_then(|()| stdout.flush())
        .into_diagnostic()
        .wrap_err("cannot write the completion script to stdout")?;
    Ok(ExitCode::SUCCESS)
}
