//! The rate limit end to end: a thousand calls through the client to fake-tim over loopback,
//! with every send time the client's limiter admitted captured from its `sending` trace
//! events. One test in this binary, because it installs the process's subscriber.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use timctl_core::api::{Conversation, RecentContactDelete, RecentContactDeleteRequest};
use timctl_core::client::{BaseUrl, Client, ClientConfig, Credentials, Outcome, default_rate};
use timctl_core::usersig::SecretKey;
use timctl_tests::{ConversationKey, FakeConfig, FakeTim};

const KEY: &str = "send-times-test-secret-key-0123456789";

fn one_to_one(from: &str, to: &str, clear: bool) -> RecentContactDeleteRequest {
    RecentContactDeleteRequest {
        from_account: from.into(),
        conversation: Conversation::OneToOne {
            to_account: to.into(),
        },
        clear_ramble: Some(clear),
    }
}

/// Collects the `sent_at_us` of the client's "sending" events: the instants its limiter
/// admitted each request at, one event per request on the wire.
#[derive(Clone, Default)]
struct SendTimes(Arc<Mutex<Vec<u64>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for SendTimes {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct SentAt(Option<u64>);
        impl tracing::field::Visit for SentAt {
            fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
                if field.name() == "sent_at_us" {
                    self.0 = Some(value);
                }
            }
            fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
        }
        let mut sent_at = SentAt(None);
        event.record(&mut sent_at);
        if let Some(t) = sent_at.0 {
            self.0.lock().unwrap().push(t);
        }
    }
}

/// A thousand calls at the default rate, 64 in flight as apply runs them: each succeeds, each
/// conversation is deleted exactly once, every request the server saw is one the client's
/// limiter admitted, and those admissions never number more than the rate in any second.
///
/// What the server counts per second is not asserted: arrivals are the client's starts plus
/// delivery jitter, which a loaded machine makes tens of milliseconds (201–216 arrivals were
/// seen in one second while the client kept to 197), so a server-side 60007 is possible here
/// and is then retried like any other. The client's guarantee is checked on its own send
/// times, here and, with callers waking late on virtual time, by
/// `limiter::tests::granted_sends_stay_within_the_limit_even_when_callers_wake_late`; the
/// absence of 60007 at the default rate is measured by the `client_rate` benchmark.
#[tokio::test]
async fn a_thousand_concurrent_calls_are_each_made_once_within_the_rate() {
    use tracing_subscriber::layer::SubscriberExt as _;
    // Global, and set before any event: `tracing` caches per call site whether anyone listens,
    // so a thread-local subscriber can miss events once another thread has looked first. This
    // binary holds this one test for that reason.
    let sent = SendTimes::default();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(sent.clone()))
        .expect("the only subscriber in this test binary");
    let fake = FakeTim::start(FakeConfig {
        secret_key: KEY.into(),
        latency: (Duration::from_millis(20), Duration::from_millis(80)),
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let mut config = ClientConfig::new(
        BaseUrl::parse(fake.url()).unwrap(),
        1400000001,
        "administrator",
        Credentials::SecretKey(SecretKey::new(KEY).unwrap()),
    );
    // Short backoff keeps a retried 60007 quick; the policy is the same.
    config.min_backoff = Duration::from_millis(5);
    config.max_backoff = Duration::from_millis(50);
    let client = Client::new(config).unwrap();
    // Up to 64 in flight, as apply runs them.
    let sem = Arc::new(tokio::sync::Semaphore::new(64));
    let request = |i: usize| {
        one_to_one(
            &format!("user{}", i % 50),
            &format!("peer{i}"),
            i.is_multiple_of(2),
        )
    };
    let tasks: Vec<_> = (0..1000)
        .map(|i| {
            let client = client.clone();
            let sem = sem.clone();
            tokio::spawn(async move {
                let _permit = sem.acquire_owned().await.unwrap();
                client
                    .call::<RecentContactDelete>(&request(i))
                    .await
                    .map(|r| r.error_code)
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), Outcome::Success(0));
    }
    let deletions = fake.deletions();
    assert_eq!(deletions.len(), 1000);
    for i in 0..1000_usize {
        let key = ConversationKey {
            from: format!("user{}", i % 50),
            kind: 1,
            peer: format!("peer{i}"),
            clear_ramble: Some(u8::from(i.is_multiple_of(2))),
        };
        assert_eq!(deletions.get(&key), Some(&1), "{key:?}");
    }
    let s = fake.stats();
    let c = client.stats();
    // The only answers that were not processed are frequency limits, each retried once more.
    assert_eq!(s.requests, 1000 + s.frequency_limited, "{s:?}");
    assert_eq!((s.rejected, s.faults), (0, 0), "{s:?}");
    assert_eq!(c.attempts, s.requests, "{c:?} {s:?}");
    assert_eq!(c.retries, s.frequency_limited, "{c:?} {s:?}");
    assert_eq!(c.frequency_limited, s.frequency_limited, "{c:?} {s:?}");

    let mut sent = sent.0.lock().unwrap().clone();
    assert_eq!(sent.len() as u64, s.requests, "one admission per request");
    sent.sort_unstable();
    let limit = default_rate(200).ceil() as usize;
    for (i, start) in sent.iter().enumerate() {
        let in_a_second = sent[i..]
            .iter()
            .take_while(|t| **t < start + 1_000_000)
            .count();
        assert!(
            in_a_second <= limit,
            "{in_a_second} sends in the second from {start} µs"
        );
    }
}
