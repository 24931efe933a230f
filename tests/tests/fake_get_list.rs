//! fake-tim's `v4/recentcontact/get_list` through timctl's client and the generated types:
//! paging with the four cursors, pinned conversations, deletes and new messages changing the
//! lists, users that do not exist, the scripted list faults, and per-endpoint rate limits.

use std::collections::BTreeSet;
use std::time::Duration;

use timctl_core::api::{
    CompleteFlag, Conversation, ListedConversation, RecentContactDelete,
    RecentContactDeleteRequest, RecentContactGetList, RecentContactGetListRequest,
    RecentContactGetListResponse, TopFlag,
};
use timctl_core::client::{BaseUrl, Client, ClientConfig, Credentials, Outcome};
use timctl_core::usersig::SecretKey;
use timctl_tests::{FakeConfig, FakeEndpoint, FakePeer, FakeTim, Fault, ListFault};

const KEY: &str = "get-list-test-secret-key-0123456789";

async fn start(page_size: usize) -> (FakeTim, Client) {
    let fake = FakeTim::start(FakeConfig {
        secret_key: KEY.into(),
        page_size,
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let client = client(&fake, KEY, 3);
    (fake, client)
}

fn client(fake: &FakeTim, key: &str, max_retries: u32) -> Client {
    let mut c = ClientConfig::new(
        BaseUrl::parse(fake.url()).unwrap(),
        1400000001,
        "administrator",
        Credentials::SecretKey(SecretKey::new(key).unwrap()),
    );
    c.min_backoff = Duration::from_millis(1);
    c.max_backoff = Duration::from_millis(20);
    c.max_retries = max_retries;
    Client::new(c).unwrap()
}

fn first_page(user: &str) -> RecentContactGetListRequest {
    RecentContactGetListRequest {
        from_account: user.into(),
        time_stamp: 0,
        start_index: 0,
        top_time_stamp: 0,
        top_start_index: 0,
        assist_flags: 63,
    }
}

/// The request for the page after `page`, all four cursors echoed back.
fn next_page(user: &str, page: &RecentContactGetListResponse) -> RecentContactGetListRequest {
    RecentContactGetListRequest {
        from_account: user.into(),
        time_stamp: page.time_stamp.unwrap(),
        start_index: page.start_index.unwrap(),
        top_time_stamp: page.top_time_stamp.unwrap(),
        top_start_index: page.top_start_index.unwrap(),
        assist_flags: 63,
    }
}

async fn page(client: &Client, req: &RecentContactGetListRequest) -> RecentContactGetListResponse {
    match client.call::<RecentContactGetList>(req).await {
        Outcome::Success(r) => r,
        other => panic!("{other:?}"),
    }
}

fn key(c: &ListedConversation) -> FakePeer {
    match c {
        ListedConversation::OneToOne { to_account } => FakePeer::user(to_account),
        ListedConversation::Group { group_id } => FakePeer::group(group_id),
        ListedConversation::Unknown { tag } => panic!("fake-tim sent Type {tag}"),
    }
}

/// Pages through `user`'s whole list; returns (conversations with their pin, pages).
async fn whole_list(client: &Client, user: &str) -> (Vec<(FakePeer, bool)>, usize) {
    let mut req = first_page(user);
    let mut all = Vec::new();
    for pages in 1..=1000 {
        let p = page(client, &req).await;
        all.extend(p.session_items.iter().map(|i| {
            let pinned = i.top_flag == Some(TopFlag::Pinned);
            (key(&i.conversation), pinned)
        }));
        match p.complete_flag {
            Some(CompleteFlag::Complete) => return (all, pages),
            Some(CompleteFlag::More) => req = next_page(user, &p),
            other => panic!("CompleteFlag {other:?}"),
        }
    }
    panic!("more than 1000 pages");
}

#[tokio::test]
async fn paging_returns_every_conversation_once_pinned_included() {
    let (fake, client) = start(7).await;
    let users: Vec<FakePeer> = (0..40)
        .map(|i| FakePeer::user(format!("u{i:02}")))
        .collect();
    fake.seed_conversations("alice", users.clone(), false);
    fake.seed_conversations("alice", [FakePeer::group("@TGS#pinned")], true);
    fake.seed_conversations("alice", [FakePeer::group("@TGS#last")], false);
    let (all, pages) = whole_list(&client, "alice").await;
    assert_eq!(all.len(), 42, "{all:?}");
    let distinct: BTreeSet<&FakePeer> = all.iter().map(|(p, _)| p).collect();
    assert_eq!(distinct.len(), 42);
    assert!(all.contains(&(FakePeer::group("@TGS#pinned"), true)));
    assert!(all.contains(&(FakePeer::group("@TGS#last"), false)));
    assert_eq!(pages, 6, "42 conversations at 7 a page");
    assert_eq!(fake.pages_for("alice"), pages);
    assert_eq!(fake.get_list_calls().get("alice"), Some(&pages));
    assert_eq!(fake.stats_for(FakeEndpoint::GetList).requests, pages as u64);
    assert_eq!(fake.stats_for(FakeEndpoint::Delete).requests, 0);
    // A user with no conversations: one empty, complete page.
    let (none, pages) = whole_list(&client, "bob").await;
    assert_eq!((none.len(), pages), (0, 1));
}

#[tokio::test]
async fn delete_removes_and_a_new_message_brings_back() {
    let (fake, client) = start(50).await;
    fake.seed_conversations(
        "alice",
        [FakePeer::user("bob"), FakePeer::group("@TGS#g")],
        false,
    );
    for conversation in [
        Conversation::OneToOne {
            to_account: "bob".into(),
        },
        Conversation::Group {
            to_groupid: "@TGS#g".into(),
        },
    ] {
        let req = RecentContactDeleteRequest {
            from_account: "alice".into(),
            conversation,
            clear_ramble: Some(false),
        };
        let outcome = client.call::<RecentContactDelete>(&req).await;
        assert!(matches!(outcome, Outcome::Success(_)), "{outcome:?}");
    }
    assert!(fake.conversations("alice").is_empty());
    assert!(whole_list(&client, "alice").await.0.is_empty());
    fake.send_message("alice", FakePeer::user("bob"));
    assert_eq!(
        whole_list(&client, "alice").await.0,
        [(FakePeer::user("bob"), false)]
    );
}

#[tokio::test]
async fn a_user_that_does_not_exist_is_50001() {
    let (fake, client) = start(50).await;
    fake.update(|c| {
        c.users.insert("ghost".into(), 50001);
    });
    match client
        .call::<RecentContactGetList>(&first_page("ghost"))
        .await
    {
        Outcome::AlreadyAbsent { code: 50001, .. } => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(fake.get_list_calls().get("ghost"), Some(&1));
}

#[tokio::test]
async fn scripted_list_faults() {
    let (fake, client) = start(2).await;
    for user in ["never", "repeat", "zero", "noflag", "broken"] {
        fake.seed_conversations(user, [FakePeer::user("x")], false);
    }
    fake.update(|c| {
        c.list_faults
            .insert("never".into(), ListFault::NeverComplete);
        c.list_faults
            .insert("repeat".into(), ListFault::RepeatCursors);
        c.list_faults
            .insert("zero".into(), ListFault::FailWithCodeZero);
        c.list_faults
            .insert("noflag".into(), ListFault::NoCompleteFlag);
        c.list_faults
            .insert("broken".into(), ListFault::Code(50002));
    });
    // Never complete: every page says More and the cursors keep moving.
    let mut req = first_page("never");
    for _ in 0..5 {
        let p = page(&client, &req).await;
        assert_eq!(p.complete_flag, Some(CompleteFlag::More));
        let next = next_page("never", &p);
        assert_ne!(next, req);
        req = next;
    }
    // Repeat: the first page already echoes the cursors it was sent.
    let p = page(&client, &first_page("repeat")).await;
    assert_eq!(p.complete_flag, Some(CompleteFlag::More));
    assert_eq!(next_page("repeat", &p), first_page("repeat"));
    // FAIL with code 0 is never a success: retried, then given up.
    match client
        .call::<RecentContactGetList>(&first_page("zero"))
        .await
    {
        Outcome::RetriesExhausted { attempts: 4, .. } => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(fake.get_list_calls().get("zero"), Some(&4));
    // No CompleteFlag: a success whose absence the caller sees.
    let p = page(&client, &first_page("noflag")).await;
    assert_eq!(p.complete_flag, None);
    assert_eq!(p.session_items.len(), 1);
    // Always failing.
    match client
        .call::<RecentContactGetList>(&first_page("broken"))
        .await
    {
        Outcome::ItemFailed { code: 50002, .. } => {}
        other => panic!("{other:?}"),
    }
    // Other users are unaffected.
    fake.seed_conversations("fine", [FakePeer::user("y")], false);
    assert_eq!(whole_list(&client, "fine").await.0.len(), 1);
}

#[tokio::test]
async fn injected_faults_are_retried_and_not_counted_as_list_calls() {
    let (fake, few_retries) = start(3).await;
    let peers: Vec<FakePeer> = (0..10).map(|i| FakePeer::group(format!("g{i}"))).collect();
    fake.seed_conversations("alice", peers, false);
    fake.update(|c| {
        c.fault_rate = 0.3;
        c.faults = vec![Fault::Code(50004), Fault::Http502, Fault::Truncate];
    });
    drop(few_retries);
    // Enough retries that a 30% fault rate never exhausts them.
    let (all, pages) = whole_list(&client(&fake, KEY, 40), "alice").await;
    assert_eq!(all.len(), 10);
    assert_eq!(fake.get_list_calls().get("alice"), Some(&pages));
    assert_eq!(pages, fake.pages_for("alice"));
}

#[tokio::test]
async fn each_endpoint_has_its_own_rate_limit() {
    let (fake, client) = start(50).await;
    fake.update(|c| c.limit_per_second = 3);
    for i in 0..3 {
        let _ = page(&client, &first_page(&format!("u{i}"))).await;
        let req = RecentContactDeleteRequest {
            from_account: format!("u{i}"),
            conversation: Conversation::OneToOne {
                to_account: "x".into(),
            },
            clear_ramble: None,
        };
        let outcome = client.call::<RecentContactDelete>(&req).await;
        assert!(matches!(outcome, Outcome::Success(_)), "{outcome:?}");
    }
    // Six calls, three per endpoint: within each endpoint's limit of three.
    assert_eq!(fake.stats().frequency_limited, 0);
    assert_eq!(fake.stats().requests, 6);
    assert_eq!(fake.stats_for(FakeEndpoint::GetList).requests, 3);
}

#[tokio::test]
async fn a_wrong_key_is_fatal_for_get_list_too() {
    let (fake, _) = start(50).await;
    let client = client(&fake, "not-the-key", 0);
    match client
        .call::<RecentContactGetList>(&first_page("alice"))
        .await
    {
        Outcome::Fatal(f) => assert_eq!(f.code, Some(70009)),
        other => panic!("{other:?}"),
    }
    assert!(fake.get_list_calls().is_empty());
    assert_eq!(fake.stats_for(FakeEndpoint::GetList).rejected, 1);
}
