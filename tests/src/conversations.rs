//! fake-tim's per-user conversation lists and the paging of `v4/recentcontact/get_list`.
//!
//! The documentation gives the cursors (TimeStamp and StartIndex for ordinary conversations,
//! TopTimeStamp and TopStartIndex for pinned ones) but not what they mean. fake-tim reads them
//! as time-based, which is what the documentation implies: each list is ordered by MsgTime
//! (oldest first), TimeStamp is the MsgTime of the last conversation returned and StartIndex
//! how many conversations of that MsgTime have been returned. A conversation that gets a new
//! message while a client pages moves to the end of its list and is seen again, as the
//! documentation warns it may be.
//!
//! A page holds at most `page_size` conversations: pinned ones first (when AssistFlags bit 0
//! asks for them), then ordinary ones.

use std::collections::HashMap;

/// A conversation's other side, as get_list names it: `Type` 1 with `To_Account`, or `Type` 2
/// with `GroupId`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FakePeer {
    /// A one-to-one conversation with this UserID.
    User(String),
    /// A group conversation with this group ID.
    Group(String),
}

impl FakePeer {
    /// A one-to-one conversation.
    pub fn user(id: impl Into<String>) -> Self {
        FakePeer::User(id.into())
    }

    /// A group conversation.
    pub fn group(id: impl Into<String>) -> Self {
        FakePeer::Group(id.into())
    }

    /// The wire `Type`: 1 or 2.
    pub fn kind(&self) -> u8 {
        match self {
            FakePeer::User(_) => 1,
            FakePeer::Group(_) => 2,
        }
    }

    /// The UserID or group ID.
    pub fn id(&self) -> &str {
        match self {
            FakePeer::User(id) | FakePeer::Group(id) => id,
        }
    }

    /// Parses `user:ID` or `group:ID`, the seed file's spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s.split_once(':') {
            Some(("user", id)) if !id.is_empty() => Some(FakePeer::user(id)),
            Some(("group", id)) if !id.is_empty() => Some(FakePeer::group(id)),
            _ => None,
        }
    }
}

/// One conversation of a user's list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeConversation {
    /// The other side.
    pub peer: FakePeer,
    /// The time of its last message (Unix seconds, from fake-tim's own clock).
    pub msg_time: i64,
    /// Whether it is pinned.
    pub pinned: bool,
}

/// The four cursors, as sent or answered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cursors {
    /// `TimeStamp`.
    pub time_stamp: i64,
    /// `StartIndex`.
    pub start_index: i64,
    /// `TopTimeStamp`.
    pub top_time_stamp: i64,
    /// `TopStartIndex`.
    pub top_start_index: i64,
}

/// One page of a list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Page {
    pub(crate) items: Vec<FakeConversation>,
    pub(crate) next: Cursors,
    pub(crate) complete: bool,
}

/// fake-tim's clock for MsgTime starts here (2025-01-01) and moves one second per message, so
/// that every message is newer than the one before.
const CLOCK_START: i64 = 1_735_689_600;

/// Every user's list.
#[derive(Debug, Default)]
pub(crate) struct Lists {
    users: HashMap<String, Vec<FakeConversation>>,
    clock: i64,
}

impl Lists {
    fn tick(&mut self) -> i64 {
        self.clock += 1;
        CLOCK_START + self.clock
    }

    /// A new message in `peer`'s conversation in `user`'s list: it is (back) at the end of the
    /// list with a new MsgTime. A pinned conversation stays pinned; `pin` pins it.
    pub(crate) fn message(&mut self, user: &str, peer: FakePeer, pin: bool) {
        let msg_time = self.tick();
        let list = self.users.entry(user.to_owned()).or_default();
        let pinned = match list.iter().position(|c| c.peer == peer) {
            Some(i) => list.remove(i).pinned || pin,
            None => pin,
        };
        list.push(FakeConversation {
            peer,
            msg_time,
            pinned,
        });
    }

    /// Removes a conversation, as recentcontact/delete does; true when it was there.
    pub(crate) fn remove(&mut self, user: &str, peer: &FakePeer) -> bool {
        let Some(list) = self.users.get_mut(user) else {
            return false;
        };
        let before = list.len();
        list.retain(|c| &c.peer != peer);
        before != list.len()
    }

    /// `user`'s list, oldest first.
    pub(crate) fn list(&self, user: &str) -> Vec<FakeConversation> {
        self.users.get(user).cloned().unwrap_or_default()
    }

    /// One page of `user`'s list from `cursors`.
    pub(crate) fn page(
        &self,
        user: &str,
        cursors: Cursors,
        include_pinned: bool,
        page_size: usize,
    ) -> Page {
        let list = self.users.get(user).map_or(&[][..], Vec::as_slice);
        let sorted = |pinned: bool| {
            let mut v: Vec<&FakeConversation> =
                list.iter().filter(|c| c.pinned == pinned).collect();
            v.sort_by(|a, b| (a.msg_time, &a.peer).cmp(&(b.msg_time, &b.peer)));
            v
        };
        let page_size = page_size.max(1);
        let mut next = cursors;
        let mut items = Vec::new();
        let mut pinned_left = false;
        if include_pinned {
            let pinned = sorted(true);
            let (taken, cursor, left) = take(
                &pinned,
                (cursors.top_time_stamp, cursors.top_start_index),
                page_size,
            );
            (next.top_time_stamp, next.top_start_index) = cursor;
            pinned_left = left;
            items.extend(taken);
        }
        let ordinary = sorted(false);
        let (taken, cursor, ordinary_left) = take(
            &ordinary,
            (cursors.time_stamp, cursors.start_index),
            page_size - items.len(),
        );
        (next.time_stamp, next.start_index) = cursor;
        items.extend(taken);
        Page {
            items: items.into_iter().cloned().collect(),
            next,
            complete: !pinned_left && !ordinary_left,
        }
    }

    /// How many pages one full pass over `user`'s list takes (at least one).
    pub(crate) fn pages(&self, user: &str, include_pinned: bool, page_size: usize) -> usize {
        let n = self.users.get(user).map_or(0, |l| {
            l.iter().filter(|c| include_pinned || !c.pinned).count()
        });
        n.div_ceil(page_size.max(1)).max(1)
    }
}

/// Up to `n` conversations of `sorted` after the cursor `(time, index)`, the cursor after them,
/// and whether any are left.
fn take<'a>(
    sorted: &[&'a FakeConversation],
    (time, index): (i64, i64),
    n: usize,
) -> (Vec<&'a FakeConversation>, (i64, i64), bool) {
    let group_start = sorted.partition_point(|c| c.msg_time < time);
    let group_end = sorted.partition_point(|c| c.msg_time <= time);
    let skip = usize::try_from(index.max(0)).unwrap_or(usize::MAX);
    let start = group_start.saturating_add(skip).min(group_end);
    let end = start.saturating_add(n).min(sorted.len());
    let taken = sorted[start..end].to_vec();
    let cursor = match taken.last() {
        None => (time, index),
        Some(last) => {
            let first_of_time = sorted.partition_point(|c| c.msg_time < last.msg_time);
            let rank = end - first_of_time;
            (last.msg_time, i64::try_from(rank).unwrap_or(i64::MAX))
        }
    };
    (taken, cursor, end < sorted.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(page: &Page) -> Vec<&str> {
        page.items.iter().map(|c| c.peer.id()).collect()
    }

    #[test]
    fn pages_walk_pinned_then_ordinary_without_gaps_or_repeats() {
        let mut lists = Lists::default();
        for i in 0..7 {
            lists.message("a", FakePeer::user(format!("u{i}")), false);
        }
        lists.message("a", FakePeer::group("g"), true);
        let mut cursors = Cursors::default();
        let mut seen = Vec::new();
        let mut pages = 0;
        loop {
            let page = lists.page("a", cursors, true, 3);
            pages += 1;
            seen.extend(ids(&page).into_iter().map(str::to_owned));
            assert_ne!(page.next, cursors, "a page must move the cursors");
            cursors = page.next;
            if page.complete {
                break;
            }
        }
        assert_eq!(pages, 3);
        assert_eq!(pages, lists.pages("a", true, 3));
        assert_eq!(seen, ["g", "u0", "u1", "u2", "u3", "u4", "u5", "u6"]);
        // Without AssistFlags bit 0, pinned conversations are left out.
        let page = lists.page("a", Cursors::default(), false, 100);
        assert!(!ids(&page).contains(&"g"));
        assert!(page.complete);
    }

    #[test]
    fn a_new_message_moves_a_conversation_to_the_end_and_delete_removes_it() {
        let mut lists = Lists::default();
        for id in ["x", "y", "z"] {
            lists.message("a", FakePeer::user(id), false);
        }
        let first = lists.page("a", Cursors::default(), true, 2);
        assert_eq!(ids(&first), ["x", "y"]);
        // x gets a new message while the client pages: it is seen again on the next page.
        lists.message("a", FakePeer::user("x"), false);
        let second = lists.page("a", first.next, true, 2);
        assert_eq!(ids(&second), ["z", "x"]);
        assert!(second.complete);
        assert!(lists.remove("a", &FakePeer::user("x")));
        assert!(!lists.remove("a", &FakePeer::user("x")));
        assert_eq!(lists.list("a").len(), 2);
        // An empty or unknown list is one complete, empty page that echoes the cursors.
        let empty = lists.page("nobody", Cursors::default(), true, 2);
        assert!(empty.complete && empty.items.is_empty());
        assert_eq!(empty.next, Cursors::default());
    }

    #[test]
    fn equal_times_are_split_by_the_index_cursor() {
        let c = |id: &str| FakeConversation {
            peer: FakePeer::user(id),
            msg_time: 5,
            pinned: false,
        };
        let all = [c("a"), c("b"), c("c")];
        let sorted: Vec<&FakeConversation> = all.iter().collect();
        let (first, cursor, left) = take(&sorted, (0, 0), 2);
        assert_eq!((first.len(), cursor, left), (2, (5, 2), true));
        let (rest, cursor, left) = take(&sorted, cursor, 2);
        assert_eq!(rest[0].peer, FakePeer::user("c"));
        assert_eq!((cursor, left), ((5, 3), false));
    }
}
