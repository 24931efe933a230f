//! `timctl serve` end to end: the real binary, fake-tim posting the documented callbacks over
//! loopback, a real SQLite state.

mod apply_common;

use std::io::Read;
use std::process::{Child, Stdio};
use std::time::Duration;
use timctl_tests::ports::free_addr;

use apply_common::{APP, Env, Fake, KEY, THREE, wait_for};
use timctl_tests::callbacks::{self, CallbackAnswer, CallbackTarget, callback_query, post_raw};
use timctl_tests::{ConversationKey, FakePeer};

/// The callback token set "in the console"; it must never show up in serve's logs.
const TOKEN: &str = "serve-e2e-callback-token-5f3a9c";
const GROUP: &str = "@TGS#2C5SZEAEF";

/// `timctl serve -f MANIFEST --listen LISTEN --ops-listen OPS EXTRA…`; no token set.
fn serve_command(
    env: &Env,
    manifest: &std::path::Path,
    listen: &str,
    ops: &str,
    extra: &[&str],
) -> std::process::Command {
    let manifest = manifest.to_str().unwrap();
    let mut args = vec![
        "serve",
        "-f",
        manifest,
        "--listen",
        listen,
        "--ops-listen",
        ops,
    ];
    args.extend_from_slice(extra);
    env.timctl(&args)
}

/// A running `timctl serve` and the runtime the test talks to it with.
struct Serve {
    child: Option<Child>,
    listen: String,
    ops: String,
    rt: tokio::runtime::Runtime,
}

impl Serve {
    fn start(env: &Env, extra: &[&str], vars: &[(&str, &str)]) -> Serve {
        Serve::start_with(env, &env.manifest, extra, vars)
    }

    /// [`Serve::start`] with `-f manifest`. The ports are free when picked but bound only by
    /// serve, so another process (a parallel test's client, whose ephemeral port comes from
    /// the same range) may take one in between: such a start is tried again on other ports.
    /// Any other exit before ready fails the test with serve's own words.
    fn start_with(
        env: &Env,
        manifest: &std::path::Path,
        extra: &[&str],
        vars: &[(&str, &str)],
    ) -> Serve {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        for attempt in 1.. {
            let (listen, ops) = (free_addr(), free_addr());
            let mut cmd = serve_command(env, manifest, &listen, &ops, extra);
            cmd.env("TIMCTL_CALLBACK_TOKEN", TOKEN)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            for (k, v) in vars {
                cmd.env(k, v);
            }
            let mut child = cmd.spawn().unwrap();
            let mut exited = None;
            wait_for("serve never became ready", || {
                if let Ok(Some(status)) = child.try_wait() {
                    exited = Some(status);
                    return true;
                }
                rt.block_on(callbacks::get(&ops, "/readyz"))
                    .is_ok_and(|a| a.status == 200)
            });
            let Some(status) = exited else {
                return Serve {
                    child: Some(child),
                    listen,
                    ops,
                    rt,
                };
            };
            let mut stderr = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut stderr);
            }
            assert!(
                attempt < 3 && stderr.contains("cannot listen on"),
                "serve exited ({status}) before it was ready:\n{stderr}"
            );
        }
        unreachable!("the loop returns or fails")
    }

    /// Waits until `/readyz` says the first resync is done.
    fn wait_first_resync(&self) {
        wait_for("the first resync", || {
            self.get("/readyz")
                .is_some_and(|a| a.body.contains("first resync: done"))
        });
    }

    fn get(&self, path: &str) -> Option<CallbackAnswer> {
        self.rt.block_on(callbacks::get(&self.ops, path)).ok()
    }

    fn target(&self) -> CallbackTarget {
        CallbackTarget {
            addr: self.listen.clone(),
            path: "/callback".into(),
            token: Some(TOKEN.into()),
            sdkappid: APP,
        }
    }

    /// Posts a callback with `query` and `body` as given.
    fn post(&self, query: &str, body: &[u8], content_length: Option<usize>) -> CallbackAnswer {
        self.rt
            .block_on(post_raw(
                &self.listen,
                &format!("/callback?{query}"),
                body,
                content_length,
            ))
            .unwrap()
    }

    fn metrics(&self) -> String {
        self.get("/metrics").unwrap().body
    }

    /// Sends SIGTERM and waits: the exit code and everything printed.
    fn terminate(mut self) -> (Option<i32>, String) {
        timctl_tests::run::terminate(self.child.take().unwrap())
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn key(from: &str, kind: u8, peer: &str, clear: bool) -> ConversationKey {
    ConversationKey {
        from: from.into(),
        kind,
        peer: peer.into(),
        clear_ramble: Some(u8::from(clear)),
    }
}

fn deletions_of(fake: &Fake, k: &ConversationKey) -> usize {
    fake.deletions().get(k).copied().unwrap_or(0)
}

/// The value of the sample `line_start` (metric name and labels) in OpenMetrics text.
fn sample(metrics: &str, line_start: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(line_start)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn serve_resyncs_then_deletes_what_messages_bring_back_and_records_it() {
    let fake = Fake::start(|_| {});
    // Present on the server before serve starts: the first resync deletes it.
    fake.seed_conversations("carol", [FakePeer::user("dave")], false);
    let env = Env::new(&fake, THREE);
    let serve = Serve::start(&env, &[], &[("TIMCTL_LOG", "trace")]);
    fake.callbacks_to(serve.target());
    let carol_dave = key("carol", 1, "dave", false);
    wait_for("the first resync", || {
        serve
            .get("/readyz")
            .is_some_and(|a| a.body.contains("first resync: done"))
    });
    // The first resync reads the lists (as apply --refresh does): it deletes carol's
    // conversation with dave, which is there; alice's with bob, absent, only to clear its
    // roaming messages as the manifest asks; and records alice's group as absent, with no call.
    assert_eq!(deletions_of(&fake, &carol_dave), 1);
    assert!(fake.conversations("carol").is_empty());
    assert_eq!(fake.calls().len(), 2);
    wait_for("the resync's records", || env.entries().len() == 3);

    // One-to-one in both directions: bob writes to alice; carol writes to dave.
    let alice_bob = key("alice", 1, "bob", true);
    let answer = serve
        .rt
        .block_on(fake.send_one_to_one("bob", "alice", 1))
        .unwrap()
        .unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.body,
        r#"{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}"#
    );
    serve
        .rt
        .block_on(fake.send_one_to_one("carol", "dave", 2))
        .unwrap()
        .unwrap();
    // A group message: alice is a member.
    let alice_group = key("alice", 2, GROUP, false);
    serve
        .rt
        .block_on(fake.send_group("zed", GROUP, &["alice", "zed"], 3))
        .unwrap()
        .unwrap();
    wait_for("the enforced deletions", || {
        deletions_of(&fake, &alice_bob) == 2
            && deletions_of(&fake, &carol_dave) == 2
            && deletions_of(&fake, &alice_group) == 1
    });
    // Bob's and dave's own lists are theirs: no manifest names them.
    assert_eq!(fake.conversations("bob").len(), 1);
    assert_eq!(fake.conversations("dave").len(), 1);
    assert!(fake.conversations("alice").is_empty());
    assert!(fake.conversations("carol").is_empty());

    // Allowed conversations cause no call, whatever the callback says.
    let calls_before = fake.calls().len();
    assert_eq!(calls_before, 5);
    for seq in 10..15 {
        serve
            .rt
            .block_on(fake.send_one_to_one("bob", "zed", seq))
            .unwrap()
            .unwrap();
        serve
            .rt
            .block_on(fake.send_group("bob", "@TGS#other", &["alice"], seq))
            .unwrap()
            .unwrap();
    }

    // The state: apply is refused naming serve (with --reassert it has deletions to make, so it
    // asks for the lock); plan, state list and state history work.
    let manifest = env.manifest.to_str().unwrap();
    let refused = apply_common::Out::from(
        env.timctl(&["apply", "-f", manifest, "--auto-approve", "--reassert"])
            .output()
            .unwrap(),
    );
    assert_eq!(refused.code, Some(1), "{}", refused.all());
    assert!(refused.stderr.contains("serve"), "{}", refused.all());
    let plan = env.plan(&[]);
    assert_eq!(plan.code, Some(0), "{}", plan.all());
    // Recorded within a second of their confirmation.
    wait_for("the state records the enforced deletions", || {
        let history = env
            .timctl(&["state", "history", "--json"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&history.stdout)
            .matches(r#""reason":"enforced""#)
            .count()
            == 3
    });
    assert_eq!(env.entries().len(), 3);
    let history = apply_common::Out::from(
        env.timctl(&["state", "history", "--json"])
            .output()
            .unwrap(),
    );
    assert_eq!(history.code, Some(0), "{}", history.all());
    let events: Vec<serde_json::Value> = history
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let enforced: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["reason"] == "enforced")
        .collect();
    assert_eq!(enforced.len(), 3, "{}", history.stdout);
    for e in &enforced {
        assert!(e["latency_ms"].as_u64().is_some(), "{e}");
        assert!(e["trigger"]["command"].is_string(), "{e}");
    }
    let group_event = enforced.iter().find(|e| e["type"] == "group").unwrap();
    assert_eq!(group_event["trigger"]["group_id"], GROUP);
    assert_eq!(group_event["trigger"]["msg_seq"], 3);
    let bob_event = enforced.iter().find(|e| e["peer"] == "bob").unwrap();
    assert_eq!(bob_event["clear_roaming"], true);
    assert!(
        bob_event["trigger"]["msg_key"]
            .as_str()
            .unwrap()
            .starts_with("1_")
    );
    // The first resync's events carry the refreshed plan's reasons.
    assert!(
        events
            .iter()
            .any(|e| e["reason"] == "present" && e["peer"] == "dave")
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| e["reason"] == "absent" && e["action"] == "recorded")
            .count(),
        1,
        "{}",
        history.stdout
    );

    // The metrics count what happened.
    let m = serve.metrics();
    let c2c = r#"timctl_callbacks_total{command="C2C.CallbackAfterSendMsg",outcome="#;
    let group = r#"timctl_callbacks_total{command="Group.CallbackAfterSendMsg",outcome="#;
    assert_eq!(sample(&m, &format!(r#"{c2c}"queued"}}"#)), 2.0, "{m}");
    assert_eq!(sample(&m, &format!(r#"{c2c}"ignored"}}"#)), 5.0, "{m}");
    assert_eq!(sample(&m, &format!(r#"{group}"queued"}}"#)), 1.0, "{m}");
    assert_eq!(sample(&m, &format!(r#"{group}"ignored"}}"#)), 5.0, "{m}");
    assert_eq!(
        sample(
            &m,
            r#"timctl_deletions_total{reason="enforced",outcome="deleted"}"#
        ),
        3.0,
        "{m}"
    );
    assert_eq!(sample(&m, "timctl_enforcement_latency_seconds_count"), 3.0);
    assert_eq!(sample(&m, "timctl_ready"), 1.0);
    assert_eq!(sample(&m, "timctl_manifest_entries"), 3.0);
    // No call for the allowed conversations.
    assert_eq!(fake.calls().len(), calls_before, "{:?}", fake.calls());

    let (code, stderr) = serve.terminate();
    assert_eq!(code, Some(0), "{stderr}");
    for secret in [TOKEN, KEY] {
        assert!(!stderr.contains(secret), "a secret in the logs:\n{stderr}");
    }
    assert!(!stderr.contains("Sign="), "a Sign in the logs");
    // The lock is released: an apply now runs (and has nothing to delete).
    let after = env.apply(&[]);
    assert_eq!(after.code, Some(0), "{}", after.all());
}

#[test]
fn a_chatty_conversation_costs_at_most_one_call_per_settle_window_and_ends_deleted() {
    let fake = Fake::start(|_| {});
    let env = Env::new(&fake, THREE);
    let serve = Serve::start(&env, &[], &[]);
    serve.wait_first_resync();
    fake.callbacks_to(serve.target());
    let alice_bob = key("alice", 1, "bob", true);
    let resync_calls = deletions_of(&fake, &alice_bob);
    // 20 messages within a second: the last at 950 ms.
    serve.rt.block_on(async {
        let start = tokio::time::Instant::now();
        let mut sends = Vec::new();
        for seq in 0..20_u64 {
            let fake = &fake;
            sends.push(async move {
                tokio::time::sleep_until(start + Duration::from_millis(50 * seq)).await;
                fake.send_one_to_one("bob", "alice", seq)
                    .await
                    .unwrap()
                    .unwrap()
            });
        }
        for answer in futures::future::join_all(sends).await {
            assert_eq!(answer.status, 200);
        }
    });
    wait_for("the last message's deletion", || {
        fake.conversations("alice").is_empty()
    });
    // Let any scheduled deletion happen before counting.
    wait_for("the queue to empty", || {
        sample(&serve.metrics(), "timctl_queue_depth") == 0.0
    });
    let calls = deletions_of(&fake, &alice_bob) - resync_calls;
    assert!(
        (1..=3).contains(&calls),
        "{calls} calls for 20 messages in a second"
    );
    let (code, stderr) = serve.terminate();
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn callbacks_that_fail_the_checks_get_their_status_cause_no_call_and_are_counted() {
    let fake = Fake::start(|_| {});
    let env = Env::new(&fake, THREE);
    let serve = Serve::start(&env, &["--log-format", "json"], &[("TIMCTL_LOG", "trace")]);
    serve.wait_first_resync();
    let resync_calls = fake.calls().len();
    let c2c = "C2C.CallbackAfterSendMsg";
    let body = callbacks::one_to_one_body("bob", "alice", 1);
    let now = callbacks::unix_now();
    let signed = |time: i64| callback_query(APP, c2c, Some(TOKEN), time);
    let forged = callback_query(APP, c2c, Some("not-the-token"), now);
    let cases: Vec<(&str, String, Vec<u8>, u16)> = vec![
        ("forged", forged, body.clone().into_bytes(), 401),
        ("stale", signed(now - 120), body.clone().into_bytes(), 401),
        ("future", signed(now + 120), body.clone().into_bytes(), 401),
        (
            "unsigned",
            callback_query(APP, c2c, None, now),
            body.clone().into_bytes(),
            401,
        ),
        (
            "other app",
            callback_query(APP + 1, c2c, Some(TOKEN), now),
            body.clone().into_bytes(),
            403,
        ),
        (
            "malformed",
            signed(now),
            b"{\"From_Account\": 7".to_vec(),
            400,
        ),
        ("2 MB", signed(now), vec![b' '; 2 * 1024 * 1024], 413),
    ];
    for (what, query, body, status) in &cases {
        let answer = serve.post(query, body, None);
        assert_eq!(answer.status, *status, "{what}: {answer:?}");
    }
    // An unknown command is answered OK and counted.
    let alert = serve.post(
        &callback_query(APP, "Alert.RequestOverLimit", Some(TOKEN), now),
        br#"{"ServiceName":"openim","Command":"sendmsg","Request":100,"Limit":200}"#,
        None,
    );
    assert_eq!(alert.status, 200);
    assert_eq!(fake.calls().len(), resync_calls, "{:?}", fake.calls());
    let m = serve.metrics();
    let count = |outcome: &str| {
        sample(
            &m,
            &format!(r#"timctl_callbacks_total{{command="{c2c}",outcome="{outcome}"}}"#),
        )
    };
    assert_eq!(count("unauthorized"), 2.0, "{m}");
    assert_eq!(count("stale"), 2.0, "{m}");
    assert_eq!(count("forbidden"), 1.0, "{m}");
    assert_eq!(count("malformed"), 1.0, "{m}");
    assert_eq!(count("too_large"), 1.0, "{m}");
    assert_eq!(
        sample(
            &m,
            r#"timctl_callbacks_total{command="Alert.RequestOverLimit",outcome="ignored"}"#
        ),
        1.0
    );
    let (code, stderr) = serve.terminate();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("keep clocks in sync"), "{stderr}");
    // --log-format json: every line on stderr is one JSON object, the status lines ("ready",
    // "Stopping", "stopped") included, so a log collector never meets plain text.
    let log_lines: Vec<&str> = stderr.lines().collect();
    assert!(log_lines.len() > 10, "{stderr}");
    for line in &log_lines {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON object ({e}): {line}"));
        assert!(v["level"].is_string(), "{line}");
    }
    for status in ["timctl serve: ready on", "timctl serve: stopped."] {
        assert!(
            log_lines.iter().any(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with(status))
            }),
            "{status:?} in\n{stderr}"
        );
    }
    let skew = stderr
        .lines()
        .find(|l| l.contains("keep clocks in sync"))
        .unwrap();
    let skew: serde_json::Value = serde_json::from_str(skew).unwrap();
    assert!(
        skew["fields"]["skew_seconds"].as_i64().unwrap().abs() >= 119,
        "{skew}"
    );
    assert!(!stderr.contains(TOKEN), "the token in the logs:\n{stderr}");
    assert!(!stderr.contains(&TOKEN.chars().rev().collect::<String>()));
    // No Sign value either: the valid Sign of the stale callback was never logged.
    let stale_sign = signed(now - 120);
    let sign = stale_sign
        .split("Sign=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    assert!(!stderr.contains(sign), "a Sign in the logs");
}

#[test]
fn a_peer_outside_callback_allow_is_refused_and_counted() {
    let fake = Fake::start(|_| {});
    let env = Env::new(&fake, THREE);
    let serve = Serve::start(&env, &["--callback-allow", "10.0.0.0/8"], &[]);
    serve.wait_first_resync();
    let resync_calls = fake.calls().len();
    fake.callbacks_to(serve.target());
    let answer = serve
        .rt
        .block_on(fake.send_one_to_one("bob", "alice", 1))
        .unwrap()
        .unwrap();
    assert_eq!(answer.status, 403);
    assert_eq!(fake.calls().len(), resync_calls);
    assert_eq!(
        sample(
            &serve.metrics(),
            r#"timctl_callbacks_total{command="C2C.CallbackAfterSendMsg",outcome="forbidden"}"#
        ),
        1.0
    );
    let (code, _) = serve.terminate();
    assert_eq!(code, Some(0));

    // TIMCTL_CALLBACK_ALLOW is --callback-allow, comma-separated: loopback is in this list.
    let serve = Serve::start(
        &env,
        &[],
        &[("TIMCTL_CALLBACK_ALLOW", "10.0.0.0/8,127.0.0.0/8")],
    );
    fake.callbacks_to(serve.target());
    let answer = serve
        .rt
        .block_on(fake.send_one_to_one("bob", "alice", 2))
        .unwrap()
        .unwrap();
    assert_eq!(answer.status, 200);
    let (code, _) = serve.terminate();
    assert_eq!(code, Some(0));
    let serve = Serve::start(
        &env,
        &[],
        &[("TIMCTL_CALLBACK_ALLOW", "10.0.0.0/8,192.0.2.7")],
    );
    fake.callbacks_to(serve.target());
    let answer = serve
        .rt
        .block_on(fake.send_one_to_one("bob", "alice", 3))
        .unwrap()
        .unwrap();
    assert_eq!(answer.status, 403);
    let (code, _) = serve.terminate();
    assert_eq!(code, Some(0));
}

#[test]
fn serve_refuses_to_start_without_a_token_and_a_fatal_answer_stops_it_with_one_message() {
    let fake = Fake::start(|_| {});
    let env = Env::new(&fake, THREE);
    let (listen, ops) = (free_addr(), free_addr());
    let out = apply_common::Out::from(
        serve_command(&env, &env.manifest, &listen, &ops, &[])
            .output()
            .unwrap(),
    );
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(
        out.stderr.contains("TIMCTL_CALLBACK_TOKEN"),
        "{}",
        out.all()
    );
    assert!(!env.state.exists(), "a refused serve created the state");

    // A fatal answer (the app is unknown) during the first resync: exit 1, one message.
    fake.update(|c| c.fail_all = Some(60006));
    let serve = Serve::start(&env, &[], &[]);
    let mut child = serve.child_take();
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.matches("serve stopped").count(), 1, "{stderr}");
}

impl Serve {
    fn child_take(mut self) -> Child {
        self.child.take().unwrap()
    }
}

/// The Python that `.ci/steps/prometheus-client.sh` installs prometheus_client into.
fn prometheus_python() -> std::path::PathBuf {
    let target = timctl_tests::timctl_bin()
        .parent()
        .and_then(|d| d.parent())
        .unwrap()
        .to_path_buf();
    let python = target.join("ci-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run .ci/steps/prometheus-client.sh once (it installs Python's \
         prometheus_client there)",
        python.display()
    );
    python
}

#[test]
fn metrics_parse_with_prometheus_client_and_match_what_the_test_did() {
    let python = prometheus_python();
    let fake = Fake::start(|_| {});
    let env = Env::new(&fake, THREE);
    let serve = Serve::start(&env, &[], &[]);
    serve.wait_first_resync();
    fake.callbacks_to(serve.target());
    let alice_bob = key("alice", 1, "bob", true);
    let before = deletions_of(&fake, &alice_bob);
    serve.rt.block_on(async {
        fake.send_one_to_one("bob", "alice", 1)
            .await
            .unwrap()
            .unwrap();
        fake.send_one_to_one("bob", "zed", 2)
            .await
            .unwrap()
            .unwrap();
    });
    let forged = callback_query(
        APP,
        "C2C.CallbackAfterSendMsg",
        Some("wrong"),
        callbacks::unix_now(),
    );
    assert_eq!(
        serve
            .post(
                &forged,
                callbacks::one_to_one_body("bob", "alice", 3).as_bytes(),
                None
            )
            .status,
        401
    );
    wait_for("the enforced deletion", || {
        deletions_of(&fake, &alice_bob) == before + 1
    });
    wait_for("the queue to empty", || {
        sample(&serve.metrics(), "timctl_queue_depth") == 0.0
    });
    let text = serve.metrics();
    let script = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        out[f"{s.name}{{{labels}}}"] = s.value
print(json.dumps(out))
"#;
    let mut child = std::process::Command::new(python)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client refused the metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: std::collections::BTreeMap<String, f64> =
        serde_json::from_slice(&out.stdout).unwrap();
    let get = |k: &str| {
        parsed
            .get(k)
            .copied()
            .unwrap_or_else(|| panic!("{k} missing: {parsed:?}"))
    };
    let c2c = "command=C2C.CallbackAfterSendMsg";
    assert_eq!(
        get(&format!("timctl_callbacks_total{{{c2c},outcome=queued}}")),
        1.0
    );
    assert_eq!(
        get(&format!("timctl_callbacks_total{{{c2c},outcome=ignored}}")),
        1.0
    );
    assert_eq!(
        get(&format!(
            "timctl_callbacks_total{{{c2c},outcome=unauthorized}}"
        )),
        1.0
    );
    assert_eq!(
        get("timctl_deletions_total{outcome=deleted,reason=enforced}"),
        1.0
    );
    // The first resync's deletion of alice's conversation with bob (clear_roaming), and the
    // enforced one.
    assert_eq!(
        get("timctl_deletions_total{outcome=deleted,reason=clear_roaming}"),
        1.0
    );
    assert_eq!(
        get("timctl_api_calls_total{code=0,endpoint=v4/recentcontact/delete}"),
        2.0
    );
    assert_eq!(get("timctl_enforcement_latency_seconds_count{}"), 1.0);
    assert_eq!(
        get("timctl_enforcement_latency_seconds_bucket{le=+Inf}"),
        1.0
    );
    assert_eq!(get("timctl_queue_depth{}"), 0.0);
    assert_eq!(get("timctl_manifest_entries{}"), 3.0);
    assert_eq!(get("timctl_ready{}"), 1.0);
    assert_eq!(get("timctl_active{}"), 1.0);
    assert!(get("timctl_last_resync_success_timestamp_seconds{}") > 1.7e9);
    let (code, stderr) = serve.terminate();
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn sigterm_mid_enforcement_exits_0_with_every_confirmed_deletion_recorded() {
    // Slow answers, so that SIGTERM arrives while deletions are in flight.
    let fake = Fake::start(|c| {
        c.latency = (Duration::from_millis(300), Duration::from_millis(600));
    });
    let env = Env::new(&fake, &apply_common::many(5, 8));
    let serve = Serve::start(&env, &[], &[]);
    serve.wait_first_resync();
    fake.callbacks_to(serve.target());
    let resync_deletions: usize = fake.deletions().values().sum();
    serve.rt.block_on(async {
        let mut sends = Vec::new();
        for u in 0..5 {
            for p in 0..8 {
                let fake = &fake;
                sends.push(async move {
                    let (user, peer) = (format!("u{u}"), format!("p{p}"));
                    fake.send_one_to_one(&peer, &user, (u * 8 + p) as u64)
                        .await
                        .unwrap()
                        .unwrap()
                });
            }
        }
        for answer in futures::future::join_all(sends).await {
            assert_eq!(answer.status, 200);
        }
    });
    let (code, stderr) = serve.terminate();
    assert_eq!(code, Some(0), "{stderr}");
    let enforced_on_server: usize = fake.deletions().values().sum::<usize>() - resync_deletions;
    assert!(enforced_on_server > 0, "SIGTERM came before any deletion");
    // Every deletion the server confirmed is in the history, as enforced.
    let history = apply_common::Out::from(
        env.timctl(&["state", "history", "--json", "--limit", "0"])
            .output()
            .unwrap(),
    );
    let enforced = history
        .stdout
        .lines()
        .filter(|l| l.contains(r#""reason":"enforced""#))
        .count();
    assert_eq!(enforced, enforced_on_server, "{}", history.stdout);
}

#[test]
fn a_second_serve_on_the_same_state_is_refused_and_readyz_says_starting_until_it_could_start() {
    let fake = Fake::start(|_| {});
    let env = Env::new(&fake, THREE);
    let first = Serve::start(&env, &[], &[]);

    // Refused at once, naming the running serve.
    let (listen, ops) = (free_addr(), free_addr());
    let refused = apply_common::Out::from(
        serve_command(&env, &env.manifest, &listen, &ops, &[])
            .env("TIMCTL_CALLBACK_TOKEN", TOKEN)
            .output()
            .unwrap(),
    );
    assert_eq!(refused.code, Some(1), "{}", refused.all());
    assert!(refused.stderr.contains("locked by"), "{}", refused.all());
    assert!(refused.stderr.contains("serve"), "{}", refused.all());

    // Waiting for the lock: the ops listener is up, /healthz 200, /readyz 503 `starting`.
    let (listen, ops) = (free_addr(), free_addr());
    let mut waiting = serve_command(
        &env,
        &env.manifest,
        &listen,
        &ops,
        &["--lock-timeout", "60s"],
    )
    .env("TIMCTL_CALLBACK_TOKEN", TOKEN)
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let ask = |path: &str| first.rt.block_on(callbacks::get(&ops, path)).ok();
    wait_for("the second serve's ops listener", || {
        ask("/healthz").is_some_and(|a| a.status == 200)
    });
    let readyz = ask("/readyz").unwrap();
    assert_eq!((readyz.status, readyz.body.trim()), (503, "starting"));
    // Its callback listener is not up yet.
    assert!(std::net::TcpStream::connect(&listen).is_err());

    // Once the first stops, the second takes the lock and becomes ready.
    let (code, stderr) = first.terminate();
    assert_eq!(code, Some(0), "{stderr}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    wait_for("the second serve to become ready", || {
        rt.block_on(callbacks::get(&ops, "/readyz"))
            .is_ok_and(|a| a.status == 200)
    });
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&waiting),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    assert_eq!(waiting.wait().unwrap().code(), Some(0));
}

#[test]
fn serve_forgets_state_entries_no_manifest_names_any_more() {
    let fake = Fake::start(|_| {});
    let env = Env::new(&fake, THREE);
    let applied = env.apply(&[]);
    assert_eq!(applied.code, Some(0), "{}", applied.all());
    assert_eq!(env.entries().len(), 3);
    // carol's entry leaves the manifests.
    env.write_manifest(
        "  alice:\n    - user: bob\n      clear_roaming: true\n    - group: \"@TGS#2C5SZEAEF\"\n",
    );
    let serve = Serve::start(&env, &[], &[]);
    serve.wait_first_resync();
    let (code, stderr) = serve.terminate();
    assert_eq!(code, Some(0), "{stderr}");
    let entries = env.entries();
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert!(entries.iter().all(|(from, _, _)| from == "alice"));
    let history = apply_common::Out::from(
        env.timctl(&["state", "history", "--json", "--user", "carol"])
            .output()
            .unwrap(),
    );
    assert!(
        history
            .stdout
            .lines()
            .next()
            .unwrap()
            .contains(r#""action":"forgotten""#),
        "{}",
        history.stdout
    );
}

#[test]
fn the_first_resync_reads_the_lists_and_deletes_what_came_back_while_serve_was_down() {
    let fake = Fake::start(|_| {});
    let env = Env::new(&fake, THREE);
    let applied = env.apply(&[]);
    assert_eq!(applied.code, Some(0), "{}", applied.all());
    let carol_dave = key("carol", 1, "dave", false);
    assert_eq!(deletions_of(&fake, &carol_dave), 1);
    // Back while no serve ran (an imported message, say): the state still records it deleted.
    fake.seed_conversations("carol", [FakePeer::user("dave")], false);
    let serve = Serve::start(&env, &[], &[]);
    serve.wait_first_resync();
    assert_eq!(deletions_of(&fake, &carol_dave), 2);
    assert!(fake.conversations("carol").is_empty());
    // Only what the lists showed: alice's entries, absent from her list, cost no call.
    assert_eq!(fake.deletions().values().sum::<usize>(), 4);
    let (code, stderr) = serve.terminate();
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn invalid_manifests_stop_serve_before_the_state_with_exit_1_naming_where() {
    let fake = Fake::start(|_| {});
    let env = Env::new(
        &fake,
        "  alice:\n    - user: bob\n      clear_roaming: maybe\n",
    );
    let (listen, ops) = (free_addr(), free_addr());
    let out = apply_common::Out::from(
        serve_command(&env, &env.manifest, &listen, &ops, &[])
            .env("TIMCTL_CALLBACK_TOKEN", TOKEN)
            .output()
            .unwrap(),
    );
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(out.stderr.contains("timctl.yaml:"), "{}", out.all());
    assert!(!env.state.exists(), "serve created the state");
    assert!(fake.calls().is_empty());
}

/// The sum of a metric family's samples whose labels contain `filter`.
fn sum_of(metrics: &str, name: &str, filter: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn api_calls_total_counts_every_request_sent_retries_included() {
    let fake = Fake::start(|_| {});
    fake.seed_conversations("carol", [FakePeer::user("dave")], false);
    let env = Env::new(&fake, THREE);
    let serve = Serve::start(&env, &["--max-retries", "8"], &[]);
    serve.wait_first_resync();
    fake.callbacks_to(serve.target());
    // Every request fails (HTTP 503) until two have; then the server recovers.
    fake.update(|c| {
        c.fault_rate = 1.0;
        c.faults = vec![timctl_tests::Fault::Status(503)];
    });
    serve
        .rt
        .block_on(fake.send_one_to_one("bob", "alice", 1))
        .unwrap()
        .unwrap();
    fake.wait_until("two failed attempts", |f| f.stats().faults >= 2);
    fake.update(|c| c.fault_rate = 0.0);
    let alice_bob = key("alice", 1, "bob", true);
    wait_for("the retried deletion", || {
        deletions_of(&fake, &alice_bob) == 2
    });
    let delete = fake.stats_for(timctl_tests::FakeEndpoint::Delete);
    let list = fake.stats_for(timctl_tests::FakeEndpoint::GetList);
    let calls = "timctl_api_calls_total";
    let delete_label = r#"endpoint="v4/recentcontact/delete""#;
    // serve counts an attempt when its answer arrives, a moment after fake-tim counted it.
    wait_for("the last answer counted", || {
        sum_of(&serve.metrics(), calls, delete_label) as u64 >= delete.requests
    });
    let m = serve.metrics();
    // Every request the fake saw is counted, the failed attempts under `transient`.
    assert_eq!(
        sum_of(&m, calls, delete_label) as u64,
        delete.requests,
        "{m}"
    );
    assert_eq!(
        sum_of(&m, calls, &format!(r#"{delete_label},code="transient""#)) as u64,
        delete.faults,
        "{m}"
    );
    assert!(delete.faults >= 2);
    assert_eq!(
        sum_of(&m, calls, r#"endpoint="v4/recentcontact/get_list""#) as u64,
        list.requests,
        "{m}"
    );
    // The deletion itself is counted once.
    wait_for("the deletion counted once", || {
        sample(
            &serve.metrics(),
            r#"timctl_deletions_total{reason="enforced",outcome="deleted"}"#,
        ) == 1.0
    });
    let (code, stderr) = serve.terminate();
    assert_eq!(code, Some(0), "{stderr}");
}

/// Replaces `path`'s content at once (a rename), as an editor or a sync sidecar does, so that
/// a reload never reads half a file.
fn replace_file(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp-swap");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The serve runs in the state's history, newest first.
fn serve_runs(env: &Env) -> Vec<serde_json::Value> {
    let out = apply_common::Out::from(env.timctl(&["state", "runs", "--json"]).output().unwrap());
    assert_eq!(out.code, Some(0), "{}", out.all());
    out.stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["command"] == "serve")
        .collect()
}

#[test]
fn slow_and_idle_clients_are_cut_off_and_do_not_keep_a_valid_callback_out() {
    use std::io::Write;
    let fake = Fake::start(|_| {});
    let env = Env::new(&fake, THREE);
    let serve = Serve::start(
        &env,
        &["--max-connections", "4", "--client-timeout", "1s"],
        &[],
    );
    serve.wait_first_resync();
    fake.callbacks_to(serve.target());
    // A slowloris: the request line, then one header line every 200 ms, never the end.
    let slow = {
        let addr = serve.listen.clone();
        let query = callback_query(APP, "C2C.CallbackAfterSendMsg", Some(TOKEN), 0);
        std::thread::spawn(move || {
            let mut s = std::net::TcpStream::connect(&addr).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let _ = write!(s, "POST /callback?{query} HTTP/1.1\r\nHost: x\r\n");
            let mut answer = Vec::new();
            for i in 0..300 {
                if write!(s, "X-Slow-{i}: still sending\r\n").is_err() {
                    return (true, answer);
                }
                let mut buf = [0u8; 512];
                match s.read(&mut buf) {
                    Ok(0) => return (true, answer),
                    Ok(n) => answer.extend_from_slice(&buf[..n]),
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => return (true, answer),
                }
            }
            (false, answer)
        })
    };
    // More idle connections than the cap: they send nothing at all.
    let idle: Vec<std::net::TcpStream> = (0..8)
        .map(|_| std::net::TcpStream::connect(&serve.listen).unwrap())
        .collect();
    // A valid callback behind them is answered all the same, and enforced.
    let answer = serve
        .rt
        .block_on(fake.send_one_to_one("bob", "alice", 1))
        .unwrap()
        .unwrap();
    assert_eq!(answer.status, 200, "{answer:?}");
    let alice_bob = key("alice", 1, "bob", true);
    wait_for("the enforced deletion", || {
        deletions_of(&fake, &alice_bob) == 2
    });
    // Serve closed the slow client's connection before it finished its headers, unanswered.
    let (closed, answer) = slow.join().unwrap();
    assert!(closed, "the slow client was never cut off");
    assert!(
        !String::from_utf8_lossy(&answer).contains(" 200 "),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    // And every idle connection.
    for mut c in idle {
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut buf = [0u8; 64];
        assert!(
            matches!(c.read(&mut buf), Ok(0) | Err(_)),
            "an idle connection stayed open"
        );
    }
    let (code, stderr) = serve.terminate();
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn manifest_edits_are_adopted_without_a_restart_refreshing_only_the_users_they_change() {
    let fake = Fake::start(|_| {});
    let env = Env::new(&fake, THREE);
    // The state records the manifests already (so serve adopts them under --max-deletes 1).
    let applied = env.apply(&[]);
    assert_eq!(applied.code, Some(0), "{}", applied.all());
    let serve = Serve::start(
        &env,
        &["--reload-interval", "200ms", "--max-deletes", "1"],
        &[],
    );
    serve.wait_first_resync();
    fake.callbacks_to(serve.target());
    assert_eq!(serve_runs(&env).len(), 1);
    // On the server, without a callback (an import): erin's conversation with frank, which the
    // edit will forbid, and carol's with dave, forbidden already but not touched by the edit.
    fake.seed_conversations("erin", [FakePeer::user("frank")], false);
    fake.seed_conversations("carol", [FakePeer::user("dave")], false);
    let lists_before = fake.get_list_calls();

    let edited = format!("{THREE}  erin:\n    - user: frank\n");
    replace_file(&env.manifest, &apply_common::manifest_text(&edited));
    let erin_frank = key("erin", 1, "frank", false);
    wait_for("the new entry enforced", || {
        deletions_of(&fake, &erin_frank) == 1
    });
    let lists_after = fake.get_list_calls();
    // Only erin's list was read again; carol's conversation waits for the periodic resync.
    assert_eq!(
        lists_after.get("erin").copied().unwrap_or(0),
        1,
        "{lists_after:?}"
    );
    for user in ["alice", "carol"] {
        assert_eq!(lists_after.get(user), lists_before.get(user), "{user}");
    }
    assert_eq!(fake.conversations("carol").len(), 1);
    wait_for("the adoption's run", || serve_runs(&env).len() == 2);
    let m = serve.metrics();
    assert_eq!(
        sample(&m, r#"timctl_manifest_reloads_total{outcome="adopted"}"#),
        1.0,
        "{m}"
    );
    assert_eq!(sample(&m, "timctl_manifest_entries"), 4.0, "{m}");

    // An invalid edit: counted, logged, and the set in force goes on being enforced.
    replace_file(&env.manifest, "version: 1\nabsent: [\n");
    wait_for("the invalid reload counted", || {
        sample(
            &serve.metrics(),
            r#"timctl_manifest_reloads_total{outcome="invalid"}"#,
        ) >= 1.0
    });
    assert!(serve.get("/readyz").unwrap().body.contains("invalid"));
    serve
        .rt
        .block_on(fake.send_one_to_one("frank", "erin", 2))
        .unwrap()
        .unwrap();
    wait_for("erin's entry still enforced", || {
        deletions_of(&fake, &erin_frank) == 2
    });

    // An edit adding two deletions, over --max-deletes 1: refused, said in /readyz, and the
    // set in force goes on being enforced.
    let over = format!("{edited}  gina:\n    - user: h1\n    - user: h2\n");
    replace_file(&env.manifest, &apply_common::manifest_text(&over));
    wait_for("the refused reload counted", || {
        sample(
            &serve.metrics(),
            r#"timctl_manifest_reloads_total{outcome="refused"}"#,
        ) == 1.0
    });
    let ready = serve.get("/readyz").unwrap();
    assert_eq!(ready.status, 200);
    assert!(ready.body.contains("max-deletes"), "{}", ready.body);
    fake.seed_conversations("gina", [FakePeer::user("h1")], false);
    serve
        .rt
        .block_on(fake.send_one_to_one("h1", "gina", 3))
        .unwrap()
        .unwrap();
    serve
        .rt
        .block_on(fake.send_one_to_one("frank", "erin", 4))
        .unwrap()
        .unwrap();
    wait_for("erin's entry still enforced", || {
        deletions_of(&fake, &erin_frank) == 3
    });
    assert_eq!(deletions_of(&fake, &key("gina", 1, "h1", false)), 0);
    // The same refused content is not counted again at every interval.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        sample(
            &serve.metrics(),
            r#"timctl_manifest_reloads_total{outcome="refused"}"#
        ),
        1.0
    );
    let (code, stderr) = serve.terminate();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("max-deletes"), "{stderr}");
    // The invalid edit's log line names each problem as file:line:column, for a person.
    let invalid = stderr
        .lines()
        .find(|l| l.contains("the manifests are invalid"))
        .unwrap_or_else(|| panic!("no invalid reload logged:\n{stderr}"));
    assert!(
        invalid.contains(&format!("{}:2:", env.manifest.display())),
        "{invalid}"
    );
    assert!(!invalid.contains("Problem {"), "{invalid}");
}

#[test]
fn a_manifest_directory_replaced_by_a_symlink_swap_is_picked_up_on_sighup() {
    let fake = Fake::start(|_| {});
    let env = Env::new(&fake, THREE);
    // As git-sync lays it out: `current` links to a revision's directory, and a new revision
    // is a new directory the link is swapped to (a rename of a new link over it).
    let root = env.dir.path().join("sync");
    let (v1, v2) = (root.join("rev-1"), root.join("rev-2"));
    std::fs::create_dir_all(&v1).unwrap();
    std::fs::create_dir_all(&v2).unwrap();
    std::fs::write(v1.join("timctl.yaml"), apply_common::manifest_text(THREE)).unwrap();
    let edited = format!("{THREE}  erin:\n    - user: frank\n");
    std::fs::write(v2.join("timctl.yaml"), apply_common::manifest_text(&edited)).unwrap();
    let current = root.join("current");
    std::os::unix::fs::symlink("rev-1", &current).unwrap();
    // No periodic reload within the test: SIGHUP makes serve read the manifests.
    let serve = Serve::start_with(&env, &current, &["--reload-interval", "1h"], &[]);
    serve.wait_first_resync();
    fake.seed_conversations("erin", [FakePeer::user("frank")], false);
    let swap = root.join("current.new");
    std::os::unix::fs::symlink("rev-2", &swap).unwrap();
    std::fs::rename(&swap, &current).unwrap();
    let pid = rustix::process::Pid::from_child(serve.child.as_ref().unwrap());
    rustix::process::kill_process(pid, rustix::process::Signal::HUP).unwrap();
    wait_for("the swapped-in entry enforced", || {
        deletions_of(&fake, &key("erin", 1, "frank", false)) == 1
    });
    let (code, stderr) = serve.terminate();
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn the_periodic_resync_deletes_what_came_back_without_a_callback() {
    let fake = Fake::start(|_| {});
    let env = Env::new(&fake, THREE);
    let serve = Serve::start(&env, &["--resync", "1s"], &[]);
    serve.wait_first_resync();
    let first = sample(
        &serve.metrics(),
        "timctl_last_resync_success_timestamp_seconds",
    );
    assert!(first > 0.0);
    // Brought back as an import would: no callback.
    fake.seed_conversations("carol", [FakePeer::user("dave")], false);
    wait_for("the periodic resync's deletion", || {
        fake.conversations("carol").is_empty()
    });
    wait_for("the resync's success noted", || {
        sample(
            &serve.metrics(),
            "timctl_last_resync_success_timestamp_seconds",
        ) > first
    });
    let (code, stderr) = serve.terminate();
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn past_the_queue_capacity_callbacks_are_answered_and_their_users_resynced() {
    let fake = Fake::start(|_| {});
    let env = Env::new(&fake, &apply_common::many(50, 10));
    let serve = Serve::start(&env, &["--queue-capacity", "50", "--settle", "5s"], &[]);
    serve.wait_first_resync();
    fake.callbacks_to(serve.target());
    let calls_before = fake.stats_for(timctl_tests::FakeEndpoint::Delete).requests;
    assert_eq!(calls_before, 0, "nothing was on the server at start");
    // 500 forbidden conversations brought back at once, 50 callbacks in flight at a time.
    let answers: Vec<u16> = serve.rt.block_on(async {
        use futures::StreamExt;
        let sends = (0..50).flat_map(|u| (0..10).map(move |p| (u, p)));
        futures::stream::iter(sends)
            .map(|(u, p)| {
                let fake = &fake;
                async move {
                    let (from, to) = (format!("p{p}"), format!("u{u}"));
                    fake.send_one_to_one(&from, &to, (u * 10 + p) as u64)
                        .await
                        .unwrap()
                        .unwrap()
                        .status
                }
            })
            .buffer_unordered(50)
            .collect()
            .await
    });
    assert_eq!(answers.len(), 500);
    assert!(answers.iter().all(|s| *s == 200), "{answers:?}");
    wait_for("all 500 deleted", || {
        (0..50).all(|u| {
            fake.conversations(&format!("u{u}"))
                .iter()
                .all(|c| !c.peer.id().starts_with('p'))
        })
    });
    let m = serve.metrics();
    let c2c = r#"timctl_callbacks_total{command="C2C.CallbackAfterSendMsg",outcome="#;
    let overflow = sample(&m, &format!(r#"{c2c}"overflow"}}"#));
    let queued = sample(&m, &format!(r#"{c2c}"queued"}}"#));
    assert!(overflow > 0.0, "{m}");
    assert_eq!(overflow + queued, 500.0, "{m}");
    let delete = fake.stats_for(timctl_tests::FakeEndpoint::Delete);
    assert!(delete.max_in_any_second <= 200, "{delete:?}");
    assert_eq!(delete.frequency_limited, 0, "{delete:?}");
    let (code, stderr) = serve.terminate();
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn history_retention_prunes_serves_own_history_as_it_runs() {
    let fake = Fake::start(|_| {});
    fake.seed_conversations("carol", [FakePeer::user("dave")], false);
    let env = Env::new(&fake, THREE);
    let serve = Serve::start(&env, &["--history-retention", "2s"], &[]);
    serve.wait_first_resync();
    let events = || {
        let out = env
            .timctl(&["state", "history", "--json", "--limit", "0"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).lines().count()
    };
    wait_for("the first resync's events", || events() == 3);
    // Two seconds on, they are pruned; the entries stay.
    wait_for("the history pruned", || events() == 0);
    assert_eq!(env.entries().len(), 3);
    let (code, stderr) = serve.terminate();
    assert_eq!(code, Some(0), "{stderr}");
}

/// An HTTPS connection to serve that trusts only the test CA.
struct Https {
    stream: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
}

impl Https {
    async fn connect(addr: &str) -> Https {
        use rustls::pki_types::pem::PemObject;
        let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tls/serve");
        let ca = std::fs::read(fixtures.join("ca.pem")).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls::pki_types::CertificateDer::from_pem_slice(&ca).unwrap())
            .unwrap();
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect(name, tcp)
            .await
            .unwrap();
        Https { stream }
    }

    /// The certificate serve presented.
    fn certificate(&self) -> Vec<u8> {
        self.stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
    }

    /// Posts a signed callback on this connection (kept open) and reads the answer's status.
    async fn post_callback(&mut self, body: &str) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let query = callback_query(
            APP,
            "C2C.CallbackAfterSendMsg",
            Some(TOKEN),
            callbacks::unix_now(),
        );
        let head = format!(
            "POST /callback?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        self.stream.write_all(head.as_bytes()).await.unwrap();
        self.stream.write_all(body.as_bytes()).await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            let n = self.stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "serve closed the connection");
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).into_owned();
            if let Some((head, rest)) = text.split_once("\r\n\r\n") {
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                if rest.len() >= length {
                    return head.split_whitespace().nth(1).unwrap().parse().unwrap();
                }
            }
        }
    }
}

fn pem_certificate(file: &std::path::Path) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_file(file)
        .unwrap()
        .to_vec()
}

#[test]
fn callbacks_over_https_and_a_replaced_certificate_is_served_without_dropping_connections() {
    let fake = Fake::start(|_| {});
    let env = Env::new(&fake, THREE);
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tls/serve");
    let (cert, key) = (
        env.dir.path().join("tls.crt"),
        env.dir.path().join("tls.key"),
    );
    std::fs::copy(fixtures.join("cert-1.pem"), &cert).unwrap();
    std::fs::copy(fixtures.join("key-1.pem"), &key).unwrap();
    let serve = Serve::start(
        &env,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--client-timeout",
            "120s",
        ],
        &[],
    );
    serve.wait_first_resync();
    let alice_bob = key_of("alice", "bob");
    let mut open = serve.rt.block_on(Https::connect(&serve.listen));
    assert_eq!(
        open.certificate(),
        pem_certificate(&fixtures.join("cert-1.pem"))
    );
    fake.send_message("alice", FakePeer::user("bob"));
    let status = serve
        .rt
        .block_on(open.post_callback(&callbacks::one_to_one_body("bob", "alice", 1)));
    assert_eq!(status, 200);
    wait_for("the enforced deletion", || {
        deletions_of(&fake, &alice_bob) == 2
    });

    // Rotated as cert-manager does: both files replaced while serve runs.
    replace_file(
        &key,
        &std::fs::read_to_string(fixtures.join("key-2.pem")).unwrap(),
    );
    replace_file(
        &cert,
        &std::fs::read_to_string(fixtures.join("cert-2.pem")).unwrap(),
    );
    let second = pem_certificate(&fixtures.join("cert-2.pem"));
    wait_for("the new certificate served", || {
        serve
            .rt
            .block_on(Https::connect(&serve.listen))
            .certificate()
            == second
    });
    // The connection opened before the rotation still works.
    fake.send_message("alice", FakePeer::user("bob"));
    let status = serve
        .rt
        .block_on(open.post_callback(&callbacks::one_to_one_body("bob", "alice", 2)));
    assert_eq!(status, 200);
    wait_for("the second enforced deletion", || {
        deletions_of(&fake, &alice_bob) == 3
    });
    // Plain HTTP gets no answer from an HTTPS listener.
    let plain = serve
        .rt
        .block_on(post_raw(&serve.listen, "/callback", b"{}", None))
        .unwrap();
    assert_ne!(plain.status, 200);
    drop(open);
    let (code, stderr) = serve.terminate();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("https://"), "{stderr}");
}

fn key_of(from: &str, peer: &str) -> ConversationKey {
    key(from, 1, peer, from == "alice" && peer == "bob")
}

#[test]
fn manifests_over_max_deletes_at_start_are_not_adopted_until_an_acceptable_edit() {
    let fake = Fake::start(|_| {});
    let env = Env::new(&fake, THREE);
    // An empty state: all three entries would be new deletions.
    let serve = Serve::start(
        &env,
        &["--max-deletes", "1", "--reload-interval", "200ms"],
        &[],
    );
    serve.wait_first_resync();
    fake.callbacks_to(serve.target());
    let ready = serve.get("/readyz").unwrap();
    assert!(ready.body.contains("refused"), "{}", ready.body);
    let m = serve.metrics();
    assert_eq!(
        sample(&m, r#"timctl_manifest_reloads_total{outcome="refused"}"#),
        1.0,
        "{m}"
    );
    assert_eq!(sample(&m, "timctl_manifest_entries"), 0.0, "{m}");
    // Nothing the state records, so nothing is enforced: no call at all.
    serve
        .rt
        .block_on(fake.send_one_to_one("bob", "alice", 1))
        .unwrap()
        .unwrap();
    // An edit down to one new deletion is adopted, and enforced.
    replace_file(
        &env.manifest,
        &apply_common::manifest_text("  carol:\n    - user: dave\n"),
    );
    wait_for("the acceptable edit adopted", || {
        sample(
            &serve.metrics(),
            r#"timctl_manifest_reloads_total{outcome="adopted"}"#,
        ) == 1.0
    });
    assert!(!serve.get("/readyz").unwrap().body.contains("refused"));
    // The adoption marks carol for a targeted resync. Had her list been read after the message
    // re-created the conversation, that resync would delete it too (a second, idempotent call)
    // and "exactly one deletion" below would be a race: the message goes out once the list has
    // been read.
    fake.wait_until("carol's targeted resync read her list", |f| {
        f.get_list_calls().get("carol").copied().unwrap_or(0) >= 1
    });
    serve
        .rt
        .block_on(fake.send_one_to_one("dave", "carol", 2))
        .unwrap()
        .unwrap();
    wait_for("the adopted entry enforced", || {
        deletions_of(&fake, &key("carol", 1, "dave", false)) == 1
    });
    assert_eq!(deletions_of(&fake, &key("alice", 1, "bob", true)), 0);
    let (code, stderr) = serve.terminate();
    assert_eq!(code, Some(0), "{stderr}");
}
