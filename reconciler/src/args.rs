//! The command line (README.md is its reference). Each command's own flags live beside its implementation in
//! `cmd/`; this file holds the top level and the flag groups several commands share.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use timctl_core::ledger::{LocatedStore, StateLocation, StateName};

use crate::cmd;

#[derive(Debug, Parser)]
#[command(
    name = "timctl",
    // The version and the commit it was built from (see build.rs), for -V and --version alike:
    // a CI log should say exactly which code ran.
    version = env!("TIMCTL_LONG_VERSION"),
    about = "Keeps Tencent Cloud Chat conversations deleted, declaratively.",
    long_about = "Keeps Tencent Cloud Chat conversations deleted, declaratively.\n\n\
        YAML manifests list, per user, the conversations that must not exist. `timctl plan` \
        shows what would be deleted; `timctl apply` deletes it and records each deletion in \
        the state."
)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: Global,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Check manifests; needs no state and no credentials.
    Validate(cmd::validate::Args),
    /// Rewrite manifests in the canonical layout (key order, users and entries sorted,
    /// comments kept).
    Fmt(cmd::fmt::Args),
    /// Show what apply would do: manifest × state. Calls nothing, changes nothing.
    Plan(cmd::plan::Args),
    /// Print a saved plan.
    Show(cmd::show::Args),
    /// Delete what the plan says, and record it in the state.
    Apply(cmd::apply::Args),
    /// Keep the manifests' conversations deleted in real time: delete each one within a
    /// second of the message callback that brings it back.
    Serve(cmd::serve::Args),
    /// Print the JSON Schema of the manifest, for editors and CI validators.
    Schema(cmd::schema::Args),
    /// Read and edit the state.
    #[command(subcommand)]
    State(cmd::state::Args),
    /// Make a UserSig from the secret key, or verify one.
    Usersig(cmd::usersig::Args),
    /// Print a shell completion script (bash, zsh, fish, powershell, elvish).
    Completions(cmd::completions::Args),
    /// Write a man page for every command into a directory.
    Man(cmd::man::Args),
}

/// The command line as `--help`, the man pages and the completions show it: the clap
/// definitions plus each command's environment, exit status and examples (`help.rs`).
pub(crate) fn command() -> clap::Command {
    crate::help::document(Cli::command())
}

/// Parses this process's command line. An environment variable set but empty counts as unset
/// (`TIMCTL_STATE=` means the default state, not "a value is required for --state"), and
/// `TIMCTL_MANIFEST` is the default of every `-f/--manifest`.
pub(crate) fn parse() -> Result<Cli, clap::Error> {
    let env = |name: &std::ffi::OsStr| std::env::var_os(name).filter(|v| !v.is_empty());
    let manifest = env(crate::help::MANIFEST_VARIABLE.as_ref())
        // Leaked once per process: clap keeps defaults as `'static`.
        .map(|v| &*Box::leak(v.into_boxed_os_str()));
    let cmd = with_environment(command(), &|name| env(name).is_none(), manifest);
    let matches = cmd
        .clone()
        .try_get_matches()
        .map_err(|e| with_variable_named(e, &cmd))?;
    Cli::from_arg_matches(&matches)
}

/// `err` with a tip naming the environment variable its bad value came from, when it came
/// from one: clap names only the flag (`invalid value 'bogus' for '--color <WHEN>'`), which a
/// CI job that set `TIMCTL_COLOR` never typed.
fn with_variable_named(mut err: clap::Error, cmd: &clap::Command) -> clap::Error {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !matches!(
        err.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    ) {
        return err;
    }
    let (Some(ContextValue::String(flag)), Some(ContextValue::String(value))) = (
        err.get(ContextKind::InvalidArg),
        err.get(ContextKind::InvalidValue),
    ) else {
        return err;
    };
    // "--color <WHEN>" → "color".
    let Some(long) = flag
        .strip_prefix("--")
        .and_then(|f| f.split([' ', '=']).next())
    else {
        return err;
    };
    let typed = std::env::args_os().any(|a| {
        let a = a.to_string_lossy();
        a.strip_prefix("--")
            .is_some_and(|rest| rest == long || rest.starts_with(&format!("{long}=")))
    });
    let variable = variable_of(cmd, long).filter(|v| {
        !typed && std::env::var_os(v).is_some_and(|set| set.to_string_lossy() == *value)
    });
    if let Some(variable) = variable {
        err.insert(
            ContextKind::Suggested,
            ContextValue::StyledStrs(vec![
                format!("the value came from {variable}: correct it, or unset it").into(),
            ]),
        );
    }
    err
}

/// The environment variable of the flag `--long`, in `cmd` or any of its subcommands.
fn variable_of(cmd: &clap::Command, long: &str) -> Option<String> {
    cmd.get_arguments()
        .find(|a| a.get_long() == Some(long))
        .and_then(|a| a.get_env())
        .map(|v| v.to_string_lossy().into_owned())
        .or_else(|| cmd.get_subcommands().find_map(|s| variable_of(s, long)))
}

/// `cmd` with the `env` of each flag whose variable `unset` says is unset removed (clap reads
/// an empty variable as an empty value), and `manifest`, if any, as every `--manifest`'s
/// default; recursively.
fn with_environment(
    mut cmd: clap::Command,
    unset: &dyn Fn(&std::ffi::OsStr) -> bool,
    manifest: Option<&'static std::ffi::OsStr>,
) -> clap::Command {
    let ids: Vec<clap::Id> = cmd
        .get_arguments()
        .filter(|a| a.get_env().is_some_and(unset) || a.get_long() == Some("manifest"))
        .map(|a| a.get_id().clone())
        .collect();
    for id in ids {
        cmd = cmd.mut_arg(id, |arg| {
            let arg = if arg.get_env().is_some_and(unset) {
                arg.env(None)
            } else {
                arg
            };
            match manifest {
                Some(path) if arg.get_long() == Some("manifest") => arg.default_value(path),
                _ => arg,
            }
        });
    }
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .collect();
    for name in names {
        cmd = cmd.mut_subcommand(name, |sub| with_environment(sub, unset, manifest));
    }
    cmd
}

/// Flags every command takes, before or after the command name.
#[derive(Debug, Args)]
pub(crate) struct Global {
    /// The state: an SQLite file, or a PostgreSQL database
    /// (postgres://USER@HOST:PORT/DB?sslmode=verify-full; the password from PGPASSWORD or
    /// ~/.pgpass, never shown).
    #[arg(
        long,
        global = true,
        env = "TIMCTL_STATE",
        // The URL may hold a password: never print the environment's value in --help.
        hide_env_values = true,
        default_value = ".timctl/state.db",
        value_name = "PATH|URL"
    )]
    pub(crate) state: PathBuf,

    /// Which state in a PostgreSQL database, so that several repositories can manage one app
    /// (an SQLite state is named by its file).
    #[arg(
        long,
        global = true,
        env = "TIMCTL_STATE_NAME",
        default_value = timctl_core::ledger::location::DEFAULT_STATE_NAME,
        value_name = "NAME"
    )]
    pub(crate) state_name: String,

    /// Call this base URL instead of the region's host (a private gateway, a local fake).
    /// Plain http:// only for loopback addresses.
    #[arg(long, global = true, env = "TIMCTL_ENDPOINT", value_name = "URL")]
    pub(crate) endpoint: Option<String>,

    /// Say more (repeatable).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub(crate) verbose: u8,

    /// Say only what is asked for and errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub(crate) quiet: bool,

    /// When to use colour. NO_COLOR in the environment means never.
    #[arg(long, global = true, value_enum, env = "TIMCTL_COLOR", default_value_t = ColorChoice::Auto, value_name = "WHEN")]
    pub(crate) color: ColorChoice,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum ColorChoice {
    Auto,
    Always,
    Never,
}

impl Global {
    /// Where the state is: `--state` read as a PostgreSQL URL or a file path.
    pub(crate) fn state_location(&self) -> miette::Result<StateLocation> {
        Ok(StateLocation::parse(self.state.as_os_str())?)
    }

    /// `--state-name`, checked.
    pub(crate) fn state_name(&self) -> miette::Result<StateName> {
        Ok(StateName::new(&self.state_name)?)
    }

    /// The state `--state` and `--state-name` name, to lock and write.
    pub(crate) fn state_store(&self) -> miette::Result<LocatedStore> {
        Ok(LocatedStore::new(
            self.state_location()?,
            self.state_name()?,
        )?)
    }

    /// Whether to colour output on stderr.
    pub(crate) fn color_stderr(&self) -> bool {
        use std::io::IsTerminal;
        self.colour_for(std::io::stderr().is_terminal())
    }

    /// Whether to colour a plan on stdout.
    pub(crate) fn color_stdout(&self) -> bool {
        use std::io::IsTerminal;
        self.colour_for(std::io::stdout().is_terminal())
    }

    /// `--color`: always, never, or (auto) on a terminal unless `NO_COLOR` says otherwise.
    fn colour_for(&self, terminal: bool) -> bool {
        match self.color {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && terminal
            }
        }
    }

    /// Sets up logging and miette's rendering from `-v`, `-q` and `--color`.
    /// Sets up logging and error reports; `json_logs` writes one JSON object per log line
    /// (serve's `--log-format json`).
    pub(crate) fn init_output_as(&self, json_logs: bool) {
        let level = match (self.quiet, self.verbose) {
            (true, _) => "error",
            (false, 0) => "warn",
            (false, 1) => "info",
            (false, 2) => "debug",
            (false, _) => "trace",
        };
        // The platform verifier logs every certificate it refuses, once per connection: a
        // line per call in flight before timctl's one message naming the cause and
        // SSL_CERT_FILE. Its lines are kept for -vv and TIMCTL_LOG.
        let directives = if self.verbose < 2 {
            format!("{level},rustls_platform_verifier=off")
        } else {
            level.to_owned()
        };
        let filter = tracing_subscriber::EnvFilter::try_from_env("TIMCTL_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(directives));
        if json_logs {
            // A log collector wants the time and the fields apart.
            let _ = tracing_subscriber::fmt()
                .json()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .with_target(false)
                .try_init();
        } else {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .with_ansi(self.color_stderr())
                .without_time()
                .with_target(false)
                .try_init();
        }
        let color = self.color_stderr();
        let _ = miette::set_hook(Box::new(move |_| {
            Box::new(
                miette::MietteHandlerOpts::new()
                    .color(color)
                    .unicode(color)
                    .build(),
            )
        }));
    }
}

/// Where the manifests are.
#[derive(Debug, Args)]
pub(crate) struct ManifestArgs {
    /// Manifest file or directory (every *.yaml/*.yml below, sorted); repeatable. A link named
    /// here is followed; links met while walking a directory are skipped. Default:
    /// TIMCTL_MANIFEST when set, else timctl.yaml.
    #[arg(
        short = 'f',
        long = "manifest",
        value_name = "PATH",
        default_value = "timctl.yaml"
    )]
    pub(crate) manifests: Vec<PathBuf>,
}

/// Which manifest entries the plan covers.
#[derive(Debug, Args)]
pub(crate) struct FilterArgs {
    /// Plan every manifest entry as a delete, for conversations that may have come back.
    #[arg(long)]
    pub(crate) reassert: bool,
    /// Only these From_Accounts (repeatable).
    #[arg(long = "user", value_name = "ID")]
    pub(crate) users: Vec<String>,
    /// Not these From_Accounts (repeatable).
    #[arg(long = "exclude-user", value_name = "ID")]
    pub(crate) exclude_users: Vec<String>,
}

impl FilterArgs {
    /// The filter of `--reassert`, `--user` and `--exclude-user`, with IDs validated.
    pub(crate) fn filter(&self) -> miette::Result<timctl_core::plan::Filter> {
        use miette::{Context, IntoDiagnostic};
        let ids = |flag: &str,
                   ids: &[String]|
         -> miette::Result<std::collections::BTreeSet<timctl_core::ids::UserId>> {
            ids.iter()
                .map(|id| {
                    timctl_core::ids::UserId::new(id.as_str())
                        .into_diagnostic()
                        .wrap_err_with(|| format!("{flag} {id:?} is not a valid UserID"))
                })
                .collect()
        };
        Ok(timctl_core::plan::Filter {
            reassert: self.reassert,
            users: ids("--user", &self.users)?,
            exclude_users: ids("--exclude-user", &self.exclude_users)?,
        })
    }
}

/// Looking at the server before planning (`--refresh`).
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct RefreshArgs {
    /// Read each planned user's conversation list from the server first (get_list, every page)
    /// and plan from what is really there: delete what is present, record what is absent.
    /// Needs credentials; calls only get_list while planning.
    #[arg(long, conflicts_with = "reassert")]
    pub(crate) refresh: bool,
    /// get_list calls per second; default a little under its documented 200. Its quota is
    /// shared with the app's own backend: leave it room.
    #[arg(long, value_name = "N", requires = "refresh")]
    pub(crate) refresh_rate: Option<u32>,
}

/// How apply carries a plan out.
#[derive(Debug, Args)]
pub(crate) struct ExecArgs {
    /// Refuse, changing nothing, a plan with more than N deletions.
    #[arg(long, value_name = "N", env = "TIMCTL_MAX_DELETES")]
    pub(crate) max_deletes: Option<u64>,
    /// Calls per second; default a little under the documented limit.
    #[arg(long, value_name = "N", env = "TIMCTL_RATE")]
    pub(crate) rate: Option<u32>,
    /// Calls in flight at once (at least 1); default enough to keep the rate up at 250 ms
    /// latency (rate / 4). Calls in flight and deletions not yet recorded together never exceed
    /// one second of calls (the rate), so a stalled state holds the calls back.
    #[arg(long, value_name = "N", env = "TIMCTL_CONCURRENCY")]
    pub(crate) concurrency: Option<usize>,
    /// Retries of a transient failure per call.
    #[arg(
        long,
        value_name = "N",
        env = "TIMCTL_MAX_RETRIES",
        default_value_t = 5
    )]
    pub(crate) max_retries: u32,
    /// Wait this long for another timctl's lock on the state (30s, 5m).
    #[arg(long, value_name = "DUR", env = "TIMCTL_LOCK_TIMEOUT", value_parser = parse_duration, default_value = "0s")]
    pub(crate) lock_timeout: Duration,
    /// Print one JSON event per line instead of a progress bar.
    #[arg(long)]
    pub(crate) json: bool,
}

/// The highest `--rate` or `--refresh-rate` taken: far above any quota Tencent grants, so a
/// typo of a few extra zeros is refused instead of turning the limiter off.
const MAX_RATE: u32 = 100_000;

/// A calls-per-second flag (`--rate`, `--refresh-rate`) for an endpoint documented at
/// `documented` calls per second: at least 1, at most [`MAX_RATE`], default a little under the
/// documentation; above it is allowed with a warning (unless `quiet`), for apps whose quota
/// Tencent raised. The one check apply, serve and refresh share.
pub(crate) fn calls_per_second(
    flag: &str,
    value: Option<u32>,
    endpoint: &str,
    documented: u32,
    quiet: bool,
) -> miette::Result<f64> {
    let rate = match value {
        Some(0) => return Err(miette::miette!("{flag} must be at least 1 call per second")),
        Some(r) if r > MAX_RATE => {
            return Err(miette::miette!(
                "{flag} {r} is more than any quota; the most timctl takes is {MAX_RATE}"
            ));
        }
        Some(r) => f64::from(r),
        None => timctl_core::client::default_rate(documented),
    };
    if rate > f64::from(documented) && !quiet {
        crate::output::eprintln_lossy!(
            "warning: {flag} {rate} is above {endpoint}'s documented limit of {documented} calls \
             per second; use it only if Tencent raised your app's quota, or calls will be refused \
             (60007)"
        );
    }
    Ok(rate)
}

/// The runtime the commands that call the API run on: two workers, as the machine they are
/// sized for has two cores, with timers and I/O.
pub(crate) fn runtime() -> miette::Result<tokio::runtime::Runtime> {
    use miette::{Context, IntoDiagnostic};
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .into_diagnostic()
        .wrap_err("cannot start the async runtime")
}

/// Reads a duration written like `30s`, `5m` or `24h`.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e}; write a duration like 30s, 5m or 24h"))
}
