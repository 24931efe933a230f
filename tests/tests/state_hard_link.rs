//! Issue 18.8: a hard link is another name of one state, not another state. Two applies, one
//! through each name, must not both write it: the lock follows the file, not its name.

mod apply_common;

use std::time::Duration;

use apply_common::{Env, Fake, Out, many};

#[test]
fn an_apply_through_a_hard_link_is_refused_while_the_other_name_is_held() {
    // Slow answers, so the first apply is still running when the second starts.
    let fake =
        Fake::start(|c| c.latency = (Duration::from_millis(200), Duration::from_millis(200)));
    let mut env = Env::new(&fake, &many(2, 2));
    let first = env.apply(&[]);
    assert_eq!(first.code, Some(0), "{}", first.all());

    // A second name for the same database, in a directory of its own (so another lock file).
    let other_dir = env.dir.path().join("other");
    std::fs::create_dir(&other_dir).unwrap();
    std::fs::set_permissions(
        &other_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let other = other_dir.join("state.db");
    std::fs::hard_link(&env.state, &other).unwrap();

    env.write_manifest(&many(10, 30));
    let running = env.spawn_apply(&["--rate", "20"]);
    fake.wait_until("the first apply never called", |f| f.calls().len() > 4);

    let original = env.state.clone();
    env.state = other;
    let second = env.apply(&[]);
    assert_eq!(second.code, Some(1), "{}", second.all());
    assert!(second.stderr.contains("locked"), "{}", second.all());
    assert!(second.stderr.contains("hard link"), "{}", second.all());

    let out: Out = running.wait_with_output().unwrap().into();
    assert_eq!(out.code, Some(0), "{}", out.all());
    env.state = original;
    assert_eq!(env.entries().len(), 300);
}
