//! The client as the apply executor's `Deleter`, against fake-tim: the real executor, the real
//! client, real HTTP over loopback; only the recorder is an in-memory list.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use timctl_core::apply::{self, Deletion, ExecOptions, Executed, Execution, RecordError, Recorder};
use timctl_core::client::{BaseUrl, Client, ClientConfig, Credentials};
use timctl_core::ids::ConversationKey as Key;
use timctl_core::ledger::Deleted;
use timctl_core::stop::{Stop, StopReason};
use timctl_core::usersig::SecretKey;
use timctl_tests::{ConversationKey, FakeConfig, FakeTim, Fault};

const KEY: &str = "deleter-test-key";

#[derive(Clone, Default)]
struct Memory(Arc<Mutex<Vec<Deleted>>>);

impl Recorder for Memory {
    fn record(&mut self, confirmed: &[Deleted]) -> Result<(), RecordError> {
        self.0.lock().unwrap().extend_from_slice(confirmed);
        Ok(())
    }
    fn forget(&mut self, _: &[Key]) -> Result<(), RecordError> {
        Ok(())
    }
}

fn deletions(n: usize) -> Vec<Deletion> {
    (0..n)
        .map(|i| Deletion {
            key: Key::new(
                format!("user{}", i % 7).parse().unwrap(),
                if i % 3 == 0 {
                    format!("group:@TGS#g{i}")
                } else {
                    format!("user:peer{i}")
                }
                .parse()
                .unwrap(),
            ),
            clear_roaming: i % 2 == 0,
        })
        .collect()
}

fn client(fake: &FakeTim) -> Client {
    let mut cfg = ClientConfig::new(
        BaseUrl::parse(fake.url()).unwrap(),
        1400000001,
        "administrator",
        Credentials::SecretKey(SecretKey::new(KEY).unwrap()),
    );
    cfg.min_backoff = Duration::from_millis(5);
    cfg.max_backoff = Duration::from_millis(50);
    cfg.max_retries = 10;
    Client::new(cfg).unwrap()
}

#[tokio::test]
async fn the_executor_deletes_each_conversation_once_through_the_client() {
    let fake = FakeTim::start(FakeConfig {
        secret_key: KEY.into(),
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    fake.update(|c| {
        c.users.insert("user3".into(), 50001);
        c.fault_rate = 0.2;
        c.faults = vec![Fault::Drop, Fault::Http502, Fault::Code(50004)];
    });
    let client = client(&fake);
    let memory = Memory::default();
    let plan = deletions(300);
    let Executed {
        summary,
        record_error,
        ..
    } = apply::execute(
        Execution {
            deletions: plan.clone(),
            forgets: vec![],
            deleter: &client,
            recorder: memory.clone(),
            opts: &ExecOptions::new(32),
            stop: &Stop::new(),
        },
        &mut |_| {},
    )
    .await;
    assert!(record_error.is_none());
    assert_eq!(summary.failed, 0, "{summary:?}");
    assert_eq!(summary.deleted + summary.already_absent, 300);
    assert_eq!(summary.missing_users, vec!["user3".to_owned()]);
    assert_eq!(memory.0.lock().unwrap().len(), 300);
    // The wire: the right Type, peer field and ClearRamble, each conversation exactly once.
    let calls = fake.calls_per_conversation();
    assert_eq!(calls.len(), 300);
    assert!(calls.values().all(|n| *n == 1));
    for d in &plan {
        let key = ConversationKey {
            from: d.key.from.to_string(),
            kind: if d.key.peer.to_string().starts_with("group:") {
                2
            } else {
                1
            },
            peer: d.key.peer.id().to_owned(),
            clear_ramble: Some(u8::from(d.clear_roaming)),
        };
        assert!(calls.contains_key(&key), "{key:?}");
    }
}

#[tokio::test]
async fn a_fatal_answer_stops_the_executor_with_the_clients_message() {
    let fake = FakeTim::start(FakeConfig {
        secret_key: KEY.into(),
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    fake.update(|c| {
        c.fail_all = Some(70003);
        c.latency = (Duration::from_millis(50), Duration::from_millis(50));
    });
    let client = client(&fake);
    let Executed { summary, .. } = apply::execute(
        Execution {
            deletions: deletions(1000),
            forgets: vec![],
            deleter: &client,
            recorder: Memory::default(),
            opts: &ExecOptions::new(32),
            stop: &Stop::new(),
        },
        &mut |_| {},
    )
    .await;
    assert_eq!(summary.stopped, Some(StopReason::Fatal));
    let message = summary.stop_message.clone().unwrap();
    assert!(
        message.contains("70003") && message.contains("TIMCTL_SECRET_KEY"),
        "{message}"
    );
    assert!(fake.stats().requests < 50, "{:?}", fake.stats());
    assert_eq!(summary.deleted, 0);
    // Calls the client held back once it had stopped are not failures: the next run makes them.
    assert_eq!(summary.failed as u64 + summary.not_started as u64, 1000);
    assert!(summary.not_started > 900, "{summary:?}");
}
