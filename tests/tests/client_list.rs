//! `Client::list_conversations` over real loopback HTTP against scripted servers: the paging
//! rules (cursors echoed, AssistFlags 63, stop at CompleteFlag 1), the defensive ones (repeated
//! cursors, no CompleteFlag, a list that never ends: errors, not loops), merging, the caller's
//! filter, and 50001 said apart.

mod client_common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use timctl_core::api::RecentContactGetList;
use timctl_core::client::list::{ASSIST_FLAGS, ListError, Listed, MAX_PAGES};
use timctl_core::client::{BaseUrl, Client, ClientConfig, Credentials};
use timctl_core::ids::{Peer, UserId};
use timctl_core::stop::StopReason;
use timctl_core::usersig::SecretKey;

use client_common::{Scripted, http};

fn client(url: &str) -> Client {
    let mut c = ClientConfig::new(
        BaseUrl::parse(url).unwrap(),
        1400000001,
        "administrator",
        Credentials::SecretKey(SecretKey::new("list-test-key").unwrap()),
    );
    c.min_backoff = Duration::from_millis(1);
    c.max_backoff = Duration::from_millis(10);
    c.max_retries = 2;
    // Far above any quota, so that a thousand pages take no time; pacing is tested elsewhere.
    c.set_rate::<RecentContactGetList>(100_000.0);
    Client::new(c).unwrap()
}

fn alice() -> UserId {
    UserId::new("alice").unwrap()
}

fn reply(body: Value) -> Vec<u8> {
    http("200 OK", "", &body.to_string())
}

fn cursors(body: &Value) -> [i64; 4] {
    ["TimeStamp", "StartIndex", "TopTimeStamp", "TopStartIndex"]
        .map(|k| body[k].as_i64().unwrap_or(-1))
}

fn item(kind: u8, id: &str, pinned: bool) -> Value {
    let mut v = match kind {
        1 => json!({"Type": 1, "To_Account": id, "MsgTime": 1_700_000_000}),
        _ => json!({"Type": 2, "GroupId": id, "MsgTime": 1_700_000_000}),
    };
    v["TopFlag"] = json!(u8::from(pinned));
    v
}

/// Three pages: pinned ones first, a conversation on two pages, an unknown Type, extra fields;
/// every request echoes the previous answer's four cursors with AssistFlags 63, and only what
/// the filter accepts is kept.
#[tokio::test]
async fn a_list_of_several_pages_is_read_to_the_end_and_filtered() {
    let sent = Arc::new(Mutex::new(Vec::new()));
    let log = sent.clone();
    let server = Scripted::start_json(move |n, body| {
        log.lock().unwrap().push(body.clone());
        let mut page: Vec<Value> = match n {
            0 => (0..100).map(|i| item(1, &format!("p{i}"), i < 3)).collect(),
            1 => (100..200)
                .map(|i| item(if i % 2 == 0 { 1 } else { 2 }, &format!("p{i}"), false))
                .chain([item(1, "p50", false)])
                .collect(),
            _ => vec![item(1, "last", false), json!({"Type": 3, "Whatever": "x"})],
        };
        page.last_mut().unwrap()["StandardMark"] = json!("0101");
        reply(json!({
            "ActionStatus": "OK", "ErrorCode": 0, "ErrorInfo": "",
            "SessionItem": page,
            "CompleteFlag": u8::from(n >= 2),
            "TimeStamp": 1_700_000_000 - n as i64, "StartIndex": (n as i64 + 1) * 100,
            "TopTimeStamp": 1_700_000_500 - n as i64, "TopStartIndex": 3,
        }))
    })
    .await;
    let wanted: BTreeSet<Peer> = [
        "user:p1",
        "user:p50",
        "group:@never",
        "user:last",
        "group:p101",
    ]
    .iter()
    .map(|p| p.parse().unwrap())
    .collect();
    let listed = client(&server.url)
        .list_conversations(&alice(), |p| wanted.contains(p))
        .await
        .unwrap();
    let expected: BTreeSet<Peer> = ["user:p1", "user:p50", "user:last", "group:p101"]
        .iter()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(
        listed,
        Listed::Conversations {
            kept: expected,
            pages: 3,
            seen: 203,
            skipped: 1
        }
    );
    let sent = sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 3);
    assert_eq!(cursors(&sent[0]), [0, 0, 0, 0]);
    assert_eq!(cursors(&sent[1]), [1_700_000_000, 100, 1_700_000_500, 3]);
    assert_eq!(cursors(&sent[2]), [1_699_999_999, 200, 1_700_000_499, 3]);
    for body in &sent {
        assert_eq!(body["From_Account"], "alice");
        assert_eq!(body["AssistFlags"], ASSIST_FLAGS);
    }
}

/// A server that answers the cursors it was sent makes an error after two pages, not a loop.
#[tokio::test]
async fn repeated_cursors_are_an_error_not_a_loop() {
    let server = Scripted::start_json(|_, body| {
        let [ts, si, tts, tsi] = cursors(&body);
        let (ts, si, tts, tsi) = if ts == 0 {
            (5, 5, 5, 5)
        } else {
            (ts, si, tts, tsi)
        };
        reply(json!({
            "ActionStatus": "OK", "ErrorCode": 0, "SessionItem": [], "CompleteFlag": 0,
            "TimeStamp": ts, "StartIndex": si, "TopTimeStamp": tts, "TopStartIndex": tsi,
        }))
    })
    .await;
    assert_eq!(
        client(&server.url)
            .list_conversations(&alice(), |_| true)
            .await,
        Err(ListError::RepeatedCursors {
            user: alice(),
            page: 2
        })
    );
    assert_eq!(server.requests(), 2);
}

/// A list that never completes, each page with new cursors, stops after MAX_PAGES pages.
#[tokio::test]
async fn a_list_that_never_completes_stops_after_max_pages() {
    let server = Scripted::start_json(|n, _| {
        reply(json!({
            "ActionStatus": "OK", "ErrorCode": 0, "SessionItem": [item(1, "x", false)],
            "CompleteFlag": 0, "TimeStamp": n + 1, "StartIndex": 0, "TopTimeStamp": 0,
            "TopStartIndex": 0,
        }))
    })
    .await;
    assert_eq!(
        client(&server.url)
            .list_conversations(&alice(), |_| true)
            .await,
        Err(ListError::TooManyPages { user: alice() })
    );
    assert_eq!(server.requests(), MAX_PAGES as usize);
}

/// A success page without CompleteFlag is an error, never "more" and never "complete".
#[tokio::test]
async fn a_page_without_complete_flag_is_an_error() {
    let server = Scripted::start_json(|_, _| {
        reply(json!({
            "ActionStatus": "OK", "ErrorCode": 0, "SessionItem": [item(1, "bob", false)],
            "TimeStamp": 1, "StartIndex": 1, "TopTimeStamp": 1, "TopStartIndex": 1,
        }))
    })
    .await;
    assert_eq!(
        client(&server.url)
            .list_conversations(&alice(), |_| true)
            .await,
        Err(ListError::MissingCompleteFlag {
            user: alice(),
            page: 1
        })
    );
    assert_eq!(server.requests(), 1);
}

/// 50001 says the user does not exist, apart from an empty list; 50002 fails this user only;
/// a fatal answer stops the run.
#[tokio::test]
async fn failures_are_said_apart() {
    let answer = |code: i64| {
        move |_, _| reply(json!({"ActionStatus": "FAIL", "ErrorCode": code, "ErrorInfo": "no"}))
    };
    let missing = Scripted::start_json(answer(50001)).await;
    assert_eq!(
        client(&missing.url)
            .list_conversations(&alice(), |_| true)
            .await,
        Ok(Listed::UserDoesNotExist)
    );
    let empty = Scripted::start_json(|_, _| {
        reply(json!({"ActionStatus": "OK", "ErrorCode": 0, "CompleteFlag": 1}))
    })
    .await;
    assert!(matches!(
        client(&empty.url).list_conversations(&alice(), |_| true).await,
        Ok(Listed::Conversations { kept, pages: 1, seen: 0, .. }) if kept.is_empty()
    ));
    let refused = Scripted::start_json(answer(50002)).await;
    assert!(matches!(
        client(&refused.url)
            .list_conversations(&alice(), |_| true)
            .await,
        Err(ListError::Failed { code: 50002, .. })
    ));
    let fatal = Scripted::start_json(answer(70003)).await;
    let c = client(&fatal.url);
    assert!(matches!(
        c.list_conversations(&alice(), |_| true).await,
        Err(ListError::Fatal(_))
    ));
    assert_eq!(c.stop_signal().reason(), Some(StopReason::Fatal));
    assert_eq!(
        c.list_conversations(&alice(), |_| true).await,
        Err(ListError::Stopped { user: alice() })
    );
    assert_eq!(fatal.requests(), 1);
}
