//! One stop signal for a run, obeyed by everything that can start a call.
//!
//! A run can have to stop for reasons found in several places: a signal (the binary), a fatal
//! answer (the client), a state that cannot be written or too many failures (the executor), a
//! lost database session (the ledger). Whoever finds the reason calls [`Stop::stop`]; the
//! client and the executor both watch the same [`Stop`], so no queued call goes out after any of
//! them has decided the run is over. Calls already on the wire finish, and their outcomes are
//! still recorded: a deletion the server confirmed is never dropped.
//!
//! The model is kube-runtime's graceful shutdown: one token, cloned into every task, first
//! reason wins.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use tokio::sync::Notify;

/// Why a run stopped before the end of its plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// Ctrl-C (SIGINT).
    Interrupted = 1,
    /// SIGTERM, e.g. a cancelled CI job.
    Terminated = 2,
    /// A fatal answer: every call would fail (bad UserSig, unknown app, untrusted certificate).
    Fatal = 3,
    /// Most recent calls failed the same way.
    TooManyFailures = 4,
    /// The state could not be written (disk full, read-only, lost database session): no call
    /// may be made whose result cannot be recorded.
    RecordFailed = 5,
}

impl StopReason {
    fn from_u8(n: u8) -> Option<Self> {
        match n {
            1 => Some(Self::Interrupted),
            2 => Some(Self::Terminated),
            3 => Some(Self::Fatal),
            4 => Some(Self::TooManyFailures),
            5 => Some(Self::RecordFailed),
            _ => None,
        }
    }
}

/// The run's stop signal. Cheap to clone; every clone is the same signal.
#[derive(Clone, Debug, Default)]
pub struct Stop(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    reason: AtomicU8,
    notify: Notify,
}

impl Stop {
    /// A signal nobody has raised yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the run to stop starting calls. The first reason wins; returns false when the run
    /// had already been asked to stop (for this or another reason).
    pub fn stop(&self, reason: StopReason) -> bool {
        let first = self
            .0
            .reason
            .compare_exchange(0, reason as u8, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok();
        // Wake waiters even when not first: a waiter registered between the store and this
        // call must not sleep forever.
        self.0.notify.notify_waiters();
        first
    }

    /// Why the run was asked to stop, if it was.
    pub fn reason(&self) -> Option<StopReason> {
        StopReason::from_u8(self.0.reason.load(Ordering::SeqCst))
    }

    /// Whether the run was asked to stop.
    pub fn is_stopped(&self) -> bool {
        self.reason().is_some()
    }

    /// Resolves once the run has been asked to stop (at once if it already was).
    pub async fn stopped(&self) {
        loop {
            let notified = self.0.notify.notified();
            tokio::pin!(notified);
            // Register before checking, so a stop between the check and the await is seen.
            notified.as_mut().enable();
            if self.is_stopped() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_reason_wins() {
        let stop = Stop::new();
        assert_eq!(stop.reason(), None);
        assert!(stop.stop(StopReason::RecordFailed));
        assert!(!stop.stop(StopReason::Interrupted));
        assert_eq!(stop.reason(), Some(StopReason::RecordFailed));
        assert!(stop.clone().is_stopped());
    }

    #[tokio::test]
    async fn waiters_wake_on_stop_from_another_clone() {
        let stop = Stop::new();
        let waiter = tokio::spawn({
            let stop = stop.clone();
            async move { stop.stopped().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        stop.stop(StopReason::Fatal);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("the waiter wakes")
            .expect("the waiter does not panic");
        // Already stopped: resolves at once.
        stop.stopped().await;
    }
}
