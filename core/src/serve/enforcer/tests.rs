use super::*;
use crate::ids::{Peer, UserId};

/// Counts calls per conversation and confirms each.
#[derive(Default)]
struct Counting(Mutex<Vec<(ConversationKey, tokio::time::Instant)>>);

impl Deleter for Counting {
    async fn delete(&self, d: &Deletion) -> DeletionOutcome {
        lock(&self.0).push((d.key.clone(), tokio::time::Instant::now()));
        DeletionOutcome::Deleted
    }
}

fn key() -> ConversationKey {
    ConversationKey {
        from: UserId::new("alice").unwrap(),
        peer: Peer::User(UserId::new("mallory").unwrap()),
    }
}

fn cause() -> Cause {
    Cause {
        arrived: Instant::now(),
        reason: EventReason::Enforced,
        trigger: Some(serde_json::json!({"command": "C2C.CallbackAfterSendMsg"})),
    }
}

#[tokio::test(start_paused = true)]
async fn a_chatty_conversation_costs_one_call_per_settle_window_and_ends_deleted() {
    let calls = Arc::new(Counting::default());
    let (tx, recorded) = Recorder::for_test();
    let enforcer = Enforcer::new(
        calls.clone(),
        tx,
        Duration::from_millis(500),
        10,
        Arc::new(Metrics::new()),
        Stop::new(),
    );
    let start = tokio::time::Instant::now();
    // 20 messages within one second, the last at 950 ms.
    for i in 0..20 {
        tokio::time::sleep_until(start + Duration::from_millis(50 * i)).await;
        enforcer.enqueue(key(), true, cause());
    }
    assert!(enforcer.wait_idle(Duration::from_secs(5)).await);
    let made = lock(&calls.0).clone();
    // At once, at 500 ms (for the messages of the first window), at 1000 ms (for the rest).
    assert_eq!(made.len(), 3, "{made:?}");
    assert_eq!(made[0].1, start);
    assert!(made.last().unwrap().1 >= start + Duration::from_millis(950));
    for pair in made.windows(2) {
        assert!(pair[1].1 - pair[0].1 >= Duration::from_millis(500));
    }
    // Every confirmed deletion goes to the recorder, with its trigger and latency.
    let recorded: Vec<DetailedDeletion> = recorded();
    assert_eq!(recorded.len(), 3);
    assert!(
        recorded
            .iter()
            .all(|r| r.trigger.is_some() && r.latency_ms.is_some())
    );
    assert_eq!(enforcer.depth(), 0);
}

#[tokio::test(start_paused = true)]
async fn past_its_capacity_the_queue_overflows_instead_of_growing() {
    let calls = Arc::new(Counting::default());
    let (tx, _recorded) = Recorder::for_test();
    let enforcer = Enforcer::new(
        calls,
        tx,
        Duration::from_millis(500),
        1,
        Arc::new(Metrics::new()),
        Stop::new(),
    );
    assert_eq!(enforcer.enqueue(key(), false, cause()), Enqueued::Started);
    assert_eq!(enforcer.enqueue(key(), false, cause()), Enqueued::Merged);
    let other = ConversationKey {
        from: UserId::new("bob").unwrap(),
        peer: Peer::User(UserId::new("mallory").unwrap()),
    };
    assert_eq!(enforcer.enqueue(other, false, cause()), Enqueued::Overflow);
}

#[tokio::test(start_paused = true)]
async fn what_is_given_without_a_state_is_held_and_deleted_once_active() {
    let calls = Arc::new(Counting::default());
    let enforcer: Enforcer<Arc<Counting>> =
        Enforcer::held(Duration::from_millis(500), 2, Arc::new(Metrics::new()));
    assert_eq!(enforcer.enqueue(key(), false, cause()), Enqueued::Merged);
    let other = ConversationKey {
        from: UserId::new("bob").unwrap(),
        peer: Peer::User(UserId::new("mallory").unwrap()),
    };
    assert_eq!(
        enforcer.enqueue(other.clone(), true, cause()),
        Enqueued::Merged
    );
    // Held up to the capacity; past it, refused (the caller marks the users for a resync).
    let third = ConversationKey {
        from: UserId::new("carol").unwrap(),
        peer: Peer::User(UserId::new("mallory").unwrap()),
    };
    assert_eq!(enforcer.enqueue(third, false, cause()), Enqueued::Overflow);
    assert!(!enforcer.is_active());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(lock(&calls.0).is_empty(), "nothing deleted without a state");

    let (tx, recorded) = Recorder::for_test();
    enforcer.activate(calls.clone(), tx, Stop::new());
    assert!(enforcer.is_active());
    assert!(enforcer.wait_idle(Duration::from_secs(5)).await);
    let mut made: Vec<ConversationKey> = lock(&calls.0).iter().map(|(k, _)| k.clone()).collect();
    made.sort();
    let mut want = vec![key(), other];
    want.sort();
    assert_eq!(made, want);
    assert_eq!(recorded().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn holding_stops_the_term_and_names_the_users_still_queued() {
    let calls = Arc::new(Counting::default());
    let (tx, recorded) = Recorder::for_test();
    let stop = Stop::new();
    let enforcer = Enforcer::new(
        calls.clone(),
        tx,
        Duration::from_millis(500),
        10,
        Arc::new(Metrics::new()),
        stop.clone(),
    );
    assert_eq!(enforcer.enqueue(key(), false, cause()), Enqueued::Started);
    // A second message waits for the end of the settle window.
    assert_eq!(enforcer.enqueue(key(), false, cause()), Enqueued::Merged);
    tokio::task::yield_now().await;
    assert_eq!(lock(&calls.0).len(), 1, "the first deletion starts at once");
    stop.stop(StopReason::RecordFailed);
    let users = enforcer.hold();
    assert_eq!(users, vec![UserId::new("alice").unwrap()]);
    assert!(enforcer.wait_idle(Duration::from_secs(5)).await);
    // The window's second deletion is never made once the term stopped.
    assert_eq!(lock(&calls.0).len(), 1);
    assert_eq!(recorded().len(), 1, "the confirmed one was recorded");
    // Held from now on.
    assert_eq!(enforcer.enqueue(key(), false, cause()), Enqueued::Merged);
    assert_eq!(lock(&calls.0).len(), 1);
}

#[tokio::test]
async fn a_standby_forwards_and_answers_only_once_the_queue_has_committed() {
    let enforcer: Enforcer<Arc<Counting>> =
        Enforcer::held(Duration::from_millis(500), 10, Arc::new(Metrics::new()));
    // Held before the standby's forward exists: forwarded first.
    assert_eq!(enforcer.enqueue(key(), true, cause()), Enqueued::Merged);
    let (tx, rx) = mpsc::sync_channel(10);
    let (committed, committed_rx) = tokio::sync::watch::channel(0_u64);
    enforcer.standby(Forward::new(tx, committed_rx));
    assert!(!enforcer.is_active());
    let other = ConversationKey {
        from: UserId::new("bob").unwrap(),
        peer: Peer::User(UserId::new("mallory").unwrap()),
    };
    assert_eq!(
        enforcer.enqueue(other.clone(), false, cause()),
        Enqueued::Started
    );
    let forwarded: Vec<Forwarded> = rx.try_iter().collect();
    assert_eq!(
        forwarded
            .iter()
            .map(|f| (f.seq, f.key.clone(), f.clear_roaming))
            .collect::<Vec<_>>(),
        vec![(1, key(), true), (2, other, false)]
    );
    let flushing = tokio::spawn({
        let enforcer = enforcer.clone();
        async move { enforcer.flush().await }
    });
    committed.send_replace(1);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!flushing.is_finished(), "answered before the commit");
    committed.send_replace(2);
    tokio::time::timeout(Duration::from_secs(1), flushing)
        .await
        .expect("answered once committed")
        .unwrap();
}
