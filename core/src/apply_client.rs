//! The executor's port to the network: [`crate::client::Client`] as an [`apply::Deleter`].
//!
//! The client is generic over endpoints and knows nothing of plans; the executor knows nothing
//! of HTTP. This is the one place that maps a deletion to a `recentcontact/delete` request and
//! a call's [`Outcome`] to the executor's [`CallOutcome`].

use crate::api::{RecentContactDelete, RecentContactDeleteRequest};
use crate::apply::{self, CallOutcome, Deletion};
use crate::client::{Client, Outcome};

/// `ClearRamble` is always sent, 0 or 1, so the server never has to guess. A call the client
/// did not send because the run had stopped comes back as `NotSent`: the executor counts it as
/// not started, and the next run makes it.
impl apply::Deleter for Client {
    async fn delete(&self, d: &Deletion) -> CallOutcome {
        let request = RecentContactDeleteRequest {
            from_account: d.key.from.as_str().to_owned(),
            conversation: d.key.peer.to_api(),
            clear_ramble: Some(d.clear_roaming),
        };
        match self.call::<RecentContactDelete>(&request).await {
            Outcome::Success(_) => CallOutcome::Deleted,
            Outcome::AlreadyAbsent { code, .. } => CallOutcome::AlreadyAbsent { code },
            Outcome::ItemFailed { code, message } => CallOutcome::ItemFailed {
                code: Some(code),
                message,
            },
            Outcome::RetriesExhausted { attempts, last } => CallOutcome::ItemFailed {
                code: None,
                message: format!("gave up after {attempts} attempts: {last}"),
            },
            Outcome::Fatal(f) => CallOutcome::Fatal { message: f.message },
            Outcome::Stopped => CallOutcome::NotSent,
        }
    }
}
