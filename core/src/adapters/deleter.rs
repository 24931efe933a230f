//! [`crate::client::Client`] as the executor's [`apply::Deleter`]: the one place that maps a
//! deletion to a `recentcontact/delete` request and a call's [`Outcome`] to the executor's
//! [`DeletionOutcome`].

use crate::api::{RecentContactDelete, RecentContactDeleteRequest};
use crate::apply::{self, Deletion, DeletionOutcome};
use crate::client::{Client, Lane, Outcome};

/// `ClearRamble` is always sent, 0 or 1, so the server never has to guess. A call the client
/// did not send because the run had stopped comes back as `NotSent`: the executor counts it as
/// not started, and the next run makes it.
impl apply::Deleter for Client {
    async fn delete(&self, d: &Deletion) -> DeletionOutcome {
        delete_in(self, d, Lane::Urgent).await
    }
}

/// The client's deletions in the background lane of its limiter: they start only when no
/// urgent call waits (serve's resync, behind its enforcement).
#[derive(Clone, Debug)]
pub(crate) struct Background(pub(crate) Client);

impl apply::Deleter for Background {
    async fn delete(&self, d: &Deletion) -> DeletionOutcome {
        delete_in(&self.0, d, Lane::Background).await
    }
}

async fn delete_in(client: &Client, d: &Deletion, lane: Lane) -> DeletionOutcome {
    let request = RecentContactDeleteRequest {
        from_account: d.key.from.as_str().to_owned(),
        conversation: d.key.peer.to_api(),
        clear_ramble: Some(d.clear_roaming),
    };
    match client.call_in::<RecentContactDelete>(&request, lane).await {
        Outcome::Success(_) => DeletionOutcome::Deleted,
        Outcome::AlreadyAbsent { code, .. } => DeletionOutcome::AlreadyAbsent { code },
        Outcome::ItemFailed { code, message } => DeletionOutcome::ItemFailed {
            code: Some(code),
            message,
        },
        Outcome::RetriesExhausted { attempts, last } => DeletionOutcome::ItemFailed {
            code: None,
            message: format!(
                "gave up after {}: {last}",
                crate::client::attempts(attempts)
            ),
        },
        Outcome::Fatal(f) => DeletionOutcome::Fatal { message: f.message },
        Outcome::Stopped => DeletionOutcome::NotSent,
    }
}
