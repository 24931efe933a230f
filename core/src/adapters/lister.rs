//! [`Lister`] over the real client: [`Client::list_conversations`] (get_list, page by page, under
//! get_list's own rate limiter, with the client's paging guards), keeping only the wanted
//! conversations, its answers mapped onto the listing phase's outcomes.

use std::collections::BTreeSet;

use crate::client::Client;
use crate::client::list::{ListError, Listed};
use crate::ids::{Peer, UserId};
use crate::listing::{ListOutcome, Lister};

impl Lister for Client {
    async fn list(&self, user: &UserId, wanted: &BTreeSet<Peer>) -> ListOutcome {
        match self
            .list_conversations(user, |peer| wanted.contains(peer))
            .await
        {
            Ok(Listed::Conversations { kept, pages, .. }) => ListOutcome::Listed {
                present: kept,
                pages,
            },
            Ok(Listed::UserDoesNotExist) => ListOutcome::DoesNotExist,
            Err(ListError::Fatal(fatal)) => ListOutcome::Fatal(fatal.message),
            Err(ListError::Stopped { .. }) => ListOutcome::NotSent,
            // Every other error leaves this user's list unread; its message says why.
            Err(other) => ListOutcome::Unreadable {
                why: other.to_string(),
                kind: other.kind(),
            },
        }
    }

    fn calls_so_far(&self) -> Option<u64> {
        Some(self.stats().attempts)
    }
}
