//! The secret key and the UserSig never appear in any outcome message, error or log line of
//! the client, whatever goes wrong. Every log line at every level (including reqwest's, through
//! the `log` bridge) is captured and searched.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use timctl_core::api::{Conversation, RecentContactDelete, RecentContactDeleteRequest};
use timctl_core::client::{BaseUrl, Client, ClientConfig, Credentials, Outcome};
use timctl_core::usersig::{self, SecretKey};
use timctl_tests::{FakeConfig, FakeTim, Fault};

const KEY: &str = "very-secret-key-that-must-not-leak";
const APP: u64 = 1400000001;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn secrets_never_appear_in_messages_or_logs() {
    let logs = Capture::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .try_init()
        .expect("the only subscriber in this test binary");

    let started = unix_now();
    let fake = FakeTim::start(FakeConfig {
        secret_key: KEY.into(),
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let key = SecretKey::new(KEY).unwrap();
    let given_sig = usersig::make(APP, "administrator", &key, started, 3600);
    let mut texts: Vec<String> = Vec::new();
    let req = |peer: &str| RecentContactDeleteRequest {
        from_account: "alice".into(),
        conversation: Conversation::OneToOne {
            to_account: peer.into(),
        },
        clear_ramble: None,
    };
    let mut run = async |fake: &FakeTim, creds: Credentials, retries: u32, peer: &str| {
        let mut cfg = ClientConfig::new(
            BaseUrl::parse(fake.url()).unwrap(),
            APP,
            "administrator",
            creds,
        );
        cfg.min_backoff = Duration::from_millis(1);
        cfg.max_backoff = Duration::from_millis(5);
        cfg.max_retries = retries;
        texts.push(format!("{cfg:?}"));
        let client = Client::new(cfg).unwrap();
        texts.push(format!("{client:?}"));
        let outcome = client.call::<RecentContactDelete>(&req(peer)).await;
        texts.push(format!("{outcome:?}"));
        if let Outcome::Fatal(f) = &outcome {
            texts.push(f.to_string());
        }
        outcome
    };
    let self_made = || Credentials::SecretKey(SecretKey::new(KEY).unwrap());

    // Every transient fault, retried, then exhausted.
    fake.update(|c| {
        c.fault_rate = 1.0;
        c.faults = vec![
            Fault::Drop,
            Fault::Truncate,
            Fault::Http502,
            Fault::Status(429),
            Fault::Code(50004),
        ];
    });
    assert!(matches!(
        run(&fake, self_made(), 12, "a").await,
        Outcome::RetriesExhausted { .. }
    ));
    fake.update(|c| c.fault_rate = 0.0);
    // Item failures and fatal answers, with both kinds of credentials.
    fake.update(|c| {
        c.users.insert("alice".into(), 50002);
    });
    assert!(matches!(
        run(&fake, self_made(), 0, "b").await,
        Outcome::ItemFailed { .. }
    ));
    fake.update(|c| c.fail_all = Some(70003));
    assert!(matches!(
        run(&fake, Credentials::UserSig(given_sig.clone()), 0, "c").await,
        Outcome::Fatal(_)
    ));
    fake.update(|c| {
        c.fail_all = None;
        c.expire_usersigs_made_before = Some(u64::MAX);
    });
    assert!(matches!(
        run(&fake, self_made(), 0, "d").await,
        Outcome::Fatal(_)
    ));
    assert!(matches!(
        run(&fake, Credentials::UserSig(given_sig.clone()), 0, "e").await,
        Outcome::Fatal(_)
    ));
    // A server that is gone: connection refused.
    let url = fake.url().to_owned();
    drop(fake);
    let mut cfg = ClientConfig::new(
        BaseUrl::parse(&url).unwrap(),
        APP,
        "administrator",
        self_made(),
    );
    cfg.max_retries = 1;
    cfg.min_backoff = Duration::from_millis(1);
    let outcome = Client::new(cfg)
        .unwrap()
        .call::<RecentContactDelete>(&req("f"))
        .await;
    match &outcome {
        Outcome::RetriesExhausted { last, .. } => assert!(last.contains("connect"), "{last}"),
        other => panic!("{other:?}"),
    }
    texts.push(format!("{outcome:?}"));

    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("retrying"), "the capture works: {logs}");
    assert!(logs.contains("stopping"), "{logs}");
    texts.push(logs);
    // Every UserSig the clients can have made during the test.
    let mut secrets = vec![KEY.to_owned(), given_sig];
    for t in started.saturating_sub(1)..=unix_now() + 1 {
        secrets.push(usersig::make(APP, "administrator", &key, t, 86400));
    }
    for text in &texts {
        assert!(!text.contains("usersig="), "a URL leaked: {text}");
        for s in &secrets {
            assert!(!text.contains(s.as_str()), "a secret leaked: {text}");
            assert!(!text.contains(&s[..24]), "part of a secret leaked: {text}");
        }
    }
}
