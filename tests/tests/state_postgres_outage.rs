//! The database stops mid-apply: apply stops its calls, exits 1 naming the state (never the
//! password), and after a restart the next apply finishes with nothing lost. A test binary of
//! its own, because it stops its cluster.

mod apply_common;

use std::path::PathBuf;
use std::time::Duration;

use apply_common::{Env, Fake, Out, many};
use timctl_tests::pg::PgCluster;

#[test]
fn the_database_stopped_mid_apply_stops_the_calls_and_loses_nothing() {
    let cluster = PgCluster::start();
    let db = cluster.database();
    let fake = Fake::start(|c| c.latency = (Duration::from_millis(20), Duration::from_millis(20)));
    let mut env = Env::new(&fake, &many(10, 30));
    env.state = PathBuf::from(cluster.url_with_password(&db));
    let child = env.spawn_apply(&["--rate", "50"]);
    fake.wait_until("apply never called", |f| f.stats().requests >= 40);
    cluster.stop_server();
    let out: Out = child.wait_with_output().unwrap().into();
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(
        fake.deletions().len() < 300,
        "calls stopped before the end of the plan"
    );
    assert!(out.stderr.contains(&db), "names the state: {}", out.all());
    assert!(out.stderr.contains("recording"), "says why: {}", out.all());
    assert!(!out.stderr.contains(cluster.password()), "{}", out.all());
    assert!(!out.stdout.contains(cluster.password()), "{}", out.all());

    cluster.start_server();
    let again = env.apply(&[]);
    assert_eq!(again.code, Some(0), "{}", again.all());
    assert_eq!(env.entries().len(), 300, "every deletion is in the state");
    assert_eq!(fake.deletions().len(), 300);
    assert!(env.plan(&[]).stdout.contains("No changes"));
}
