//! `timctl man --out DIR`: one man page per command and subcommand (`timctl.1`,
//! `timctl-plan.1`, `timctl-state-list.1`, ...), generated from the same clap definitions as
//! `--help`, so the two never drift apart.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use miette::{Context, IntoDiagnostic};

#[derive(Debug, clap::Args)]
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
    let mut cmd = crate::args::command().disable_help_subcommand(true);
    cmd.build();
    // Every page's footer names the release, as the top page's does (clap gives subcommands no
    // version of their own).
    let source = concat!("timctl ", env!("CARGO_PKG_VERSION"));
    write_pages(&cmd, "", source, &args.out)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot write the man pages into {}", args.out.display()))?;
    Ok(ExitCode::SUCCESS)
}

fn write_pages(cmd: &clap::Command, path: &str, source: &str, dir: &Path) -> std::io::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let sub_path = if path.is_empty() {
            sub.get_name().to_owned()
        } else {
            format!("{path} {}", sub.get_name())
        };
        write_pages(sub, &sub_path, source, dir)?;
    }
    let man = clap_mangen::Man::new(cmd.clone()).source(source);
    let mut page = Vec::new();
    render(&man, cmd, path, &mut page)?;
    std::fs::write(dir.join(man.get_filename()), page)
}

/// clap_mangen's page with ENVIRONMENT, EXIT STATUS and EXAMPLES (`help.rs`, which `--help`
/// shows too) in place of its EXTRA section, which would repeat them as one block of text.
fn render(
    man: &clap_mangen::Man,
    cmd: &clap::Command,
    path: &str,
    w: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    use roff::{Roff, bold, roman};

    man.render_title(w)?;
    man.render_name_section(w)?;
    man.render_synopsis_section(w)?;
    man.render_description_section(w)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(w)?;
    }
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        man.render_subcommands_section(w)?;
    }
    // The tree is built, so the global flags are already among this command's arguments.
    let sections = crate::help::sections(cmd, path, &[]);
    let mut roff = Roff::new();
    if !sections.environment.is_empty() {
        roff.control("SH", ["ENVIRONMENT"]);
        for v in &sections.environment {
            roff.control("TP", [])
                .text([bold(v.name.as_str())])
                .text([roman(v.doc.as_str())]);
        }
    }
    roff.control("SH", ["EXIT STATUS"]);
    for (code, meaning) in sections.exit_status {
        roff.control("TP", [])
            .text([bold(*code)])
            .text([roman(*meaning)]);
    }
    if !sections.examples.is_empty() {
        roff.control("SH", ["EXAMPLES"]);
        for (comment, line) in sections.examples {
            roff.control("PP", [])
                .text([roman(*comment)])
                .control("RS", ["4"])
                .control("nf", [])
                .text([roman(*line)])
                .control("fi", [])
                .control("RE", []);
        }
    }
    roff.to_writer(w)?;
    // As clap_mangen decides: only a command with a version of its own has the section.
    if cmd.get_version().is_some() || cmd.get_long_version().is_some() {
        man.render_version_section(w)?;
    }
    Ok(())
}
