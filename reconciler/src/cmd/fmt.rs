//! `timctl fmt`: the manifests in the canonical layout (`timctl_core::manifest::fmt`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use miette::{IntoDiagnostic, WrapErr};
use timctl_core::input::{Accept, read_capped_with};
use timctl_core::manifest::{self, MAX_FILE_BYTES, fmt::Formatted};

use crate::args::Global;
use crate::output::eprintln_lossy;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Nothing is rewritten when a file does not validate on its own: fmt \
prints its problems and exits 1. Manifests written as JSON are left as they are."
)]
pub(crate) struct Args {
    #[command(flatten)]
    pub(crate) manifests: crate::args::ManifestArgs,
    /// Change nothing; exit 1, naming them, when some files are not in the canonical layout.
    #[arg(long)]
    pub(crate) check: bool,
    /// Change nothing; print what would change as a unified diff.
    #[arg(long)]
    pub(crate) diff: bool,
}

pub(crate) fn run(_global: &Global, args: &Args) -> miette::Result<ExitCode> {
    // Only files that validate are rewritten: the layout is only known for valid manifests,
    // and a rewrite must never hide or move a problem the author has yet to see. Each file is
    // checked on its own (several manifest sets may be formatted at once); `validate` checks a
    // set as a whole.
    let files = match manifest::check_files(&args.manifests.manifests) {
        Ok(files) => files,
        Err(errors) => {
            crate::output::print_problems(&errors, "format");
            return Ok(ExitCode::from(1));
        }
    };
    let mut unformatted = Vec::new();
    for (path, links) in files {
        let bytes = read_capped_with(&path, MAX_FILE_BYTES, Accept::RegularOnly, links)
            .into_diagnostic()
            .wrap_err_with(|| format!("reading {}", path.display()))?;
        let text = String::from_utf8(bytes)
            .into_diagnostic()
            .wrap_err_with(|| format!("reading {}", path.display()))?;
        let formatted = match manifest::fmt::format(&text)
            .into_diagnostic()
            .wrap_err_with(|| format!("formatting {}", path.display()))?
        {
            Formatted::Json => {
                eprintln_lossy!(
                    "note: {} is written as JSON; fmt leaves it as it is",
                    path.display()
                );
                continue;
            }
            Formatted::Yaml(formatted) => formatted,
        };
        if formatted == text {
            continue;
        }
        if args.diff {
            let diff = similar::TextDiff::from_lines(&text, &formatted);
            let name = path.display().to_string();
            let mut shown = diff
                .unified_diff()
                .context_radius(3)
                .header(&format!("a/{name}"), &format!("b/{name}"))
                .to_string();
            if !shown.ends_with('\n') {
                shown.push('\n');
            }
            crate::output::to_stdout("the diff", |out| write!(out, "{shown}"))?;
        } else if args.check {
            crate::output::to_stdout("the file names", |out| writeln!(out, "{}", path.display()))?;
        } else {
            rewrite(&path, &formatted)?;
            crate::output::to_stdout("the file names", |out| writeln!(out, "{}", path.display()))?;
        }
        unformatted.push(path);
    }
    if args.check && !unformatted.is_empty() {
        let n = unformatted.len();
        eprintln_lossy!(
            "error: {n} {} not in the canonical layout; run `timctl fmt` to rewrite {}",
            if n == 1 {
                "manifest is"
            } else {
                "manifests are"
            },
            if n == 1 { "it" } else { "them" }
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// Replaces the file's contents atomically: a new file beside it (same permissions), synced,
/// renamed over it. A link named with `-f` is rewritten at its target, and stays a link.
fn rewrite(path: &Path, text: &str) -> miette::Result<()> {
    let target: PathBuf = if std::fs::symlink_metadata(path)
        .into_diagnostic()?
        .file_type()
        .is_symlink()
    {
        std::fs::canonicalize(path).into_diagnostic()?
    } else {
        path.to_owned()
    };
    let dir = target
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let permissions = std::fs::metadata(&target).into_diagnostic()?.permissions();
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(".{name}.timctl-fmt-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)?;
        file.write_all(text.as_bytes())?;
        file.set_permissions(permissions.clone())?;
        file.sync_all()?;
        std::fs::rename(&temp, &target)
    };
    write()
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&temp);
        })
        .into_diagnostic()
        .wrap_err_with(|| format!("rewriting {}", target.display()))
}
