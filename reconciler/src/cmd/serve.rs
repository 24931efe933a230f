//! `timctl serve`: flags, the token and credentials, the listeners in the documented order,
//! the first try at the state's lock, and the signals; then `timctl_core::serve::controller`'s
//! `Replica::run` (terms as the active replica, a standby or held between them). The logic is
//! `timctl_core::serve`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use miette::{Context, IntoDiagnostic, miette};
use timctl_core::api::{Endpoint, RecentContactDelete, RecentContactGetList};
use timctl_core::callback::{CallbackToken, ForbiddenIndex};
use timctl_core::client::{BaseUrl, Client};
use timctl_core::ledger::{RunCommand, RunInfo, StateLocation};
use timctl_core::serve::cidr::Cidr;
use timctl_core::serve::controller::{Ended, Reloading, Replica, Shared, is_locked, reload_loop};
use timctl_core::serve::enforcer::{Enforcer, Recorder};
use timctl_core::serve::http::{Callbacks, Readiness, Role, callback_router, ops_router};
use timctl_core::serve::listener::{self, Limits, TLS_POLL, Tls};
use timctl_core::serve::metrics::Metrics;
use timctl_core::serve::reload::{self, Adopted, Pending};
use timctl_core::serve::replica::QueueTarget;
use timctl_core::stop::{Stop, StopReason};

use crate::args::{Global, parse_duration};
use crate::output::status_line;

/// The variable holding the callback token.
pub(crate) const TOKEN_VARIABLE: &str = "TIMCTL_CALLBACK_TOKEN";
/// The variable naming a file that holds the callback token.
pub(crate) const TOKEN_FILE_VARIABLE: &str = "TIMCTL_CALLBACK_TOKEN_FILE";

/// How serve writes its log lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// One line of text per event.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Log lines as text or as one JSON object per line (on stderr).
    #[arg(
        long,
        value_name = "FORMAT",
        env = "TIMCTL_LOG_FORMAT",
        default_value = "text"
    )]
    pub(crate) log_format: LogFormat,
    #[command(flatten)]
    pub(crate) manifests: crate::args::ManifestArgs,
    /// Where Tencent posts callbacks (`POST /callback`).
    #[arg(
        long,
        value_name = "ADDR",
        env = "TIMCTL_LISTEN",
        default_value = "0.0.0.0:8080"
    )]
    pub(crate) listen: SocketAddr,
    /// The ops listener: /healthz, /readyz, /metrics.
    #[arg(
        long,
        value_name = "ADDR",
        env = "TIMCTL_OPS_LISTEN",
        default_value = "127.0.0.1:9464"
    )]
    pub(crate) ops_listen: SocketAddr,
    /// Only these peers may post callbacks (CIDR, repeatable or comma-separated; default: any).
    #[arg(
        long = "callback-allow",
        value_name = "CIDR",
        env = "TIMCTL_CALLBACK_ALLOW",
        value_delimiter = ','
    )]
    pub(crate) callback_allow: Vec<Cidr>,
    /// Run without a callback token: anyone who can reach --listen can make serve delete
    /// what the manifests name. For trying serve out only.
    #[arg(long)]
    pub(crate) insecure_no_callback_auth: bool,
    /// One deletion per conversation per window: the first message's at once, one more at the
    /// window's end for messages during it.
    #[arg(long, value_name = "DUR", env = "TIMCTL_SETTLE", value_parser = parse_duration, default_value = "500ms")]
    pub(crate) settle: Duration,
    /// The most conversations queued at once; past it a callback is answered and not queued.
    #[arg(
        long,
        value_name = "N",
        env = "TIMCTL_QUEUE_CAPACITY",
        default_value_t = 100_000
    )]
    pub(crate) queue_capacity: usize,
    /// After SIGTERM or SIGINT, wait at most this long for deletions in flight.
    #[arg(long, value_name = "DUR", env = "TIMCTL_SHUTDOWN_TIMEOUT", value_parser = parse_duration, default_value = "10s")]
    pub(crate) shutdown_timeout: Duration,
    /// Calls per second; default a little under the documented limit.
    #[arg(long, value_name = "N", env = "TIMCTL_RATE")]
    pub(crate) rate: Option<u32>,
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
    /// get_list calls per second for resyncs; default a little under the documented limit
    /// (the quota is shared with the app's own backend: leave it room).
    #[arg(long, value_name = "N", env = "TIMCTL_REFRESH_RATE")]
    pub(crate) refresh_rate: Option<u32>,
    /// Read every manifest user's list and delete what is there this often (±10% jitter), to
    /// catch what no callback reported (imported messages, missed callbacks).
    #[arg(long, value_name = "DUR", env = "TIMCTL_RESYNC", value_parser = parse_duration, default_value = "6h")]
    pub(crate) resync: Duration,
    /// Re-read the manifests this often (and on SIGHUP); a changed, valid set is adopted.
    #[arg(long, value_name = "DUR", env = "TIMCTL_RELOAD_INTERVAL", value_parser = parse_duration, default_value = "30s")]
    pub(crate) reload_interval: Duration,
    /// Do not adopt manifests that would add more than N deletions to what the state records
    /// (re-deleting recorded entries never counts); default: no limit.
    #[arg(long, value_name = "N", env = "TIMCTL_MAX_DELETES")]
    pub(crate) max_deletes: Option<u64>,
    /// Delete the history's events older than this, as serve runs (e.g. 90d); default: keep all.
    #[arg(long, value_name = "DUR", env = "TIMCTL_HISTORY_RETENTION", value_parser = parse_duration)]
    pub(crate) history_retention: Option<Duration>,
    /// Serve callbacks over HTTPS with this certificate chain (PEM); re-read when it changes.
    #[arg(
        long,
        value_name = "FILE",
        env = "TIMCTL_TLS_CERT",
        requires = "tls_key"
    )]
    pub(crate) tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM); re-read when it changes.
    #[arg(
        long,
        value_name = "FILE",
        env = "TIMCTL_TLS_KEY",
        requires = "tls_cert"
    )]
    pub(crate) tls_key: Option<PathBuf>,
    /// Callback connections served at once; more wait until one closes.
    #[arg(
        long,
        value_name = "N",
        env = "TIMCTL_MAX_CONNECTIONS",
        default_value_t = 1024
    )]
    pub(crate) max_connections: usize,
    /// A callback client must send each request's headers (and its body) within this long,
    /// and an idle connection is closed after it.
    #[arg(long, value_name = "DUR", env = "TIMCTL_CLIENT_TIMEOUT", value_parser = parse_duration, default_value = "10s")]
    pub(crate) client_timeout: Duration,
}

/// The token from `TIMCTL_CALLBACK_TOKEN`, else the file `TIMCTL_CALLBACK_TOKEN_FILE` names.
fn token() -> miette::Result<Option<CallbackToken>> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    if let Some(t) = var(TOKEN_VARIABLE) {
        return Ok(CallbackToken::new(&t));
    }
    if let Some(path) = var(TOKEN_FILE_VARIABLE) {
        let path = PathBuf::from(path);
        let text = std::fs::read_to_string(&path)
            .into_diagnostic()
            .wrap_err_with(|| format!("cannot read {TOKEN_FILE_VARIABLE} ({})", path.display()))?;
        return match CallbackToken::new(&text) {
            Some(t) => Ok(Some(t)),
            None => Err(miette!(
                "{TOKEN_FILE_VARIABLE} names {}, which is empty: put the callback token set in \
                 the console in it",
                path.display()
            )),
        };
    }
    Ok(None)
}

fn bind(addr: SocketAddr, what: &str) -> miette::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot listen on {addr} ({what})"))?;
    listener.set_nonblocking(true).into_diagnostic()?;
    Ok(listener)
}

pub(crate) fn run(global: &Global, args: &Args) -> miette::Result<ExitCode> {
    // Under `--log-format json` every stderr line is one JSON object, the status lines too.
    let json = args.log_format == LogFormat::Json;
    let rate = crate::args::calls_per_second(
        "--rate",
        args.rate,
        "delete",
        RecentContactDelete::CALLS_PER_SECOND,
        false,
    )?;
    let refresh_rate = crate::args::calls_per_second(
        "--refresh-rate",
        args.refresh_rate,
        "get_list",
        RecentContactGetList::CALLS_PER_SECOND,
        false,
    )?;
    for (flag, value) in [
        ("--queue-capacity", args.queue_capacity),
        ("--max-connections", args.max_connections),
    ] {
        if value == 0 {
            return Err(miette!("{flag} must be at least 1"));
        }
    }
    for (flag, value) in [
        ("--resync", args.resync),
        ("--reload-interval", args.reload_interval),
        ("--client-timeout", args.client_timeout),
    ] {
        if value.is_zero() {
            return Err(miette!("{flag} must be longer than 0s"));
        }
    }
    let runtime = crate::args::runtime()?;
    let metrics = Arc::new(Metrics::new());
    let readiness = Arc::new(Readiness::default());

    // 1. The ops listener: /healthz answers from now on, /readyz says `starting`.
    let ops = bind(args.ops_listen, "--ops-listen")?;
    let ops_router = ops_router(readiness.clone(), metrics.clone());
    runtime.spawn(async move {
        let Ok(listener) = tokio::net::TcpListener::from_std(ops) else {
            return;
        };
        let _ = axum::serve(listener, ops_router).await;
    });

    // 2. The manifests, the token, the credentials and the certificate: a refusal exits 1
    // before the state.
    let desired = timctl_core::manifest::load(&args.manifests.manifests)?;
    let token = token()?;
    if token.is_none() && !args.insecure_no_callback_auth {
        return Err(miette!(
            "no callback token: set {TOKEN_VARIABLE} (or {TOKEN_FILE_VARIABLE}) to the token of \
             the callback configuration in the Tencent Cloud Chat console, or pass \
             --insecure-no-callback-auth to accept unsigned callbacks"
        ));
    }
    let credentials = crate::credentials::from_env()?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(Arc::new(Tls::load(cert, key).into_diagnostic()?)),
        _ => None,
    };
    let sdkappid = desired.app.sdkappid;
    let base_url = BaseUrl::resolve(desired.app.region, global.endpoint.as_deref())?;
    // Each term as the active replica has a client of its own, with its own stop signal: a
    // lost state stops that term's calls, and the next term starts afresh.
    let mut client_config = crate::client::config(
        &desired.app,
        credentials,
        base_url,
        args.max_retries,
        &Stop::new(),
    );
    client_config.set_rate::<RecentContactDelete>(rate);
    client_config.set_rate::<RecentContactGetList>(refresh_rate);
    client_config.attempts = Some(metrics.attempt_observer());

    // 3. The state, under its writer lock while this replica is the active one. On
    // PostgreSQL, a state whose lock another serve holds makes this one a standby; on SQLite
    // (one machine, one process) it is refused like apply.
    let store = global.state_store()?;
    let queue = match store.location() {
        StateLocation::Postgres(pg) => Some(QueueTarget {
            location: pg.clone(),
            name: store.name().as_str().to_owned(),
            sdkappid,
        }),
        StateLocation::Sqlite(_) => None,
    };
    let first_writer =
        match store.create_or_open_writer(desired.app.sdkappid, "serve", args.lock_timeout) {
            Ok(writer) => Some(writer),
            Err(e) if queue.is_some() && is_locked(&e) => None,
            Err(e) => return Err(e.into()),
        };
    let index = ForbiddenIndex::new(&desired).into_diagnostic()?;
    metrics.set_entries(index.len());
    let adopted: reload::Current = Arc::new(std::sync::RwLock::new(Arc::new(Adopted {
        desired: desired.clone(),
        index,
    })));
    // Users waiting for a targeted resync: as many as the queue holds, past that a full one.
    let pending = Arc::new(Pending::new(args.queue_capacity));
    let shared = Arc::new(Shared {
        manifests: args.manifests.manifests.clone(),
        max_deletes: args.max_deletes,
        adopted: adopted.clone(),
        refused: Arc::default(),
        metrics: metrics.clone(),
        readiness: readiness.clone(),
        origin: crate::origin::run_origin(),
        redact: crate::redact::text,
    });
    let first_term = match first_writer {
        Some(writer) => Some(shared.prepare_term(writer, desired)?),
        None => None,
    };
    let enforcer: Enforcer<Arc<Client>> =
        Enforcer::held(args.settle, args.queue_capacity, metrics.clone());

    // 4. The callback listener.
    let callbacks = Arc::new(Callbacks {
        adopted: adopted.clone(),
        pending: pending.clone(),
        token,
        sdkappid,
        allow: args.callback_allow.clone(),
        enforcer: enforcer.clone(),
        metrics: metrics.clone(),
    });
    let listener = bind(args.listen, "--listen")?;
    let (stop_accepting, accepting) = tokio::sync::watch::channel(false);
    let server = {
        let router = callback_router(callbacks, args.client_timeout);
        let limits = Limits {
            max_connections: args.max_connections,
            client_timeout: args.client_timeout,
        };
        let tls = tls.clone();
        runtime.spawn(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                return;
            };
            listener::serve(listener, router, limits, tls, accepting).await;
        })
    };

    // 5. Ready (active, or a standby); 6. the first resync, while callbacks are already
    // enforced.
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(
        listen = %args.listen,
        ops = %args.ops_listen,
        entries = metrics_entries(&reload::current(&adopted).desired),
        "serve is ready"
    );
    status_line(
        json,
        "INFO",
        &format!(
            "timctl serve: ready on {scheme}://{} (callbacks) and {} (ops); enforcing {} \
             conversations.",
            args.listen,
            args.ops_listen,
            reload::current(&adopted).desired.entries.len()
        ),
    );
    let hangup = Arc::new(tokio::sync::Notify::new());
    // The term's recorder, while this replica is active: reloads read the state's entries and
    // begin their runs through it.
    let term_recorder: Arc<std::sync::Mutex<Option<Recorder>>> = Arc::default();
    let reloads = runtime.spawn(reload_loop(Reloading {
        shared: shared.clone(),
        every: args.reload_interval,
        recorder: term_recorder.clone(),
        pending: pending.clone(),
        hangup: hangup.clone(),
        last_parsed: std::sync::Mutex::new(None),
    }));
    let certificates = tls.map(|tls| runtime.spawn(tls_loop(tls, hangup.clone())));
    let pruning = args.history_retention.map(|keep| {
        let (location, name) = (global.state_location(), global.state_name());
        runtime.spawn(async move {
            let (Ok(location), Ok(name)) = (location, name) else {
                return;
            };
            prune_loop(location, name, sdkappid, keep).await;
        })
    });

    // Until a signal, or a fatal answer: terms as the active replica, and between them a
    // standby's (or, the state lost, a held) wait for the lock.
    let (shutdown_tx, shutdown) = tokio::sync::watch::channel(false);
    {
        let hangup = hangup.clone();
        let shutdown_timeout = args.shutdown_timeout;
        runtime.spawn(async move {
            let reason = wait_for_signal(&hangup).await;
            watch_second_signal(reason, json);
            status_line(
                json,
                "INFO",
                &format!(
                    "Stopping: no new callbacks; deletions in flight finish and are recorded \
                     (at most {} s). Send the signal again to exit at once.",
                    shutdown_timeout.as_secs()
                ),
            );
            let _ = shutdown_tx.send(true);
        });
    }
    let replica = Replica {
        shared: shared.clone(),
        store,
        sdkappid,
        queue,
        client_config,
        enforcer: enforcer.clone(),
        pending: pending.clone(),
        term_recorder,
        concurrency: ((rate / 4.0).ceil() as usize).max(1),
        every: args.resync,
        capacity: args.queue_capacity,
        shutdown_timeout: args.shutdown_timeout,
        shutdown,
        stop_accepting,
    };
    let ended = runtime.block_on(replica.run(first_term));
    readiness.set_role(Role::Starting);
    metrics.set_ready(false, false);
    reloads.abort();
    for task in certificates.into_iter().chain(pruning) {
        task.abort();
    }
    runtime.block_on(async {
        let _ = reloads.await;
        let _ = tokio::time::timeout(Duration::from_secs(1), server).await;
    });
    enforcer.hold();
    drop(enforcer);
    runtime.shutdown_timeout(Duration::from_secs(1));
    match ended {
        Ended::Shutdown(Ok(())) => {
            status_line(json, "INFO", "timctl serve: stopped.");
            Ok(ExitCode::SUCCESS)
        }
        Ended::Shutdown(Err(e)) => {
            Err(miette!("serve stopped: recording in the state failed: {e}"))
        }
        Ended::Fatal(message) => Err(miette!("serve stopped: {message}")),
    }
}

/// Every [`TLS_POLL`] and on SIGHUP: the certificate and key files are read again, and a
/// changed pair serves new connections (open ones keep theirs).
async fn tls_loop(tls: Arc<Tls>, hangup: Arc<tokio::sync::Notify>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(TLS_POLL) => {}
            () = hangup.notified() => {}
        }
        let reloaded = {
            let tls = tls.clone();
            tokio::task::spawn_blocking(move || tls.reload()).await
        };
        match reloaded {
            Ok(Ok(true)) => tracing::info!("the TLS certificate changed; new connections use it"),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "the TLS files cannot be used; the pair in use stays");
            }
            Err(_) => {}
        }
    }
}

/// How often `--history-retention` prunes, at most.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// At start and then every `keep / 10` (at most hourly): deletes the history's events older
/// than `keep`, as `state prune-history` does (beside serve's lock, a run of its own).
async fn prune_loop(
    location: timctl_core::ledger::StateLocation,
    name: timctl_core::ledger::StateName,
    sdkappid: u64,
    keep: Duration,
) {
    let every = (keep / 10).clamp(Duration::from_secs(1), PRUNE_EVERY);
    loop {
        let (location, name) = (location.clone(), name.clone());
        let pruned = tokio::task::spawn_blocking(move || {
            let before = jiff::Timestamp::now()
                .checked_sub(
                    jiff::SignedDuration::try_from(keep).unwrap_or(jiff::SignedDuration::MAX),
                )
                .unwrap_or(jiff::Timestamp::MIN);
            let mut run = RunInfo::start(
                RunCommand::StatePruneHistory,
                "",
                crate::origin::run_origin(),
            );
            // A dry count first: nothing to prune writes no run.
            match timctl_core::ledger::prune_history(
                &location,
                &name,
                Some(sdkappid),
                before,
                true,
                &mut run,
            ) {
                Ok(Some(n)) if n > 0 => timctl_core::ledger::prune_history(
                    &location,
                    &name,
                    Some(sdkappid),
                    before,
                    false,
                    &mut run,
                ),
                other => other,
            }
        })
        .await;
        match pruned {
            Ok(Ok(Some(n))) if n > 0 => tracing::info!(pruned = n, "pruned the history"),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "pruning the history failed; tried again later")
            }
            Err(_) => {}
        }
        tokio::time::sleep(every).await;
    }
}

fn metrics_entries(desired: &timctl_core::desired::DesiredState) -> usize {
    desired.entries.len()
}

/// Waits for SIGTERM or SIGINT; a SIGHUP meanwhile wakes `hangup`'s waiters (the manifests
/// and the certificate are read again).
async fn wait_for_signal(hangup: &tokio::sync::Notify) -> StopReason {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).ok();
    let mut hup = signal(SignalKind::hangup()).ok();
    loop {
        tokio::select! {
            r = tokio::signal::ctrl_c() => if r.is_ok() { return StopReason::Interrupted },
            Some(()) = async { match term.as_mut() { Some(t) => t.recv().await, None => std::future::pending().await } } => return StopReason::Terminated,
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => hangup.notify_waiters(),
        }
    }
}

/// After the first signal, a second one exits at once (128 + its number); confirmed
/// deletions already sent to the recording thread may then be lost only if it has not written
/// them yet, and the next resync finds those conversations absent and records them.
// FIXME: "a second signal exits at once, confirmed deletions still recorded" wants the
// recording thread's pending batch written before the exit (bounded, as apply does); today it
// is dropped, so the record comes from the next resync as an absence, not as a deletion.
fn watch_second_signal(first: StopReason, json: bool) {
    tokio::spawn(async move {
        let _ = first;
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let code = tokio::select! {
            _ = tokio::signal::ctrl_c() => 130,
            Some(()) = async { match term.as_mut() { Some(t) => t.recv().await, None => std::future::pending().await } } => 143,
        };
        status_line(json, "WARN", "A second signal: exiting now.");
        std::process::exit(code);
    });
}
