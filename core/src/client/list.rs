//! One user's whole conversation list, through `v4/recentcontact/get_list`, page by page.
//!
//! The paging rules are the documentation's (start with four zero cursors, send each answer's
//! four cursors back, stop at `CompleteFlag` 1) plus defensive ones, because a server that
//! misbehaves must give an error, never an endless loop: a page that answers the very cursors
//! it (or any earlier page of the same list) was sent, a `CompleteFlag` missing or unknown, a
//! cursor missing on a "more" page, 50001 after the first page, and more than [`MAX_PAGES`]
//! pages are all errors. The cursors are time-based, so a conversation that
//! changes while paging can be seen twice: conversations are merged by peer.
//!
//! Memory stays proportional to what the caller wants, not to the list: the caller's `keep`
//! decides which conversations are kept (e.g. those the manifest names).
//!
//! Official documentation: <https://www.tencentcloud.com/document/product/1047/43087>
//! (English), <https://cloud.tencent.com/document/product/269/62118> (Chinese).

use std::collections::{BTreeSet, HashSet};

use super::{Client, Fatal, Outcome};
use crate::api::{
    CompleteFlag, ListedConversation, RecentContactGetList, RecentContactGetListRequest,
    RecentContactGetListResponse,
};
use crate::ids::{GroupId, Peer, UserId};

/// `AssistFlags` sent with every page: 63, as the newest documentation asks, for the complete
/// list (pinned conversations and conversations without messages included).
pub const ASSIST_FLAGS: i64 = 63;

/// The most pages read for one user before giving up with an error. A real list is a few pages
/// (the server's page is about 100 conversations); a thousand means the server is not making
/// progress.
pub const MAX_PAGES: u32 = 1000;

/// The four paging cursors, as sent in a request and as answered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Cursors {
    /// `TimeStamp`: ordinary conversations.
    pub time_stamp: i64,
    /// `StartIndex`: ordinary conversations.
    pub start_index: i64,
    /// `TopTimeStamp`: pinned conversations.
    pub top_time_stamp: i64,
    /// `TopStartIndex`: pinned conversations.
    pub top_start_index: i64,
}

/// What one user's list held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listed {
    /// The list was read to the end.
    Conversations {
        /// The conversations `keep` accepted, each once.
        kept: BTreeSet<Peer>,
        /// Pages read.
        pages: u32,
        /// Conversations on all pages, before `keep` and merging.
        seen: u64,
        /// Conversations skipped because the server named them in a way timctl cannot use (an
        /// unknown `Type`, an ID that is not a valid ID): none of them can be in a manifest.
        skipped: u64,
    },
    /// 50001 to the first page: the user does not exist, so has no conversations. Said apart
    /// from an empty list, because a UserID that does not exist may be a typo in the manifest.
    /// (50001 to a later page is [`ListError::DoesNotExistAfterFirstPage`]: the first page
    /// showed a list.)
    UserDoesNotExist,
}

/// Why one user's list could not be read to the end.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, miette::Diagnostic)]
pub enum ListError {
    /// A fatal answer: the whole run stops (the client raised the stop signal).
    #[error(transparent)]
    #[diagnostic(transparent)]
    Fatal(Fatal),
    /// The run was stopped before this list was read to the end.
    #[error("the conversation list of {user} was not read to the end: the run was stopped")]
    #[diagnostic(code(timctl::list::stopped))]
    Stopped {
        /// Whose list.
        user: UserId,
    },
    /// An answer that fails this user's list only (e.g. 50002).
    #[error("cannot list the conversations of {user}: {message}")]
    #[diagnostic(
        code(timctl::list::failed),
        help("the server refused this user's list; the other users' lists are read as usual")
    )]
    Failed {
        /// Whose list.
        user: UserId,
        /// The server's code.
        code: i64,
        /// What it means, and the server's ErrorInfo.
        message: String,
    },
    /// A transient failure persisted through every retry.
    #[error("cannot list the conversations of {user}: gave up after {}: {last}", crate::client::attempts(*.attempts))]
    #[diagnostic(
        code(timctl::list::gave_up),
        help("the server or the network kept failing; try again later")
    )]
    GaveUp {
        /// Whose list.
        user: UserId,
        /// How many times the last page was asked for.
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// A page without `CompleteFlag`: whether the list is complete is unknown.
    #[error("page {page} of the conversation list of {user} has no CompleteFlag")]
    #[diagnostic(
        code(timctl::list::missing_complete_flag),
        help(
            "the server's answer does not follow the documented format; the list is treated as unread"
        )
    )]
    MissingCompleteFlag {
        /// Whose list.
        user: UserId,
        /// The page (from 1).
        page: u32,
    },
    /// A `CompleteFlag` other than 0 or 1.
    #[error(
        "page {page} of the conversation list of {user} has CompleteFlag {value}, neither 0 nor 1"
    )]
    #[diagnostic(
        code(timctl::list::unknown_complete_flag),
        help(
            "the server's answer does not follow the documented format; the list is treated as unread"
        )
    )]
    UnknownCompleteFlag {
        /// Whose list.
        user: UserId,
        /// The page (from 1).
        page: u32,
        /// The value.
        value: i64,
    },
    /// A page that says more follow but lacks a cursor to ask for them.
    #[error("page {page} of the conversation list of {user} says more follow but lacks a cursor")]
    #[diagnostic(
        code(timctl::list::missing_cursor),
        help(
            "the server's answer does not follow the documented format; the list is treated as unread"
        )
    )]
    MissingCursor {
        /// Whose list.
        user: UserId,
        /// The page (from 1).
        page: u32,
    },
    /// A page that answers cursors already sent for this list (the very cursors it was sent,
    /// or those of an earlier page: A → B → A): asking again would loop forever.
    #[error(
        "page {page} of the conversation list of {user} answered cursors already sent for this list, so paging loops"
    )]
    #[diagnostic(
        code(timctl::list::repeated_cursors),
        help("the server is not paging; the list is treated as unread")
    )]
    RepeatedCursors {
        /// Whose list.
        user: UserId,
        /// The page (from 1).
        page: u32,
    },
    /// 50001 ("the user does not exist") to a page after the first, which had shown a list
    /// with more to come: the list is unreadable, never "no conversations".
    #[error(
        "page {page} of the conversation list of {user} answered 50001 (the user does not exist), though page 1 showed a list with more to come"
    )]
    #[diagnostic(
        code(timctl::list::vanished),
        help(
            "the user may have been deleted while listing, or the server is misbehaving; the list is treated as unread"
        )
    )]
    DoesNotExistAfterFirstPage {
        /// Whose list.
        user: UserId,
        /// The page (from 1) that answered 50001.
        page: u32,
    },
    /// More than [`MAX_PAGES`] pages.
    #[error("the conversation list of {user} is still not complete after {MAX_PAGES} pages")]
    #[diagnostic(
        code(timctl::list::too_many_pages),
        help(
            "a real list is a few pages; the server is not making progress, so the list is treated as unread"
        )
    )]
    TooManyPages {
        /// Whose list.
        user: UserId,
    },
}

impl ListError {
    /// The way this list failed, without the user or the page: the listing phase stops when
    /// most users' lists fail the same way, as apply stops on a repeating item failure.
    pub fn kind(&self) -> String {
        match self {
            ListError::Fatal(fatal) => format!("fatal: {}", fatal.message),
            ListError::Stopped { .. } => "stopped".to_owned(),
            ListError::Failed { code, .. } => format!("code {code}"),
            ListError::GaveUp { .. } => "no usable answer after every retry".to_owned(),
            ListError::MissingCompleteFlag { .. } => "a page without CompleteFlag".to_owned(),
            ListError::UnknownCompleteFlag { .. } => "an unknown CompleteFlag".to_owned(),
            ListError::MissingCursor { .. } => "a page without its cursors".to_owned(),
            ListError::RepeatedCursors { .. } => "a paging loop".to_owned(),
            ListError::DoesNotExistAfterFirstPage { .. } => "50001 after the first page".to_owned(),
            ListError::TooManyPages { .. } => format!("more than {MAX_PAGES} pages"),
        }
    }
}

/// What a page says about the next one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Completion {
    /// `CompleteFlag` 0.
    More,
    /// `CompleteFlag` 1.
    Complete,
    /// No `CompleteFlag`.
    Missing,
    /// Any other value.
    Unknown(i64),
}

/// The cursors for page `page + 1`, or `None` when page `page` (from 1) was the last. `sent`
/// holds every cursor tuple sent for this list so far, this page's included: an answer naming
/// any of them is a loop (A → A, or A → B → A), never progress. Pure, so every paging rule is
/// tested without a server.
pub(crate) fn next_cursors(
    user: &UserId,
    page: u32,
    sent: &HashSet<Cursors>,
    answered: Option<Cursors>,
    completion: Completion,
) -> Result<Option<Cursors>, ListError> {
    let user = user.clone();
    match completion {
        Completion::Complete => Ok(None),
        Completion::Missing => Err(ListError::MissingCompleteFlag { user, page }),
        Completion::Unknown(value) => Err(ListError::UnknownCompleteFlag { user, page, value }),
        Completion::More => {
            let answered = answered.ok_or(ListError::MissingCursor {
                user: user.clone(),
                page,
            })?;
            if sent.contains(&answered) {
                Err(ListError::RepeatedCursors { user, page })
            } else if page >= MAX_PAGES {
                Err(ListError::TooManyPages { user })
            } else {
                Ok(Some(answered))
            }
        }
    }
}

/// A listed conversation as a [`Peer`], or `None` when timctl cannot name it (an unknown
/// `Type`, an invalid ID): no manifest entry can be such a conversation.
fn peer_of(conversation: &ListedConversation) -> Option<Peer> {
    match conversation {
        ListedConversation::OneToOne { to_account } => {
            UserId::new(to_account.as_str()).ok().map(Peer::User)
        }
        ListedConversation::Group { group_id } => {
            GroupId::new(group_id.as_str()).ok().map(Peer::Group)
        }
        ListedConversation::Unknown { .. } => None,
    }
}

fn answered_cursors(page: &RecentContactGetListResponse) -> Option<Cursors> {
    Some(Cursors {
        time_stamp: page.time_stamp?,
        start_index: page.start_index?,
        top_time_stamp: page.top_time_stamp?,
        top_start_index: page.top_start_index?,
    })
}

fn completion(page: &RecentContactGetListResponse) -> Completion {
    match page.complete_flag {
        None => Completion::Missing,
        Some(CompleteFlag::More) => Completion::More,
        Some(CompleteFlag::Complete) => Completion::Complete,
        Some(CompleteFlag::Unknown(v)) => Completion::Unknown(v),
    }
}

impl Client {
    /// Reads `user`'s whole conversation list, keeping the conversations `keep` accepts. Each
    /// page is one call through the get_list limiter, with the same retry, stop and secret
    /// rules as every call.
    pub async fn list_conversations(
        &self,
        user: &UserId,
        mut keep: impl FnMut(&Peer) -> bool,
    ) -> Result<Listed, ListError> {
        let mut kept = BTreeSet::new();
        let (mut seen, mut skipped) = (0u64, 0u64);
        let mut cursors = Cursors::default();
        // Every cursor tuple sent for this list: at most MAX_PAGES of them, 32 bytes each.
        let mut sent = HashSet::new();
        let mut page = 0u32;
        loop {
            page += 1;
            sent.insert(cursors);
            let request = RecentContactGetListRequest {
                from_account: user.as_str().to_owned(),
                time_stamp: cursors.time_stamp,
                start_index: cursors.start_index,
                top_time_stamp: cursors.top_time_stamp,
                top_start_index: cursors.top_start_index,
                assist_flags: ASSIST_FLAGS,
            };
            let answer = match self.call::<RecentContactGetList>(&request).await {
                Outcome::Success(answer) => answer,
                // Only the first page can say the user does not exist: after a page that showed
                // a list with more to come, 50001 leaves the list unread, never empty.
                Outcome::AlreadyAbsent { .. } if page == 1 => {
                    return Ok(Listed::UserDoesNotExist);
                }
                Outcome::AlreadyAbsent { .. } => {
                    return Err(ListError::DoesNotExistAfterFirstPage {
                        user: user.clone(),
                        page,
                    });
                }
                Outcome::ItemFailed { code, message } => {
                    return Err(ListError::Failed {
                        user: user.clone(),
                        code,
                        message,
                    });
                }
                Outcome::RetriesExhausted { attempts, last } => {
                    return Err(ListError::GaveUp {
                        user: user.clone(),
                        attempts,
                        last,
                    });
                }
                Outcome::Fatal(fatal) => return Err(ListError::Fatal(fatal)),
                Outcome::Stopped => return Err(ListError::Stopped { user: user.clone() }),
            };
            for item in &answer.session_items {
                seen += 1;
                match peer_of(&item.conversation) {
                    Some(peer) => {
                        if !kept.contains(&peer) && keep(&peer) {
                            kept.insert(peer);
                        }
                    }
                    None => skipped += 1,
                }
            }
            match next_cursors(
                user,
                page,
                &sent,
                answered_cursors(&answer),
                completion(&answer),
            )? {
                Some(next) => cursors = next,
                None => {
                    return Ok(Listed::Conversations {
                        kept,
                        pages: page,
                        seen,
                        skipped,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> UserId {
        UserId::new("alice").unwrap()
    }

    fn at(n: i64) -> Cursors {
        Cursors {
            time_stamp: 1_700_000_000 - n,
            start_index: n,
            top_time_stamp: 0,
            top_start_index: 0,
        }
    }

    fn sent(cursors: &[Cursors]) -> HashSet<Cursors> {
        cursors.iter().copied().collect()
    }

    #[test]
    fn complete_ends_and_more_goes_on_with_the_answered_cursors() {
        assert_eq!(
            next_cursors(
                &alice(),
                1,
                &sent(&[at(0)]),
                Some(at(1)),
                Completion::Complete
            ),
            Ok(None)
        );
        // A last page need not carry cursors.
        assert_eq!(
            next_cursors(&alice(), 1, &sent(&[at(0)]), None, Completion::Complete),
            Ok(None)
        );
        assert_eq!(
            next_cursors(&alice(), 1, &sent(&[at(0)]), Some(at(1)), Completion::More),
            Ok(Some(at(1)))
        );
        // Only the pinned cursors moved: still progress.
        let pinned = Cursors {
            top_start_index: 5,
            ..at(1)
        };
        assert_eq!(
            next_cursors(&alice(), 2, &sent(&[at(1)]), Some(pinned), Completion::More),
            Ok(Some(pinned))
        );
    }

    #[test]
    fn a_page_that_makes_no_progress_is_an_error() {
        assert_eq!(
            next_cursors(&alice(), 3, &sent(&[at(2)]), Some(at(2)), Completion::More),
            Err(ListError::RepeatedCursors {
                user: alice(),
                page: 3
            })
        );
        assert_eq!(
            next_cursors(&alice(), 1, &sent(&[at(0)]), None, Completion::More),
            Err(ListError::MissingCursor {
                user: alice(),
                page: 1
            })
        );
    }

    /// Issue 18.7: a cycle through an earlier page's cursors (A → B → A) is a loop at once,
    /// not after a thousand pages.
    #[test]
    fn answering_an_earlier_pages_cursors_is_a_loop() {
        assert_eq!(
            next_cursors(
                &alice(),
                3,
                &sent(&[Cursors::default(), at(1), at(2)]),
                Some(at(1)),
                Completion::More
            ),
            Err(ListError::RepeatedCursors {
                user: alice(),
                page: 3
            })
        );
        assert_eq!(
            next_cursors(
                &alice(),
                3,
                &sent(&[Cursors::default(), at(1), at(2)]),
                Some(at(3)),
                Completion::More
            ),
            Ok(Some(at(3)))
        );
    }

    #[test]
    fn a_missing_or_unknown_complete_flag_is_an_error_never_more() {
        assert_eq!(
            next_cursors(
                &alice(),
                1,
                &sent(&[at(0)]),
                Some(at(1)),
                Completion::Missing
            ),
            Err(ListError::MissingCompleteFlag {
                user: alice(),
                page: 1
            })
        );
        assert_eq!(
            next_cursors(
                &alice(),
                1,
                &sent(&[at(0)]),
                Some(at(1)),
                Completion::Unknown(2)
            ),
            Err(ListError::UnknownCompleteFlag {
                user: alice(),
                page: 1,
                value: 2
            })
        );
    }

    #[test]
    fn paging_stops_after_max_pages() {
        assert!(matches!(
            next_cursors(
                &alice(),
                MAX_PAGES - 1,
                &sent(&[at(0)]),
                Some(at(1)),
                Completion::More
            ),
            Ok(Some(_))
        ));
        assert_eq!(
            next_cursors(
                &alice(),
                MAX_PAGES,
                &sent(&[at(0)]),
                Some(at(1)),
                Completion::More
            ),
            Err(ListError::TooManyPages { user: alice() })
        );
        // The last allowed page may still complete the list.
        assert_eq!(
            next_cursors(
                &alice(),
                MAX_PAGES,
                &sent(&[at(0)]),
                None,
                Completion::Complete
            ),
            Ok(None)
        );
    }

    #[test]
    fn listed_conversations_become_peers_or_are_skipped() {
        assert_eq!(
            peer_of(&ListedConversation::OneToOne {
                to_account: "bob".into()
            }),
            Some("user:bob".parse().unwrap())
        );
        assert_eq!(
            peer_of(&ListedConversation::Group {
                group_id: "@TGS#1".into()
            }),
            Some("group:@TGS#1".parse().unwrap())
        );
        assert_eq!(
            peer_of(&ListedConversation::OneToOne {
                to_account: String::new()
            }),
            None
        );
        assert_eq!(peer_of(&ListedConversation::Unknown { tag: 3 }), None);
    }
}
