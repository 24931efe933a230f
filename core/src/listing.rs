//! The listing phase of `--refresh`: read each planned user's conversation list once, users
//! concurrently, and turn what was seen into [`Observations`] for [`crate::plan::make`].
//!
//! It runs in two steps, as `plan --refresh`, `apply --refresh` and serve's resync all run it:
//! [`users_to_list`] checks the state's app and chooses the users (nothing called, so a
//! refusal comes before credentials are even read), then [`list`] lists them through a
//! [`Lister`] (the client, through `adapters`) under the run's [`Stop`], reporting
//! through [`ListingEvent`]s.
//!
//! The calls themselves (get_list, its rate limiter, retries and paging) are behind the
//! [`Lister`] trait, so this module is only the orchestration: which users, how many at once,
//! progress, and stopping at once on a fatal answer, a signal, or most users' lists failing the
//! same way. Listing records nothing, so a stop does not wait for the lists in flight: they are
//! dropped, requests and all. Memory follows the manifest: a lister keeps only the
//! conversations the manifest names (`wanted`), never a whole list.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;

use crate::apply::executor::FailurePattern;
use crate::desired::DesiredState;
use crate::ids::{Peer, UserId};
use crate::ledger::{Ledger, LedgerError};
use crate::plan::Filter;
use crate::plan::observed::{self, Observation, Observations};
use crate::stop::{Stop, StopReason};

/// What listing one user's whole conversation list came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListOutcome {
    /// Every page was read, to `CompleteFlag` 1: these are the `wanted` conversations in it.
    Listed {
        /// The wanted conversations that are in the list.
        present: BTreeSet<Peer>,
        /// How many pages (get_list calls that succeeded) it took.
        pages: u32,
    },
    /// get_list answered 50001: the user was never imported.
    DoesNotExist,
    /// The list could not be read after retries (a FAIL answer, a page without `CompleteFlag`,
    /// repeated cursors, too many pages).
    Unreadable {
        /// Why, naming the user.
        why: String,
        /// The way it failed, without the user or the page ("code 50002", "a paging loop"):
        /// what the "most lists fail the same way" stop compares.
        kind: String,
    },
    /// An answer that dooms every call (bad UserSig, unknown app, admin required): the message.
    Fatal(String),
    /// The run was stopped before this user's first call.
    NotSent,
}

/// Lists users' conversation lists: the client's paging helper over get_list.
pub trait Lister: Send + Sync {
    /// Lists `user`'s whole conversation list, keeping only the conversations in `wanted`.
    fn list(
        &self,
        user: &UserId,
        wanted: &BTreeSet<Peer>,
    ) -> impl Future<Output = ListOutcome> + Send;

    /// Calls made so far (pages asked for, retries included), for progress while long lists
    /// page; `None` when the lister does not count them (progress then counts the pages of the
    /// lists already read).
    fn calls_so_far(&self) -> Option<u64> {
        None
    }
}

/// How the listing phase runs.
#[derive(Clone, Debug)]
pub struct ListOptions {
    /// Users listed at once. The rate limiter, not this, sets the pace; this only needs to be
    /// high enough to keep the limiter busy at the server's latency.
    pub concurrency: usize,
    /// How often a progress event is sent.
    pub progress_interval: Duration,
    /// How many recent users' results the "most lists fail the same way" check looks at.
    pub failure_window: usize,
    /// Stop listing when this many of them could not be read the same way.
    pub failure_threshold: usize,
}

impl ListOptions {
    /// The listing phase's rules with `concurrency` users listed at once; the failure rule is
    /// apply's (45 of the last 50).
    pub fn new(concurrency: usize) -> Self {
        Self {
            concurrency,
            progress_interval: Duration::from_secs(2),
            failure_window: 50,
            failure_threshold: 45,
        }
    }
}

impl Default for ListOptions {
    fn default() -> Self {
        Self::new(50)
    }
}

/// What the listing phase reports as it goes; `--json` prints one per line.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ListingEvent {
    /// Before the first call.
    Listing {
        /// Users to list.
        users: usize,
    },
    /// One user's list was read (or found unreadable, or the user does not exist).
    Listed {
        /// The user.
        from: String,
        /// `listed`, `does_not_exist` or `unreadable`.
        outcome: &'static str,
        /// Of the manifest's conversations of this user, how many are in the list.
        present: usize,
        /// get_list pages read.
        pages: u32,
        /// Why the list could not be read, for `unreadable`.
        #[serde(skip_serializing_if = "Option::is_none")]
        why: Option<String>,
    },
    /// Every few seconds while listing.
    ListProgress {
        /// Users done.
        done: usize,
        /// Users to list.
        total: usize,
        /// Users whose lists are being read right now.
        in_flight: usize,
        /// get_list calls per second so far, counting pages as they come (retries included).
        calls_per_second: f64,
        /// Seconds left at the pace so far: `None` before the first user is done, and once no
        /// user is left waiting (the lists still paging can be any length).
        eta_seconds: Option<f64>,
    },
}

/// Why the listing phase did not finish.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, miette::Diagnostic)]
pub enum ListingError {
    /// An answer that dooms every call: nothing more was called.
    #[error("{message}")]
    #[diagnostic(
        code(timctl::refresh::fatal),
        help("nothing was planned or changed; fix the credentials or the app and run it again")
    )]
    Fatal {
        /// The one message.
        message: String,
    },
    /// Most recent users' lists could not be read the same way: listing stopped rather than
    /// fail the same way for every user.
    #[error("{message}")]
    #[diagnostic(
        code(timctl::refresh::too_many_failures),
        help("nothing was planned or changed; fix the cause and run it again")
    )]
    TooManyFailures {
        /// What kept failing, and how often.
        message: String,
    },
    /// Stopped (Ctrl-C, SIGTERM) before every user was listed.
    #[error(
        "stopped while listing the conversation lists ({reason:?}); nothing was planned or changed"
    )]
    #[diagnostic(code(timctl::refresh::stopped))]
    Stopped {
        /// Why.
        reason: StopReason,
    },
}

/// How the listing went, besides the observations.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ListSummary {
    /// Users listed.
    pub users: usize,
    /// get_list pages read.
    pub pages: u64,
    /// Seconds from the first call to the last answer.
    pub elapsed_seconds: f64,
}

/// The users a refresh lists, each once, with the conversations of theirs the manifest names.
pub type Wanted = BTreeMap<UserId, BTreeSet<Peer>>;

/// The listing phase's first step, which calls nothing: the state is checked against the
/// manifests' app (a refresh against another app's state would read lists for nothing), then
/// the users are chosen: the manifests' users within the filter
/// ([`observed::wanted`]). Users only in the state are forgotten whatever the server says, so
/// they are not listed.
pub fn users_to_list(
    desired: &DesiredState,
    state: &dyn Ledger,
    filter: &Filter,
) -> Result<Wanted, LedgerError> {
    state.check_app(desired.app.sdkappid)?;
    Ok(observed::wanted(desired, filter))
}

/// Lists every user of `wanted` once (at most `opts.concurrency` at a time) and returns what
/// was seen. A fatal answer stops the run at once (`stop` is raised, so no queued user is
/// called) and is the error; so is a stop from outside, and most recent users' lists failing
/// the same way. Once stopped, the lists in flight are dropped rather than waited for: listing
/// records nothing, and a list that never answers must not hold a Ctrl-C up.
pub async fn list<L: Lister>(
    wanted: &Wanted,
    lister: &L,
    opts: &ListOptions,
    stop: &Stop,
    on_event: &mut (dyn FnMut(&ListingEvent) + Send),
) -> Result<(Observations, ListSummary), ListingError> {
    let total = wanted.len();
    on_event(&ListingEvent::Listing { users: total });
    let started = Instant::now();
    let mut users = BTreeMap::new();
    let mut summary = ListSummary::default();
    let mut fatal: Option<String> = None;
    let mut too_many: Option<String> = None;
    let mut pattern: FailurePattern<String> =
        FailurePattern::new(opts.failure_window, opts.failure_threshold);
    let begun = AtomicUsize::new(0);

    let mut results = futures::stream::iter(wanted.iter())
        .map(|(user, peers)| {
            let begun = &begun;
            async move {
                // Checked as each user is about to start, so a stop takes effect at once.
                if stop.is_stopped() {
                    return (user, ListOutcome::NotSent);
                }
                begun.fetch_add(1, Ordering::Relaxed);
                (user, lister.list(user, peers).await)
            }
        })
        .buffer_unordered(opts.concurrency.max(1));

    let mut ticker = tokio::time::interval(opts.progress_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        // A fatal answer raises the stop before its outcome arrives here: wait for that
        // outcome (it comes at once), for its message. Any other stop ends listing now.
        let awaiting_fatal_message = stop.reason() == Some(StopReason::Fatal) && fatal.is_none();
        if stop.is_stopped() && !awaiting_fatal_message {
            break;
        }
        let next = tokio::select! {
            biased;
            next = results.next() => next,
            () = stop.stopped(), if !stop.is_stopped() => continue,
            _ = ticker.tick() => {
                let secs = started.elapsed().as_secs_f64();
                let done = summary.users;
                let begun = begun.load(Ordering::Relaxed);
                let calls = lister.calls_so_far().unwrap_or(summary.pages);
                on_event(&ListingEvent::ListProgress {
                    done,
                    total,
                    in_flight: begun.saturating_sub(done),
                    calls_per_second: if secs > 0.0 { calls as f64 / secs } else { 0.0 },
                    eta_seconds: (done > 0 && begun < total)
                        .then(|| secs / done as f64 * (total - done) as f64),
                });
                continue;
            }
        };
        let Some((user, outcome)) = next else {
            break;
        };
        let (observation, pages, failure) = match outcome {
            ListOutcome::Listed { present, pages } => (Observation::Listed(present), pages, None),
            ListOutcome::DoesNotExist => (Observation::DoesNotExist, 1, None),
            ListOutcome::Unreadable { why, kind } => (Observation::Unreadable(why), 0, Some(kind)),
            ListOutcome::Fatal(message) => {
                // The client may have raised the stop itself before answering: the first
                // fatal message is the one to show either way.
                stop.stop(StopReason::Fatal);
                fatal.get_or_insert(message);
                continue;
            }
            ListOutcome::NotSent => continue,
        };
        summary.users += 1;
        summary.pages += u64::from(pages);
        on_event(&ListingEvent::Listed {
            from: user.to_string(),
            outcome: match &observation {
                Observation::Listed(_) => "listed",
                Observation::DoesNotExist => "does_not_exist",
                Observation::Unreadable(_) => "unreadable",
            },
            present: match &observation {
                Observation::Listed(p) => p.len(),
                _ => 0,
            },
            pages,
            why: match &observation {
                Observation::Unreadable(why) => Some(why.clone()),
                _ => None,
            },
        });
        users.insert(user.clone(), observation);
        if let Some((kind, n)) = pattern.push(failure)
            && stop.stop(StopReason::TooManyFailures)
        {
            too_many = Some(format!(
                "{n} of the last {} users' conversation lists could not be read ({kind}); \
                 stopped listing rather than fail the same way for every user",
                opts.failure_window
            ));
        }
    }
    // Whatever is still in flight is dropped here: its requests are cancelled.
    drop(results);
    summary.elapsed_seconds = started.elapsed().as_secs_f64();
    if let Some(message) = fatal {
        return Err(ListingError::Fatal { message });
    }
    if let Some(message) = too_many {
        return Err(ListingError::TooManyFailures { message });
    }
    if let Some(reason) = stop.reason() {
        return Err(ListingError::Stopped { reason });
    }
    // Whole seconds: the plan says when it looked, not a nanosecond-precise instant.
    let at = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second())
        .unwrap_or_else(|_| jiff::Timestamp::now());
    Ok((Observations { at, users }, summary))
}

#[cfg(test)]
mod tests;
