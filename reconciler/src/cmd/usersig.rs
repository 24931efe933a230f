//! `timctl usersig`: make a UserSig from the secret key (printed alone on stdout, for curl),
//! or verify one and say why it fails.

use std::io::Read as _;
use std::process::ExitCode;

use miette::{IntoDiagnostic as _, WrapErr as _};
use timctl_core::ids::UserId;
use timctl_core::usersig;

use crate::args::Global;
use crate::output::eprintln_lossy;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The SDKAppID; default the manifest's app.sdkappid.
    #[arg(long, value_name = "N")]
    pub(crate) sdkappid: Option<u64>,
    /// The account; default the manifest's app.admin.
    #[arg(long, value_name = "ID")]
    pub(crate) identifier: Option<String>,
    /// Lifetime of a new UserSig (e.g. 24h, 180d).
    #[arg(long, value_name = "DUR", value_parser = crate::args::parse_duration, default_value = "24h", conflicts_with = "verify")]
    pub(crate) expire: std::time::Duration,
    /// Check this UserSig instead of making one (`-` reads it from stdin, keeping it out of
    /// shell history): exit 0 when valid, 1 with the reason.
    #[arg(long, value_name = "SIG")]
    pub(crate) verify: Option<String>,
    #[command(flatten)]
    pub(crate) manifests: crate::args::ManifestArgs,
}

/// The most bytes `--verify -` reads. A UserSig is a few hundred bytes (a deflated JSON
/// document of six short fields, base64-encoded); anything far larger is not one, and reading it
/// whole would let a runaway pipe fill memory.
const MAX_USERSIG_BYTES: u64 = 64 * 1024;

/// Reads a UserSig from `input`: at most [`MAX_USERSIG_BYTES`] + 1 bytes, so that an oversized
/// input is refused without being held.
fn read_usersig(input: impl std::io::Read) -> miette::Result<String> {
    let mut bytes = Vec::new();
    input
        .take(MAX_USERSIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .into_diagnostic()
        .wrap_err("reading the UserSig from stdin")?;
    if bytes.len() as u64 > MAX_USERSIG_BYTES {
        return Err(miette::miette!(
            help = "pipe the UserSig alone (a few hundred bytes) into `timctl usersig --verify -`",
            "stdin holds more than {} KiB, too much for a UserSig",
            MAX_USERSIG_BYTES / 1024
        ));
    }
    String::from_utf8(bytes).map_err(|_| {
        miette::miette!(
            help = "pipe the UserSig alone into `timctl usersig --verify -`",
            "stdin is not UTF-8 text, so it does not hold a UserSig"
        )
    })
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub(crate) fn run(_global: &Global, args: &Args) -> miette::Result<ExitCode> {
    // Flags win; whatever they leave out comes from the manifest's `app`, read only then.
    let (sdkappid, identifier) = match (args.sdkappid, args.identifier.as_deref()) {
        (Some(n), Some(id)) => (n, id.to_owned()),
        (n, id) => {
            // The manifest's problems are printed as `validate` prints them, then why the
            // manifest was read at all: a reader who only wanted a UserSig learns the flags.
            let desired = match timctl_core::manifest::load(&args.manifests.manifests) {
                Ok(desired) => desired,
                Err(errors) => {
                    crate::output::print_problems(&errors, "load");
                    return Err(miette::miette!(
                        help = "pass both --sdkappid and --identifier to do without one",
                        "--sdkappid and --identifier default to the manifest's app, which could not be read"
                    ));
                }
            };
            (
                n.unwrap_or(desired.app.sdkappid),
                id.map_or_else(|| desired.app.admin.to_string(), str::to_owned),
            )
        }
    };
    let identifier: UserId = identifier
        .parse()
        .map_err(miette::Report::new)
        .wrap_err("--identifier")?;
    let key = crate::credentials::secret_key_from_env()?;

    let Some(sig) = &args.verify else {
        let expire = args.expire.as_secs();
        if expire == 0 {
            return Err(miette::miette!("--expire must be at least one second"));
        }
        let sig = usersig::make(sdkappid, identifier.as_str(), &key, unix_now(), expire);
        crate::output::to_stdout("the UserSig", |out| writeln!(out, "{sig}"))?;
        return Ok(ExitCode::SUCCESS);
    };
    let sig = if sig == "-" {
        read_usersig(std::io::stdin().lock())?
    } else {
        sig.clone()
    };
    let now = unix_now();
    match usersig::verify(&sig, &key, sdkappid, identifier.as_str(), now) {
        Ok(v) => {
            let expires_at =
                jiff::Timestamp::from_second(v.expires_at().min(i64::MAX as u64) as i64)
                    .map_or_else(|_| v.expires_at().to_string(), |t| t.to_string());
            let left = humantime::format_duration(std::time::Duration::from_secs(
                v.expires_at().saturating_sub(now),
            ));
            crate::output::to_stdout("the verdict", |out| {
                writeln!(
                    out,
                    "valid: UserSig for {} in app {}, expires {expires_at} (in {left})",
                    v.identifier, v.sdkappid,
                )
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln_lossy!("invalid: {e}");
            Ok(ExitCode::from(1))
        }
    }
}
