//! `timctl serve`: flags, the token and credentials, the listeners in the contract's order,
//! and the wait for a signal. The logic is `timctl_core::serve`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use miette::{Context, IntoDiagnostic, miette};
use timctl_core::api::{Endpoint, RecentContactDelete};
use timctl_core::apply::Deletion;
use timctl_core::callback::{CallbackToken, ForbiddenIndex};
use timctl_core::client::{BaseUrl, Client, ClientConfig};
use timctl_core::ledger::history::EventReason;
use timctl_core::ledger::{Deleted, DetailedDeletion, Ledger, LedgerWriter, RunCommand, RunInfo};
use timctl_core::plan::{self, Action, Filter};
use timctl_core::serve::cidr::Cidr;
use timctl_core::serve::enforcer::{Enforcer, spawn_recorder};
use timctl_core::serve::http::{Callbacks, Readiness, callback_router, ops_router};
use timctl_core::serve::metrics::Metrics;
use timctl_core::stop::{Stop, StopReason};

use crate::args::{Global, parse_duration};
use crate::output::eprintln_lossy;

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
    /// Only these peers may post callbacks (CIDR, repeatable; default: any).
    #[arg(long = "callback-allow", value_name = "CIDR")]
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
    let rate = crate::args::calls_per_second(
        "--rate",
        args.rate,
        "delete",
        RecentContactDelete::CALLS_PER_SECOND,
        false,
    )?;
    if args.queue_capacity == 0 {
        return Err(miette!("--queue-capacity must be at least 1"));
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

    // 2. The manifests, the token and the credentials: a refusal exits 1 before the state.
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
    let index = ForbiddenIndex::new(&desired).into_diagnostic()?;
    metrics.set_entries(index.len());

    // 3. The state, under its writer lock for as long as serve runs.
    let store = global.state_store()?;
    let mut writer =
        store.create_or_open_writer(desired.app.sdkappid, "serve", args.lock_timeout)?;
    // The reconcile operation, as `apply --refresh` runs it: the app checked and the users
    // chosen on the state serve holds, the snapshot its plans are made from.
    let filter = Filter::default();
    let wanted = timctl_core::listing::users_to_list(&desired, &writer, &filter)?;
    let snapshot = writer.snapshot()?;
    let first_resync = plan::from_snapshot(&desired, snapshot.as_ref(), &filter, None)?;
    let run = RunInfo::start(
        RunCommand::Serve,
        desired.digest.clone(),
        crate::origin::run_origin(),
    );
    writer.begin_run(&run)?;
    // Entries no manifest names any more are forgotten, as apply forgets them: serve enforces
    // exactly the manifests.
    let forgets: Vec<_> = first_resync
        .changes
        .iter()
        .filter(|c| c.action == Action::Forget)
        .map(|c| c.key.clone())
        .collect();
    if !forgets.is_empty() {
        writer.forget(&forgets)?;
        tracing::info!(
            forgotten = forgets.len(),
            "forgot entries no manifest names"
        );
    }

    let stop = Stop::new();
    let base_url = BaseUrl::resolve(desired.app.region, global.endpoint.as_deref())?;
    let mut config = ClientConfig::new(
        base_url,
        desired.app.sdkappid,
        desired.app.admin.as_str(),
        credentials,
    );
    config.set_rate::<RecentContactDelete>(rate);
    config.max_retries = args.max_retries;
    config.stop = stop.clone();
    let client = Arc::new(Client::new(config)?);
    let enforcer_client = client.clone();
    let concurrency = ((rate / 4.0).ceil() as usize).max(1);
    let (recorder_tx, recorder) = spawn_recorder(writer, run, stop.clone());
    let resync_tx = recorder_tx.clone();
    let enforcer = runtime.block_on(async {
        Enforcer::new(
            enforcer_client,
            recorder_tx,
            args.settle,
            args.queue_capacity,
            metrics.clone(),
            stop.clone(),
        )
    });

    // 4. The callback listener.
    let callbacks = Arc::new(Callbacks {
        index,
        token,
        sdkappid: desired.app.sdkappid,
        allow: args.callback_allow.clone(),
        enforcer: enforcer.clone(),
        metrics: metrics.clone(),
    });
    let listener = bind(args.listen, "--listen")?;
    let stop_accepting = Arc::new(tokio::sync::Notify::new());
    let server = {
        let router = callback_router(callbacks);
        let stop_accepting = stop_accepting.clone();
        runtime.spawn(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                return;
            };
            let _ = axum::serve(
                listener,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move { stop_accepting.notified().await })
            .await;
        })
    };

    // 5. Ready; 6. the first resync, while callbacks are already enforced.
    readiness.set_ready(true);
    metrics.set_ready(true, true);
    tracing::info!(
        listen = %args.listen,
        ops = %args.ops_listen,
        entries = metrics_entries(&desired),
        "serve is ready"
    );
    eprintln_lossy!(
        "timctl serve: ready on {} (callbacks) and {} (ops); enforcing {} conversations.",
        args.listen,
        args.ops_listen,
        desired.entries.len()
    );
    let shutdown = Arc::new(AtomicBool::new(false));
    // A fatal answer to the resync's listing (the first calls serve makes) stops serve too.
    let listing_fatal: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    let resync = {
        let listing_fatal = listing_fatal.clone();
        let (enforcer, metrics, readiness, shutdown, client, stop) = (
            enforcer.clone(),
            metrics.clone(),
            readiness.clone(),
            shutdown.clone(),
            client.clone(),
            stop.clone(),
        );
        runtime.spawn(async move {
            let started = Instant::now();
            // As `apply --refresh`: every manifest user's list is read, and what is on the
            // server is deleted, whatever the state records (missed callbacks, imported
            // messages, downtime). Should the listing fail, the plan without refresh still
            // deletes what the state does not record.
            let opts = timctl_core::listing::ListOptions::new(concurrency);
            // The listing's future is not `Send` (its per-user closures borrow across awaits),
            // so it runs on a blocking thread that drives it on this runtime.
            let handle = tokio::runtime::Handle::current();
            let (lister, list_stop) = (client.clone(), stop.clone());
            let listed = tokio::task::spawn_blocking(move || {
                handle.block_on(async {
                    timctl_core::listing::list(&wanted, &*lister, &opts, &list_stop, &mut |_| {})
                        .await
                        .map_err(|e| e.to_string())
                })
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
            let plan = match listed {
                // The filter names no user, so planning the snapshot planned above cannot fail.
                Ok((seen, _)) => {
                    plan::from_snapshot(&desired, snapshot.as_ref(), &filter, Some(&seen))
                        .unwrap_or(first_resync)
                }
                Err(e) if stop.reason() == Some(StopReason::Fatal) => {
                    if let Ok(mut slot) = listing_fatal.lock() {
                        slot.get_or_insert(e);
                    }
                    return;
                }
                Err(e) => {
                    tracing::warn!(
                        error = %e,
                        "the first resync could not read the conversation lists; it deletes \
                         what the state does not record"
                    );
                    first_resync
                }
            };
            let deletions: Vec<(Deletion, EventReason)> = plan
                .changes
                .iter()
                .filter(|c| c.action == Action::Delete)
                .map(|c| {
                    (
                        Deletion {
                            key: c.key.clone(),
                            clear_roaming: c.clear_roaming,
                        },
                        EventReason::Plan(c.reason),
                    )
                })
                .collect();
            // What the lists showed absent is recorded so (no call), as apply --refresh does.
            for c in plan.changes.iter().filter(|c| c.action == Action::Record) {
                let _ = resync_tx.send(DetailedDeletion {
                    deleted: Deleted {
                        key: c.key.clone(),
                        clear_roaming: c.clear_roaming,
                        deleted_at: jiff::Timestamp::now(),
                    },
                    reason: EventReason::Plan(c.reason),
                    trigger: None,
                    latency_ms: None,
                });
            }
            let n = deletions.len();
            let unfinished = enforcer
                .resync(deletions, resync_tx, concurrency, &shutdown)
                .await;
            if unfinished == 0 {
                metrics.resync_succeeded();
                readiness.set_first_resync_done();
                tracing::info!(
                    deletions = n,
                    seconds = started.elapsed().as_secs_f64(),
                    "the first resync is done"
                );
            } else {
                tracing::warn!(unfinished, "the first resync left deletions unfinished");
            }
        })
    };

    // Until a signal, or a stop (a fatal answer, a state write failing).
    let signal = runtime.block_on(wait_for_signal_or(&stop));
    if let Some(reason) = signal {
        watch_second_signal(&runtime, reason);
        eprintln_lossy!(
            "Stopping: no new callbacks; deletions in flight finish and are recorded (at most \
             {} s). Send the signal again to exit at once.",
            args.shutdown_timeout.as_secs()
        );
    }
    readiness.set_ready(false);
    metrics.set_ready(false, true);
    shutdown.store(true, Ordering::SeqCst);
    stop_accepting.notify_one();
    runtime.block_on(async {
        let deadline = tokio::time::Instant::now() + args.shutdown_timeout;
        let idle = enforcer.wait_idle(args.shutdown_timeout).await;
        if !idle {
            tracing::warn!("deletions still in flight at the shutdown timeout were abandoned");
            stop.stop(StopReason::Terminated);
        }
        // The resync holds a sender of the recording thread: a resync still running at the
        // timeout is dropped, so that the thread can write its last batch and end.
        let mut resync = resync;
        if tokio::time::timeout_at(deadline, &mut resync)
            .await
            .is_err()
        {
            resync.abort();
            let _ = resync.await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), server).await;
    });
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
    let (writer, recorded) = recorder.join();
    drop(writer);
    runtime.shutdown_timeout(Duration::from_secs(1));
    if let Err(e) = recorded {
        return Err(miette!("serve stopped: recording in the state failed: {e}"));
    }
    match fatal_message {
        Some(message) => Err(miette!("serve stopped: {message}")),
        None => {
            eprintln_lossy!("timctl serve: stopped.");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn metrics_entries(desired: &timctl_core::desired::DesiredState) -> usize {
    desired.entries.len()
}

/// Waits for SIGTERM or SIGINT (`Some`) or for `stop` (`None`: a fatal answer).
async fn wait_for_signal_or(stop: &Stop) -> Option<StopReason> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.ok().map(|()| StopReason::Interrupted),
        Some(()) = async { match term.as_mut() { Some(t) => t.recv().await, None => std::future::pending().await } } => Some(StopReason::Terminated),
        () = stop.stopped() => None,
    }
}

/// After the first signal, a second one exits at once (128 + its number); confirmed
/// deletions already sent to the recording thread may then be lost only if it has not written
/// them yet, and the next resync deletes those conversations again.
fn watch_second_signal(runtime: &tokio::runtime::Runtime, first: StopReason) {
    runtime.spawn(async move {
        let _ = first;
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let code = tokio::select! {
            _ = tokio::signal::ctrl_c() => 130,
            Some(()) = async { match term.as_mut() { Some(t) => t.recv().await, None => std::future::pending().await } } => 143,
        };
        eprintln_lossy!("A second signal: exiting now.");
        std::process::exit(code);
    });
}
