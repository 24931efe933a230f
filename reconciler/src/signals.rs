//! The one watcher of Ctrl-C and SIGTERM for the commands that call the API (`apply`, and the
//! listing phase of `--refresh`): the first signal raises the run's [`Stop`], a second one
//! exits at once. (`serve` waits for its signal itself: it drains rather than stops.)

use std::time::Duration;

use timctl_core::stop::{Stop, StopReason};

use crate::output::eprintln_lossy;

/// What the first signal leads to, besides the stop.
pub(crate) struct OnSignal {
    /// Said on stderr once the stop is raised.
    pub(crate) stopping: String,
    /// How long the run may take to finish after the stop before it exits anyway, and what it
    /// says then; `None` when nothing is waited for.
    pub(crate) grace: Option<(Duration, String)>,
}

/// Watches for Ctrl-C and SIGTERM on the current runtime: the first raises `stop` and says
/// `on.stopping` (and, with a grace, exits by itself at its end); a second exits at once,
/// 130 or 143.
pub(crate) fn watch(stop: Stop, on: OnSignal) {
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!("cannot watch SIGTERM: {e}");
                    None
                }
            };
        loop {
            let reason = tokio::select! {
                r = tokio::signal::ctrl_c() => match r {
                    Ok(()) => StopReason::Interrupted,
                    Err(_) => return,
                },
                Some(()) = async { match term.as_mut() { Some(t) => t.recv().await, None => std::future::pending().await } } => StopReason::Terminated,
            };
            let code = exit_code(reason);
            if !stop.stop(reason) {
                eprintln_lossy!(
                    "{} again: exiting now.",
                    if reason == StopReason::Terminated {
                        "Terminated"
                    } else {
                        "Interrupted"
                    }
                );
                std::process::exit(code);
            }
            eprintln_lossy!("{}", on.stopping);
            if let Some((grace, message)) = on.grace.clone() {
                // A thread of its own: the runtime's threads may be the ones held up.
                std::thread::spawn(move || {
                    std::thread::sleep(grace);
                    eprintln_lossy!("{message}");
                    std::process::exit(code);
                });
            }
        }
    });
}

/// 130 after Ctrl-C, 143 after SIGTERM (128 + the signal's number).
pub(crate) fn exit_code(reason: StopReason) -> i32 {
    match reason {
        StopReason::Terminated => 143,
        _ => 130,
    }
}
