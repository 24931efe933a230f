//! [`Lister`] over the real client: pages through one user's list with get_list
//! (https://www.tencentcloud.com/document/product/1047/43087), under get_list's own rate
//! limiter, with the client's retries and fatal stop.
//!
//! The paging is defensive, because the documentation leaves gaps: every page must carry
//! `CompleteFlag` (a missing one is an error, never "more"), the four cursors are sent back as
//! they came, a page that repeats the cursors it was sent is an error (no progress), and so is
//! a list longer than [`MAX_PAGES`] pages. Only the conversations in `wanted` are kept, so a
//! conversation seen twice across pages (cursors are time-based) is simply kept once.

use std::collections::BTreeSet;

use super::{ListOutcome, Lister};
use crate::api::{
    CompleteFlag, ListedConversation, RecentContactGetList, RecentContactGetListRequest,
};
use crate::client::{Client, Outcome};
use crate::ids::{Peer, PeerKind, UserId};

/// The most pages read for one user before the list counts as unreadable. A list holds at most
/// 500 conversations (100 by default), so a real one is a few pages; a thousand means a server
/// that never completes.
pub const MAX_PAGES: u32 = 1000;

/// `AssistFlags` as the newest documentation asks: "always 63", for complete conversation data
/// (pinned conversations, conversations without messages, pinned ones paged too).
pub const ASSIST_FLAGS: i64 = 63;

/// The conversation an item names, in the manifest's terms; `None` for a kind timctl does not
/// manage or an ID no manifest could hold.
fn peer_of(conversation: &ListedConversation) -> Option<Peer> {
    match conversation {
        ListedConversation::OneToOne { to_account } => {
            Peer::from_parts(PeerKind::User, to_account.clone()).ok()
        }
        ListedConversation::Group { group_id } => {
            Peer::from_parts(PeerKind::Group, group_id.clone()).ok()
        }
        _ => None,
    }
}

impl Lister for Client {
    async fn list(&self, user: &UserId, wanted: &BTreeSet<Peer>) -> ListOutcome {
        let mut request = RecentContactGetListRequest {
            from_account: user.as_str().into(),
            time_stamp: 0,
            start_index: 0,
            top_time_stamp: 0,
            top_start_index: 0,
            assist_flags: ASSIST_FLAGS,
        };
        let mut present = BTreeSet::new();
        let mut pages = 0;
        loop {
            if pages >= MAX_PAGES {
                return ListOutcome::Unreadable(format!(
                    "the list did not complete in {MAX_PAGES} pages"
                ));
            }
            let page = match self.call::<RecentContactGetList>(&request).await {
                Outcome::Success(page) => page,
                Outcome::AlreadyAbsent { .. } => return ListOutcome::DoesNotExist,
                Outcome::ItemFailed { code, message } => {
                    return ListOutcome::Unreadable(format!("get_list failed ({code}): {message}"));
                }
                Outcome::RetriesExhausted { attempts, last } => {
                    return ListOutcome::Unreadable(format!(
                        "get_list failed {attempts} times: {last}"
                    ));
                }
                Outcome::Fatal(fatal) => return ListOutcome::Fatal(fatal.message),
                Outcome::Stopped => return ListOutcome::NotSent,
            };
            pages += 1;
            present.extend(
                page.session_items
                    .iter()
                    .filter_map(|item| peer_of(&item.conversation))
                    .filter(|peer| wanted.contains(peer)),
            );
            match page.complete_flag {
                Some(CompleteFlag::Complete) => return ListOutcome::Listed { present, pages },
                Some(CompleteFlag::More) => {}
                Some(other) => {
                    return ListOutcome::Unreadable(format!(
                        "page {pages} has CompleteFlag {}, which is neither 0 nor 1",
                        other.value()
                    ));
                }
                None => {
                    return ListOutcome::Unreadable(format!("page {pages} has no CompleteFlag"));
                }
            }
            let (Some(ts), Some(si), Some(tts), Some(tsi)) = (
                page.time_stamp,
                page.start_index,
                page.top_time_stamp,
                page.top_start_index,
            ) else {
                return ListOutcome::Unreadable(format!(
                    "page {pages} asks for more but lacks its cursors"
                ));
            };
            let sent = (
                request.time_stamp,
                request.start_index,
                request.top_time_stamp,
                request.top_start_index,
            );
            if (ts, si, tts, tsi) == sent {
                return ListOutcome::Unreadable(format!(
                    "page {pages} repeats the cursors it was sent: the server makes no progress"
                ));
            }
            request.time_stamp = ts;
            request.start_index = si;
            request.top_time_stamp = tts;
            request.top_start_index = tsi;
        }
    }
}
