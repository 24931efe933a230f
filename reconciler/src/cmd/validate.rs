//! `timctl validate`.

use std::collections::BTreeSet;
use std::process::ExitCode;

use timctl_core::manifest;

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

/// The `format_version` of `validate --format json`: fields may be added without a change.
const VALIDATE_FORMAT_VERSION: u32 = 1;

pub(crate) fn run(_global: &Global, args: &Args) -> miette::Result<ExitCode> {
    // Validating needs only the counts: the loaded state is summed up and dropped here.
    // Every format prints the problems without the run's secrets.
    let result = manifest::load(&args.manifests.manifests)
        .map(|state| {
            let users: BTreeSet<_> = state.entries.iter().map(|e| &e.key.from).collect();
            (users.len(), state.entries.len(), state.files)
        })
        .map_err(|errors| crate::redact::problems(&errors));
    match args.format {
        Format::Json => {
            let doc = match &result {
                Ok((users, conversations, files)) => serde_json::json!({
                    "format_version": VALIDATE_FORMAT_VERSION,
                    "valid": true,
                    "problems": [],
                    "summary": {"users": users, "conversations": conversations, "files": files},
                }),
                Err(errors) => serde_json::json!({
                    "format_version": VALIDATE_FORMAT_VERSION,
                    "valid": false,
                    "problems": errors.problems(),
                    "summary": null,
                }),
            };
            crate::output::to_stdout("the result", |out| writeln!(out, "{doc:#}"))?;
        }
        Format::Github => {
            if let Err(errors) = &result {
                crate::output::to_stdout("the annotations", |out| {
                    errors
                        .problems()
                        .iter()
                        .try_for_each(|p| writeln!(out, "{}", p.github_annotation()))
                })?;
            }
        }
        Format::Text => {}
    }
    match result {
        Ok((users, conversations, files)) => {
            if args.format != Format::Json {
                crate::output::to_stdout("the result", |out| {
                    writeln!(
                        out,
                        "The manifests are valid: {users} {}, {conversations} {}, {files} {}.",
                        crate::output::plural(users, "user", "users"),
                        crate::output::plural(conversations, "conversation", "conversations"),
                        crate::output::plural(files, "file", "files")
                    )
                })?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            if args.format == Format::Text {
                crate::output::print_problems(&errors, "validate");
            }
            Ok(ExitCode::from(1))
        }
    }
}
