//! The API client against fake-tim over loopback: success, each error class, retries, the
//! fatal stop, and UserSig renewal. (The rate limit under load: `client_send_times.rs`.)

use std::time::Duration;

use timctl_core::api::{Conversation, RecentContactDelete, RecentContactDeleteRequest};
use timctl_core::client::{BaseUrl, Client, ClientConfig, Credentials, Outcome};
use timctl_core::usersig::{self, SecretKey};
use timctl_tests::{ConversationKey, FakeConfig, FakeTim, Fault};

const KEY: &str = "client-test-secret-key-0123456789";

fn fake_config() -> FakeConfig {
    FakeConfig {
        secret_key: KEY.into(),
        ..FakeConfig::default()
    }
}

fn config(fake: &FakeTim) -> ClientConfig {
    let mut c = ClientConfig::new(
        BaseUrl::parse(fake.url()).unwrap(),
        1400000001,
        "administrator",
        Credentials::SecretKey(SecretKey::new(KEY).unwrap()),
    );
    // Short backoff keeps the tests quick; the policy is the same.
    c.min_backoff = Duration::from_millis(5);
    c.max_backoff = Duration::from_millis(50);
    c.request_timeout = Duration::from_secs(5);
    c
}

fn one_to_one(from: &str, to: &str, clear: Option<bool>) -> RecentContactDeleteRequest {
    RecentContactDeleteRequest {
        from_account: from.into(),
        conversation: Conversation::OneToOne {
            to_account: to.into(),
        },
        clear_ramble: clear,
    }
}

async fn call(client: &Client, req: &RecentContactDeleteRequest) -> Outcome<()> {
    client.call::<RecentContactDelete>(req).await.map(|r| {
        assert_eq!((r.action_status.as_str(), r.error_code), ("OK", 0));
    })
}

#[tokio::test]
async fn success_sends_the_documented_request() {
    let fake = FakeTim::start(fake_config()).await.unwrap();
    let client = Client::new(config(&fake)).unwrap();
    assert_eq!(
        call(&client, &one_to_one("alice", "bob", Some(true))).await,
        Outcome::Success(())
    );
    assert_eq!(
        call(&client, &one_to_one("alice", "carol", None)).await,
        Outcome::Success(())
    );
    let group = RecentContactDeleteRequest {
        from_account: "alice".into(),
        conversation: Conversation::Group {
            to_groupid: "@TGS#2C5SZEAEF".into(),
        },
        clear_ramble: Some(false),
    };
    assert_eq!(call(&client, &group).await, Outcome::Success(()));
    let key = |kind, peer: &str, clear| ConversationKey {
        from: "alice".into(),
        kind,
        peer: peer.into(),
        clear_ramble: clear,
    };
    let deletions = fake.deletions();
    assert_eq!(deletions.get(&key(1, "bob", Some(1))), Some(&1));
    assert_eq!(deletions.get(&key(1, "carol", None)), Some(&1));
    assert_eq!(deletions.get(&key(2, "@TGS#2C5SZEAEF", Some(0))), Some(&1));
    assert_eq!(fake.stats().rejected, 0);
    assert_eq!(client.stats().attempts, 3);
    // Identifiers with characters that need percent-encoding reach the server intact.
    fake.update(|c| c.admin = "admin with space+plus&".into());
    let mut cfg = config(&fake);
    cfg.admin = "admin with space+plus&".into();
    let client = Client::new(cfg).unwrap();
    assert_eq!(
        call(&client, &one_to_one("a b", "c+d", None)).await,
        Outcome::Success(())
    );
}

#[tokio::test]
async fn item_and_already_absent_answers_return_at_once() {
    let fake = FakeTim::start(fake_config()).await.unwrap();
    fake.update(|c| {
        c.users.insert("ghost".into(), 50001);
        c.users.insert("broken".into(), 50002);
    });
    let client = Client::new(config(&fake)).unwrap();
    match call(&client, &one_to_one("ghost", "bob", None)).await {
        Outcome::AlreadyAbsent {
            code: 50001,
            message,
        } => assert!(message.contains("50001"), "{message}"),
        other => panic!("{other:?}"),
    }
    match call(&client, &one_to_one("broken", "bob", None)).await {
        Outcome::ItemFailed {
            code: 50002,
            message,
        } => assert!(message.contains("scripted answer"), "{message}"),
        other => panic!("{other:?}"),
    }
    // Neither was retried, and neither stopped the client.
    assert_eq!(client.stats().attempts, 2);
    assert_eq!(client.stats().retries, 0);
    assert_eq!(
        call(&client, &one_to_one("alice", "bob", None)).await,
        Outcome::Success(())
    );
}

#[tokio::test]
async fn fatal_answers_stop_the_client_with_one_clear_message() {
    let fake = FakeTim::start(fake_config()).await.unwrap();
    // A key the server does not know: 70009.
    let mut cfg = config(&fake);
    cfg.credentials = Credentials::SecretKey(SecretKey::new("not-the-app-key").unwrap());
    let client = Client::new(cfg).unwrap();
    match call(&client, &one_to_one("alice", "bob", None)).await {
        Outcome::Fatal(f) => {
            assert_eq!(f.code, Some(70009));
            assert!(
                f.message
                    .contains("check TIMCTL_SECRET_KEY and app.sdkappid"),
                "{}",
                f.message
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        client.stop_signal().reason(),
        Some(timctl_core::stop::StopReason::Fatal)
    );
    assert_eq!(client.fatal().unwrap().code, Some(70009));
    assert_eq!(
        call(&client, &one_to_one("alice", "carol", None)).await,
        Outcome::Stopped
    );
    assert_eq!(client.stats().attempts, 1);

    // Every call failing with 70003; 50003 when the identifier is not the admin.
    for (code, check) in [
        (70003, "check TIMCTL_SECRET_KEY"),
        (60006, "check app.sdkappid"),
        (50003, "app.admin"),
    ] {
        fake.update(|c| c.fail_all = Some(code));
        let client = Client::new(config(&fake)).unwrap();
        match call(&client, &one_to_one("alice", "bob", None)).await {
            Outcome::Fatal(f) => {
                assert_eq!(f.code, Some(code));
                assert!(f.message.contains(check), "{}", f.message);
            }
            other => panic!("{code}: {other:?}"),
        }
    }
    fake.update(|c| c.fail_all = None);

    // HTTP 401/403 from a gateway, and a wrong path (404), are fatal too.
    for status in [401u16, 403] {
        fake.update(|c| {
            c.fault_rate = 1.0;
            c.faults = vec![Fault::Status(status)];
        });
        let client = Client::new(config(&fake)).unwrap();
        match call(&client, &one_to_one("alice", "bob", None)).await {
            Outcome::Fatal(f) => assert!(
                f.code.is_none() && f.message.contains(&status.to_string()),
                "{f:?}"
            ),
            other => panic!("{status}: {other:?}"),
        }
    }
    fake.update(|c| c.fault_rate = 0.0);
    let mut cfg = config(&fake);
    cfg.base_url = BaseUrl::parse(&format!("{}gateway/", fake.url())).unwrap();
    let client = Client::new(cfg).unwrap();
    match call(&client, &one_to_one("alice", "bob", None)).await {
        Outcome::Fatal(f) => assert!(
            f.message.contains("404") && f.message.contains("--endpoint"),
            "{f:?}"
        ),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn retries_turn_transient_faults_into_success() {
    let fake = FakeTim::start(fake_config()).await.unwrap();
    fake.update(|c| {
        c.fault_rate = 0.5;
        c.faults = vec![
            Fault::Code(50004),
            Fault::Code(50005),
            Fault::Code(70500),
            Fault::Code(60007),
            Fault::Http502,
            Fault::Status(429),
            Fault::Status(503),
            Fault::Drop,
            Fault::Truncate,
        ];
    });
    let mut cfg = config(&fake);
    cfg.max_retries = 20;
    let client = Client::new(cfg).unwrap();
    let calls = (0..60).map(|i| {
        let client = client.clone();
        async move { call(&client, &one_to_one("alice", &format!("peer{i}"), None)).await }
    });
    let outcomes = futures_join_all(calls).await;
    assert!(
        outcomes.iter().all(|o| *o == Outcome::Success(())),
        "{outcomes:?}"
    );
    let stats = client.stats();
    assert!(fake.stats().faults > 10, "{:?}", fake.stats());
    assert_eq!(
        stats.retries,
        fake.stats().faults,
        "one retry per injected fault"
    );
    assert!(stats.frequency_limited > 0, "{stats:?}");
    // Faults are injected before processing, so each conversation was deleted exactly once.
    assert_eq!(fake.deletions().len(), 60);
    assert!(fake.deletions().values().all(|n| *n == 1));
}

#[tokio::test]
async fn retries_are_bounded() {
    let fake = FakeTim::start(fake_config()).await.unwrap();
    fake.update(|c| {
        c.fault_rate = 1.0;
        c.faults = vec![Fault::Http502];
    });
    let mut cfg = config(&fake);
    cfg.max_retries = 2;
    let client = Client::new(cfg).unwrap();
    match call(&client, &one_to_one("alice", "bob", None)).await {
        Outcome::RetriesExhausted { attempts: 3, last } => assert!(last.contains("502"), "{last}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(fake.stats().requests, 3);
    // Not fatal: the client goes on.
    assert!(!client.stop_signal().is_stopped());
}

#[tokio::test]
async fn a_fatal_answer_stops_all_in_flight_work() {
    let fake = FakeTim::start(fake_config()).await.unwrap();
    fake.update(|c| {
        c.latency = (Duration::from_millis(100), Duration::from_millis(100));
        c.fail_all = Some(70003);
    });
    let client = Client::new(config(&fake)).unwrap();
    let started = std::time::Instant::now();
    let tasks: Vec<_> = (0..500)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                call(&client, &one_to_one("alice", &format!("p{i}"), None)).await
            })
        })
        .collect();
    let mut fatal = 0;
    let mut stopped = 0;
    for t in tasks {
        match t.await.unwrap() {
            Outcome::Fatal(_) => fatal += 1,
            Outcome::Stopped => stopped += 1,
            other => panic!("{other:?}"),
        }
    }
    // At 197 calls/s only the ~20 calls started before the first answer (100 ms) reached the
    // server; the other ~480 never went out.
    let requests = fake.stats().requests;
    assert!(requests < 60, "{requests} requests went out");
    assert_eq!(fatal + stopped, 500);
    assert!(stopped > 440, "{stopped} stopped");
    assert_eq!(
        fatal as u64, requests,
        "every call on the wire reports its real answer"
    );
    // Without the stop, 500 calls at 197/s would take 2.5 s.
    eprintln!("all 500 calls returned after {:?}", started.elapsed());
}

#[tokio::test]
async fn an_expired_self_made_usersig_is_renewed_once() {
    let fake = FakeTim::start(fake_config()).await.unwrap();
    let client = Client::new(config(&fake)).unwrap();
    let made = unix_now();
    // The server now treats every UserSig made up to now as expired; wait for the clock to
    // tick so the renewed one is newer.
    fake.update(|c| c.expire_usersigs_made_before = Some(made + 1));
    while unix_now() <= made {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        call(&client, &one_to_one("alice", "bob", None)).await,
        Outcome::Success(())
    );
    assert_eq!(client.stats().renewals, 1);
    assert_eq!(client.stats().attempts, 2);

    // A server that calls even the fresh one expired: fatal, pointing at the clock.
    fake.update(|c| c.expire_usersigs_made_before = Some(u64::MAX));
    let client = Client::new(config(&fake)).unwrap();
    match call(&client, &one_to_one("alice", "bob", None)).await {
        Outcome::Fatal(f) => assert!(
            f.code == Some(70001) && f.message.contains("clock"),
            "{f:?}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(client.stats().renewals, 1);

    // A UserSig given as is cannot be renewed: fatal at once, saying what to do.
    let mut cfg = config(&fake);
    let key = SecretKey::new(KEY).unwrap();
    cfg.credentials = Credentials::UserSig(usersig::make(
        1400000001,
        "administrator",
        &key,
        unix_now(),
        3600,
    ));
    let client = Client::new(cfg).unwrap();
    match call(&client, &one_to_one("alice", "bob", None)).await {
        Outcome::Fatal(f) => assert!(f.message.contains("TIMCTL_USERSIG"), "{f:?}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(client.stats().attempts, 1);
}

#[tokio::test]
async fn a_ready_usersig_is_used_as_given() {
    let fake = FakeTim::start(fake_config()).await.unwrap();
    let key = SecretKey::new(KEY).unwrap();
    let mut cfg = config(&fake);
    cfg.credentials = Credentials::UserSig(usersig::make(
        1400000001,
        "administrator",
        &key,
        unix_now(),
        3600,
    ));
    let client = Client::new(cfg).unwrap();
    assert_eq!(
        call(&client, &one_to_one("alice", "bob", None)).await,
        Outcome::Success(())
    );
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn futures_join_all<F>(fs: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = fs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

/// Issue 11.1: an answer `ActionStatus: FAIL` with `ErrorCode: 0` was counted as a deletion.
/// It is a transient failure: retried, and never a success.
#[tokio::test]
async fn a_fail_with_code_zero_is_retried_never_a_success() {
    let fake = FakeTim::start(fake_config()).await.unwrap();
    fake.update(|c| {
        c.fault_rate = 1.0;
        c.faults = vec![Fault::FailWithCodeZero];
    });
    let mut cfg = config(&fake);
    cfg.max_retries = 2;
    let client = Client::new(cfg).unwrap();
    match call(&client, &one_to_one("alice", "bob", None)).await {
        Outcome::RetriesExhausted { attempts: 3, last } => {
            assert!(last.contains("injected FAIL with code 0"), "{last}");
        }
        other => panic!("{other:?}"),
    }
    // Once the server answers OK, the same call succeeds.
    fake.update(|c| c.fault_rate = 0.0);
    assert_eq!(
        call(&client, &one_to_one("alice", "bob", None)).await,
        Outcome::Success(())
    );
    assert_eq!(fake.deletions().len(), 1);
}
