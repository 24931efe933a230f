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
