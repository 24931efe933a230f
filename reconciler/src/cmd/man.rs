//! `timctl man --out DIR`: one man page per command and subcommand (`timctl.1`,
//! `timctl-plan.1`, `timctl-state-list.1`, ...), generated from the same clap definitions as
//! `--help`, so the two never drift apart.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::CommandFactory;
use miette::{Context, IntoDiagnostic};

#[derive(Debug, clap::Args)]
#[command(after_long_help = "Install for your user, for example:\n  \
    timctl man --out ~/.local/share/man/man1\n  \
    man timctl-plan")]
pub(crate) struct Args {
    /// The directory to write the pages into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub(crate) out: PathBuf,
}

pub(crate) fn run(args: &Args) -> miette::Result<ExitCode> {
    std::fs::create_dir_all(&args.out)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot create the directory {}", args.out.display()))?;
    // Building the command copies the global flags (--state, --endpoint, -v, -q, --color)
    // into every subcommand, so each page lists them, and names each subcommand for its page
    // (`timctl-state-list`).
    let mut cmd = crate::args::Cli::command().disable_help_subcommand(true);
    cmd.build();
    // Every page's footer names the release, as the top page's does (clap gives subcommands no
    // version of their own).
    let source = concat!("timctl ", env!("CARGO_PKG_VERSION"));
    write_pages(&cmd, source, &args.out)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot write the man pages into {}", args.out.display()))?;
    Ok(ExitCode::SUCCESS)
}

fn write_pages(cmd: &clap::Command, source: &str, dir: &Path) -> std::io::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, source, dir)?;
    }
    clap_mangen::Man::new(cmd.clone())
        .source(source)
        .generate_to(dir)?;
    Ok(())
}
