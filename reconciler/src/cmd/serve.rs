//! `timctl serve`: flags, the token and credentials, the listeners in the contract's order,
//! and the wait for a signal. The logic is `timctl_core::serve`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use miette::{Context, IntoDiagnostic, miette};
use timctl_core::api::{Endpoint, RecentContactDelete, RecentContactGetList};
use timctl_core::callback::{CallbackToken, ForbiddenIndex};
use timctl_core::client::{BaseUrl, Client};
use timctl_core::ledger::{Ledger, LedgerWriter, RunCommand, RunInfo};
use timctl_core::serve::cidr::Cidr;
use timctl_core::serve::enforcer::{Enforcer, Recorder, spawn_recorder};
use timctl_core::serve::http::{Callbacks, Readiness, callback_router, ops_router};
use timctl_core::serve::listener::{self, Limits, TLS_POLL, Tls};
use timctl_core::serve::metrics::Metrics;
use timctl_core::serve::reload::{self, Adopted, Pending, Scope};
use timctl_core::serve::resync;
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

    // 3. The state, under its writer lock for as long as serve runs.
    let store = global.state_store()?;
    let mut writer =
        store.create_or_open_writer(desired.app.sdkappid, "serve", args.lock_timeout)?;
    writer.check_app(desired.app.sdkappid)?;
    let entries = writer.entries()?;
    let run = RunInfo::start(
        RunCommand::Serve,
        desired.digest.clone(),
        crate::origin::run_origin(),
    );
    writer.begin_run(&run)?;
    // Manifests that would add more deletions than --max-deletes are not adopted: serve
    // enforces what the state records of them until a reload brings acceptable ones.
    let mut refused_digest = None;
    let mut desired = desired;
    if let Some(max) = args.max_deletes {
        let new = reload::new_deletions(&desired, &entries);
        if new as u64 > max {
            tracing::error!(
                new_deletions = new,
                max_deletes = max,
                "the manifests would add more deletions than --max-deletes; serve enforces only \
                 the entries the state records until a reload brings acceptable manifests"
            );
            readiness.set_manifests_note(Some(format!(
                "refused: {new} new deletions > --max-deletes {max}; enforcing the entries the \
                 state records"
            )));
            metrics.reload("refused");
            refused_digest = Some(desired.digest.clone());
            desired = reload::recorded_only(desired, &entries);
        }
    }
    let index = ForbiddenIndex::new(&desired).into_diagnostic()?;
    metrics.set_entries(index.len());
    // Entries no manifest names any more are forgotten, as apply forgets them: serve enforces
    // exactly the manifests.
    let forgets = reload::forgets(&desired, &entries);
    if !forgets.is_empty() {
        writer.forget(&forgets)?;
        tracing::info!(
            forgotten = forgets.len(),
            "forgot entries no manifest names"
        );
    }
    drop(entries);

    let stop = Stop::new();
    let base_url = BaseUrl::resolve(desired.app.region, global.endpoint.as_deref())?;
    let mut config =
        crate::client::config(&desired.app, credentials, base_url, args.max_retries, &stop);
    config.set_rate::<RecentContactDelete>(rate);
    config.set_rate::<RecentContactGetList>(refresh_rate);
    config.attempts = Some(metrics.attempt_observer());
    let client = Arc::new(Client::new(config)?);
    let concurrency = ((rate / 4.0).ceil() as usize).max(1);
    let (recorder, recorder_thread) = spawn_recorder(writer, run, stop.clone());
    let enforcer = runtime.block_on(async {
        Enforcer::new(
            client.clone(),
            recorder.clone(),
            args.settle,
            args.queue_capacity,
            metrics.clone(),
            stop.clone(),
        )
    });
    let sdkappid = desired.app.sdkappid;
    let adopted: reload::Current =
        Arc::new(std::sync::RwLock::new(Arc::new(Adopted { desired, index })));
    // Users waiting for a targeted resync: as many as the queue holds, past that a full one.
    let pending = Arc::new(Pending::new(args.queue_capacity));

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

    // 5. Ready; 6. the first resync, while callbacks are already enforced.
    readiness.set_ready(true);
    metrics.set_ready(true, true);
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
    let shutdown = Arc::new(AtomicBool::new(false));
    let context = Arc::new(resync::Context {
        client: client.clone(),
        enforcer: enforcer.clone(),
        recorder: recorder.clone(),
        stop: stop.clone(),
        shutdown: shutdown.clone(),
        concurrency,
    });
    // A fatal answer to a resync's listing stops serve too.
    let listing_fatal: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    let resyncs = runtime.spawn(resync_loop(
        Resyncing {
            context: context.clone(),
            adopted: adopted.clone(),
            pending: pending.clone(),
            metrics: metrics.clone(),
            readiness: readiness.clone(),
            every: args.resync,
            listing_fatal: listing_fatal.clone(),
        },
        stop_accepting.subscribe(),
    ));
    let hangup = Arc::new(tokio::sync::Notify::new());
    let reloads = runtime.spawn(reload_loop(Reloading {
        manifests: args.manifests.manifests.clone(),
        every: args.reload_interval,
        max_deletes: args.max_deletes,
        adopted: adopted.clone(),
        recorder: recorder.clone(),
        pending: pending.clone(),
        metrics: metrics.clone(),
        readiness: readiness.clone(),
        hangup: hangup.clone(),
        refused: std::sync::Mutex::new(refused_digest),
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
    drop(recorder);

    // Until a signal, or a stop (a fatal answer, a state write failing).
    let signal = runtime.block_on(wait_for_signal_or(&stop, &hangup));
    if let Some(reason) = signal {
        watch_second_signal(&runtime, reason, json);
        status_line(
            json,
            "INFO",
            &format!(
                "Stopping: no new callbacks; deletions in flight finish and are recorded (at \
                 most {} s). Send the signal again to exit at once.",
                args.shutdown_timeout.as_secs()
            ),
        );
    }
    readiness.set_ready(false);
    metrics.set_ready(false, true);
    shutdown.store(true, Ordering::SeqCst);
    let _ = stop_accepting.send(true);
    // The controller's tasks hold the recording thread's senders: they stop first.
    reloads.abort();
    for task in certificates.into_iter().chain(pruning) {
        task.abort();
    }
    runtime.block_on(async {
        let deadline = tokio::time::Instant::now() + args.shutdown_timeout;
        let _ = reloads.await;
        let idle = enforcer.wait_idle(args.shutdown_timeout).await;
        if !idle {
            tracing::warn!("deletions still in flight at the shutdown timeout were abandoned");
            stop.stop(StopReason::Terminated);
        }
        // A resync still running at the timeout is dropped, so that the recording thread can
        // write its last batch and end.
        let mut resyncs = resyncs;
        if tokio::time::timeout_at(deadline, &mut resyncs)
            .await
            .is_err()
        {
            resyncs.abort();
            let _ = resyncs.await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), server).await;
    });
    drop(context);
    let fatal_message = match stop.reason() {
        Some(StopReason::Fatal) => Some(
            enforcer
                .fatal()
                .or_else(|| listing_fatal.lock().ok().and_then(|m| m.clone()))
                .unwrap_or_else(|| "the server gave a fatal answer".to_owned()),
        ),
        _ => None,
    };
    enforcer.close();
    drop(enforcer);
    // The recording thread writes its last batch and ends the run; dropping the writer
    // releases the lock.
    let (writer, recorded) = recorder_thread.join();
    drop(writer);
    runtime.shutdown_timeout(Duration::from_secs(1));
    if let Err(e) = recorded {
        return Err(miette!("serve stopped: recording in the state failed: {e}"));
    }
    match fatal_message {
        Some(message) => Err(miette!("serve stopped: {message}")),
        None => {
            status_line(json, "INFO", "timctl serve: stopped.");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// What the resync loop needs.
struct Resyncing {
    context: Arc<resync::Context>,
    adopted: reload::Current,
    pending: Arc<Pending>,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    /// `--resync`.
    every: Duration,
    /// Where a fatal answer to the listing is left for the exit message.
    listing_fatal: Arc<std::sync::Mutex<Option<String>>>,
}

/// The first resync at once, then one every `every` (±10%), and a targeted (or, past its
/// bound, full) one whenever users are marked: by a reload that changed their entries, or by
/// callbacks the full queue could not take.
async fn resync_loop(r: Resyncing, mut stopping: tokio::sync::watch::Receiver<bool>) {
    let Resyncing {
        context,
        adopted,
        pending,
        metrics,
        readiness,
        every,
        listing_fatal,
    } = r;
    let mut scope = Scope::Full;
    let mut first = true;
    loop {
        let started = Instant::now();
        let generation = reload::current(&adopted);
        match resync::resync(&context, &generation, &scope).await {
            Err(resync::Fatal(message)) => {
                if let Ok(mut slot) = listing_fatal.lock() {
                    slot.get_or_insert(message);
                }
                return;
            }
            Ok(done) => {
                let full = scope == Scope::Full;
                if done.unfinished == 0 {
                    if full {
                        metrics.resync_succeeded();
                    }
                    if first {
                        readiness.set_first_resync_done();
                    }
                    tracing::info!(
                        full,
                        users = done.users,
                        deletions = done.deletions,
                        seconds = started.elapsed().as_secs_f64(),
                        "{}",
                        if first {
                            "the first resync is done"
                        } else {
                            "a resync is done"
                        }
                    );
                    first = false;
                } else {
                    tracing::warn!(
                        full,
                        unfinished = done.unfinished,
                        "a resync left deletions unfinished"
                    );
                }
            }
        }
        if context.shutdown.load(Ordering::SeqCst) {
            return;
        }
        // A first resync that failed is tried again soon rather than in six hours.
        let wait = if first {
            Duration::from_secs(30).min(every)
        } else {
            resync::jittered(every)
        };
        let timer = tokio::time::sleep(wait);
        tokio::pin!(timer);
        scope = loop {
            tokio::select! {
                () = &mut timer => break Scope::Full,
                () = async { let _ = stopping.wait_for(|stop| *stop).await; } => return,
                () = pending.marked() => if let Some(marked) = pending.take() {
                    break marked;
                },
            }
        };
        if first {
            scope = Scope::Full;
        }
    }
}

/// What the reload loop needs.
struct Reloading {
    manifests: Vec<PathBuf>,
    every: Duration,
    max_deletes: Option<u64>,
    adopted: reload::Current,
    recorder: Recorder,
    pending: Arc<Pending>,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    hangup: Arc<tokio::sync::Notify>,
    /// The digest of the manifests last refused for --max-deletes: the same content is not
    /// refused (and counted) again at every interval.
    refused: std::sync::Mutex<Option<String>>,
    /// The fingerprint of the files last parsed without a problem, and their digest: an
    /// interval that finds the same bytes skips parsing them.
    last_parsed: std::sync::Mutex<Option<(timctl_core::manifest::Fingerprint, String)>>,
}

/// Every `every` and on SIGHUP: re-reads the manifests' content and adopts a changed, valid
/// set within `--max-deletes`.
async fn reload_loop(r: Reloading) {
    let mut ticks = tokio::time::interval(r.every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = r.hangup.notified() => {
                tracing::info!("SIGHUP: reading the manifests again");
            }
        }
        let outcome = reload_once(&r).await;
        r.metrics.reload(outcome);
    }
}

async fn reload_once(r: &Reloading) -> &'static str {
    let old = reload::current(&r.adopted);
    // Reading a million-entry manifest takes a while: not on the runtime's threads. The files'
    // bytes are compared first: when they are the ones last parsed, their digest is known and
    // parsing them again would only find it again.
    let paths = r.manifests.clone();
    let fingerprint =
        tokio::task::spawn_blocking(move || timctl_core::manifest::fingerprint(&paths))
            .await
            .ok()
            .flatten();
    let known = r.last_parsed.lock().ok().and_then(|last| last.clone());
    if let (Some(now), Some((then, digest))) = (fingerprint, known)
        && now == then
    {
        if digest == old.desired.digest {
            r.readiness.set_manifests_note(None);
            return "unchanged";
        }
        if r.refused.lock().ok().and_then(|d| d.clone()).as_ref() == Some(&digest) {
            return "unchanged";
        }
    }
    let paths = r.manifests.clone();
    let loaded = tokio::task::spawn_blocking(move || timctl_core::manifest::load(&paths)).await;
    let desired = match loaded {
        Ok(Ok(d)) => {
            // The fingerprint was taken before this read: if the files changed in between,
            // the next reload sees other bytes and parses again.
            if let (Some(now), Ok(mut last)) = (fingerprint, r.last_parsed.lock()) {
                *last = Some((now, d.digest.clone()));
            }
            d
        }
        Ok(Err(report)) => {
            // One `file:line:column: message` a problem, without the run's secrets: a log line
            // is read by people and collectors, and a manifest may quote anything.
            let problems: Vec<String> = report
                .problems()
                .iter()
                .map(|p| crate::redact::text(&format!("{}: {}", p.place(), p.message)))
                .collect();
            tracing::error!(
                problems = %problems.join("; "),
                "the manifests are invalid; the ones in force stay"
            );
            r.readiness.set_manifests_note(Some(
                "the last reload was invalid; the previous manifests are enforced".into(),
            ));
            return "invalid";
        }
        Err(e) => {
            tracing::error!(error = %e, "reading the manifests failed; the ones in force stay");
            return "invalid";
        }
    };
    let refused_before = r.refused.lock().ok().and_then(|d| d.clone());
    if desired.digest == old.desired.digest {
        // Back to the manifests in force (after an invalid or refused edit, say).
        r.readiness.set_manifests_note(None);
        return "unchanged";
    }
    if refused_before.as_ref() == Some(&desired.digest) {
        return "unchanged";
    }
    if desired.app != old.desired.app {
        tracing::error!(
            "the manifests now name another app (sdkappid, region or admin); restart serve to \
             change apps. The manifests in force stay"
        );
        r.readiness.set_manifests_note(Some(
            "the last reload names another app; the previous manifests are enforced".into(),
        ));
        return "invalid";
    }
    let index = match ForbiddenIndex::new(&desired) {
        Ok(i) => i,
        Err(e) => {
            tracing::error!(error = %e, "the manifests cannot be indexed; the ones in force stay");
            return "invalid";
        }
    };
    let entries = match r.recorder.entries().await {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "a reload could not read the state; tried again later");
            return "invalid";
        }
    };
    let new = reload::new_deletions(&desired, &entries);
    if let Some(max) = r.max_deletes
        && new as u64 > max
    {
        tracing::error!(
            new_deletions = new,
            max_deletes = max,
            digest = %desired.digest,
            "the new manifests would add more deletions than --max-deletes; they are not \
             adopted and the previous ones stay enforced"
        );
        r.readiness.set_manifests_note(Some(format!(
            "refused: {new} new deletions > --max-deletes {max}; the previous manifests are \
             enforced"
        )));
        if let Ok(mut refused) = r.refused.lock() {
            *refused = Some(desired.digest.clone());
        }
        return "refused";
    }
    let forgets = reload::forgets(&desired, &entries);
    drop(entries);
    let changed = reload::changed_users(&old.desired.entries, &desired.entries);
    let run = RunInfo::start(
        RunCommand::Serve,
        desired.digest.clone(),
        crate::origin::run_origin(),
    );
    tracing::info!(
        run = %run.run_id,
        entries = desired.entries.len(),
        changed_users = changed.len(),
        forgotten = forgets.len(),
        "adopted new manifests"
    );
    r.metrics.set_entries(index.len());
    r.recorder.new_run(run, forgets);
    *r.adopted.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(Adopted { desired, index });
    r.readiness.set_manifests_note(None);
    if let Ok(mut refused) = r.refused.lock() {
        *refused = None;
    }
    r.pending.mark(changed);
    "adopted"
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

/// Waits for SIGTERM or SIGINT (`Some`) or for `stop` (`None`: a fatal answer); a SIGHUP
/// meanwhile wakes `hangup`'s waiters (the manifests and the certificate are read again).
async fn wait_for_signal_or(stop: &Stop, hangup: &tokio::sync::Notify) -> Option<StopReason> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).ok();
    let mut hup = signal(SignalKind::hangup()).ok();
    loop {
        tokio::select! {
            r = tokio::signal::ctrl_c() => return r.ok().map(|()| StopReason::Interrupted),
            Some(()) = async { match term.as_mut() { Some(t) => t.recv().await, None => std::future::pending().await } } => return Some(StopReason::Terminated),
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => hangup.notify_waiters(),
            () = stop.stopped() => return None,
        }
    }
}

/// After the first signal, a second one exits at once (128 + its number); confirmed
/// deletions already sent to the recording thread may then be lost only if it has not written
/// them yet, and the next resync deletes those conversations again.
fn watch_second_signal(runtime: &tokio::runtime::Runtime, first: StopReason, json: bool) {
    runtime.spawn(async move {
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
