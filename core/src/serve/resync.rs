//! A resync: `apply --refresh`'s work for the adopted manifests (all users, or some), while
//! callbacks go on being enforced. It lists the users' conversations, deletes what is there
//! (whatever the state records: missed callbacks, imported messages, downtime), records what
//! is absent, and makes its deletions in the delete limiter's background lane.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::adapters::deleter::Background;
use crate::apply::Deletion;
use crate::client::Client;
use crate::ledger::history::EventReason;
use crate::ledger::{Deleted, DetailedDeletion};
use crate::plan::{self, Action, Filter};
use crate::stop::{Stop, StopReason};

use super::enforcer::{Enforcer, Recorder};
use super::reload::{Adopted, Scope};

/// What a resync works with: serve's one client, queue and recording thread.
pub struct Context {
    /// The client (its delete limiter shared with enforcement).
    pub client: Arc<Client>,
    /// The enforcement queue; the resync's deletions go through its counters and fatal stop.
    pub enforcer: Enforcer<Arc<Client>>,
    /// The recording thread.
    pub recorder: Recorder,
    /// The run's stop signal.
    pub stop: Stop,
    /// Raised at shutdown: no new deletion starts.
    pub shutdown: Arc<AtomicBool>,
    /// Users listed, and deletions made, at once.
    pub concurrency: usize,
}

/// What a resync did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Done {
    /// Users whose lists were read.
    pub users: usize,
    /// Deletions it asked for.
    pub deletions: usize,
    /// Deletions that failed or were not made (0: the resync succeeded).
    pub unfinished: usize,
    /// Whether the lists could not be read (the plan without refresh was used instead).
    pub unlisted: bool,
}

/// A fatal answer to the listing: serve must stop.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Fatal(pub String);

/// Resyncs `scope` of `adopted`.
pub async fn resync(ctx: &Context, adopted: &Arc<Adopted>, scope: &Scope) -> Result<Done, Fatal> {
    let desired = &adopted.desired;
    let filter = Filter {
        users: match scope {
            Scope::Full => Default::default(),
            Scope::Users(users) => users.clone(),
        },
        ..Filter::default()
    };
    let entries = match ctx.recorder.entries().await {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "a resync could not read the state; it is skipped");
            return Ok(Done {
                unfinished: 1,
                ..Done::default()
            });
        }
    };
    let wanted = plan::observed::wanted(desired, &filter);
    let users = wanted.len();
    let opts = crate::listing::ListOptions::new(ctx.concurrency);
    // The listing's future is not `Send` (its per-user closures borrow across awaits), so it
    // runs on a blocking thread that drives it on this runtime.
    let handle = tokio::runtime::Handle::current();
    let (lister, list_stop) = (ctx.client.clone(), ctx.stop.clone());
    let listed = tokio::task::spawn_blocking(move || {
        handle.block_on(async {
            crate::listing::list(&wanted, &*lister, &opts, &list_stop, &mut |_| {})
                .await
                .map_err(|e| e.to_string())
        })
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    let mut unlisted = false;
    let plan = match listed {
        Ok((seen, _)) => plan::observed::diff(desired, None, &entries, &filter, &seen),
        Err(e) if ctx.stop.reason() == Some(StopReason::Fatal) => return Err(Fatal(e)),
        Err(e) => {
            tracing::warn!(
                error = %e,
                "a resync could not read the conversation lists; it deletes what the state \
                 does not record"
            );
            unlisted = true;
            plan::diff(desired, None, &entries, &filter)
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
        ctx.recorder.record(DetailedDeletion {
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
    let background = Background((*ctx.client).clone());
    let unfinished = ctx
        .enforcer
        .resync(
            &background,
            deletions,
            &ctx.recorder,
            ctx.concurrency,
            &ctx.shutdown,
        )
        .await;
    Ok(Done {
        users,
        deletions: n,
        unfinished: unfinished + usize::from(unlisted),
        unlisted,
    })
}

/// The wait before the next periodic resync: `every` ±10%, so that replicas and restarts
/// spread out.
pub fn jittered(every: std::time::Duration) -> std::time::Duration {
    every.mul_f64(0.9 + 0.2 * rand::random::<f64>())
}
