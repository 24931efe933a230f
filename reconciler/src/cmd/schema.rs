//! `timctl schema`.

use std::process::ExitCode;

use miette::{Context, IntoDiagnostic};
use timctl_core::manifest;

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

pub(crate) fn run(_global: &Global, args: &Args) -> miette::Result<ExitCode> {
    let draft = match args.draft {
        Draft::Draft2020_12 => manifest::Draft::Draft2020_12,
        Draft::Draft07 => manifest::Draft::Draft07,
    };
    // Pretty-printed with a final newline, so that the checked-in file diffs well and equals
    // this output byte for byte.
    let mut text = serde_json::to_string_pretty(&manifest::schema(draft)).into_diagnostic()?;
    text.push('\n');
    match &args.out {
        Some(path) => std::fs::write(path, text)
            .into_diagnostic()
            .wrap_err_with(|| format!("cannot write the schema to {}", path.display()))?,
        None => crate::output::to_stdout("the schema", |out| out.write_all(text.as_bytes()))?,
    }
    Ok(ExitCode::SUCCESS)
}
