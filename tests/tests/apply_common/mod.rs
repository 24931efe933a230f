//! Shared by the `apply_*` tests: fake-tim on loopback with a runtime of its own, a temp dir
//! with a manifest and a real SQLite state, and the real `timctl` binary run as a child.

#![allow(dead_code)] // Each test file uses a different part of it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use timctl_tests::state_list::StateList;
use timctl_tests::{ConversationKey, FakeConfig, FakeTim};

pub(crate) const APP: u64 = 1_400_000_001;
/// The app's secret key, known to the fake; it must never show up in anything timctl writes.
pub(crate) const KEY: &str = "apply-e2e-secret-key-0123456789";

/// fake-tim, running on a runtime of its own so the test thread can block on the binary.
pub(crate) struct Fake {
    // Declared first so it is dropped (its accept loop aborted) before the runtime.
    pub(crate) fake: FakeTim,
    _rt: tokio::runtime::Runtime,
}

impl Fake {
    /// A fake with a latency of 1–5 ms and `KEY`, changed by `f`.
    pub(crate) fn start(f: impl FnOnce(&mut FakeConfig)) -> Fake {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let mut config = FakeConfig {
            secret_key: KEY.into(),
            latency: (Duration::from_millis(1), Duration::from_millis(5)),
            ..FakeConfig::default()
        };
        f(&mut config);
        let fake = rt.block_on(FakeTim::start(config)).unwrap();
        Fake { fake, _rt: rt }
    }

    /// Waits until `ready` holds of the fake (an apply running in a child has got that far),
    /// failing the test with `what` after 60 s.
    pub(crate) fn wait_until(&self, what: &str, ready: impl Fn(&FakeTim) -> bool) {
        wait_for(what, || ready(&self.fake));
    }
}

/// Polls `ready` until it holds; a minute without is a failure saying `what`.
pub(crate) fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let waited = std::time::Instant::now();
    while !ready() {
        assert!(waited.elapsed() < Duration::from_secs(60), "{what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

impl std::ops::Deref for Fake {
    type Target = FakeTim;
    fn deref(&self) -> &FakeTim {
        &self.fake
    }
}

/// A temp dir with `timctl.yaml` and `.timctl/state.db`, pointed at one fake.
pub(crate) struct Env {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) manifest: PathBuf,
    pub(crate) state: PathBuf,
    pub(crate) url: String,
}

/// What a run of the binary came to.
#[derive(Debug)]
pub(crate) struct Out {
    pub(crate) code: Option<i32>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Out {
    /// Everything it printed, for messages.
    pub(crate) fn all(&self) -> String {
        format!(
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

impl From<std::process::Output> for Out {
    fn from(o: std::process::Output) -> Out {
        Out {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

pub(crate) fn manifest_text(absent: &str) -> String {
    format!(
        "version: 1\napp:\n  sdkappid: {APP}\n  region: singapore\n  admin: administrator\n\
         absent:\n{absent}"
    )
}

/// `users` users `u0..`, each with `per_user` one-to-one conversations `p0..` to delete.
pub(crate) fn many(users: usize, per_user: usize) -> String {
    let mut s = String::new();
    for u in 0..users {
        s.push_str(&format!("  u{u}:\n"));
        for p in 0..per_user {
            s.push_str(&format!("    - user: p{p}\n"));
        }
    }
    s
}

/// Alice: bob with clear_roaming, a group; carol: dave.
pub(crate) const THREE: &str = "  alice:\n    - user: bob\n      clear_roaming: true\n    - group: \"@TGS#2C5SZEAEF\"\n  carol:\n    - user: dave\n";

impl Env {
    pub(crate) fn new(fake: &Fake, absent: &str) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let manifest = dir.path().join("timctl.yaml");
        std::fs::write(&manifest, manifest_text(absent)).unwrap();
        let state = dir.path().join(".timctl/state.db");
        Env {
            dir,
            manifest,
            state,
            url: fake.url().to_owned(),
        }
    }

    pub(crate) fn write_manifest(&self, absent: &str) {
        std::fs::write(&self.manifest, manifest_text(absent)).unwrap();
    }

    /// `timctl ARGS` with this env's state, endpoint and key, no terminal on stdin.
    pub(crate) fn timctl(&self, args: &[&str]) -> Command {
        let mut cmd = timctl_tests::timctl();
        cmd.args(args)
            .current_dir(self.dir.path())
            .env("TIMCTL_STATE", &self.state)
            .env("TIMCTL_ENDPOINT", &self.url)
            .env("TIMCTL_SECRET_KEY", KEY)
            .env("COLUMNS", "400")
            .stdin(Stdio::null());
        cmd
    }

    /// `timctl apply -f MANIFEST --auto-approve ARGS`, started with stdout and stderr piped,
    /// for a test to act on while it runs (then `wait_with_output`).
    pub(crate) fn spawn_apply(&self, args: &[&str]) -> std::process::Child {
        let manifest = self.manifest.to_str().unwrap();
        let mut all = vec!["apply", "-f", manifest, "--auto-approve"];
        all.extend_from_slice(args);
        self.timctl(&all)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// `timctl apply -f MANIFEST --auto-approve ARGS`, waited for.
    pub(crate) fn apply(&self, args: &[&str]) -> Out {
        let manifest = self.manifest.to_str().unwrap();
        let mut all = vec!["apply", "-f", manifest, "--auto-approve"];
        all.extend_from_slice(args);
        self.timctl(&all).output().unwrap().into()
    }

    /// `timctl plan -f MANIFEST ARGS`.
    pub(crate) fn plan(&self, args: &[&str]) -> Out {
        let manifest = self.manifest.to_str().unwrap();
        let mut all = vec!["plan", "-f", manifest];
        all.extend_from_slice(args);
        self.timctl(&all).output().unwrap().into()
    }

    /// The state's entries, read through `timctl state list --json`, as (from, type:peer,
    /// clear_roaming), sorted.
    pub(crate) fn entries(&self) -> Vec<(String, String, bool)> {
        let mut v: Vec<_> = self
            .state_list()
            .entries
            .iter()
            .map(|e| (e.from.clone(), e.conversation(), e.clear_roaming))
            .collect();
        v.sort();
        v
    }

    /// The state's (lineage, serial), or `None` when there is none.
    pub(crate) fn state_ref(&self) -> Option<(String, u64)> {
        self.state_list().state_ref()
    }

    /// `timctl state list --json`, decoded.
    pub(crate) fn state_list(&self) -> StateList {
        StateList::read(&mut self.timctl(&["state", "list", "--json"]))
    }
}

/// A conversation as the fake saw it.
pub(crate) fn conv(from: &str, kind: u8, peer: &str, clear: bool) -> ConversationKey {
    ConversationKey {
        from: from.into(),
        kind,
        peer: peer.into(),
        clear_ramble: Some(u8::from(clear)),
    }
}

/// The conversations of `many(users, per_user)` with ClearRamble 0.
pub(crate) fn many_keys(users: usize, per_user: usize) -> Vec<ConversationKey> {
    let mut v = Vec::new();
    for u in 0..users {
        for p in 0..per_user {
            v.push(conv(&format!("u{u}"), 1, &format!("p{p}"), false));
        }
    }
    v.sort();
    v
}

/// Every file under `dir` (the state, its WAL and lock files, plan files), for secret checks.
pub(crate) fn all_bytes(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out
}

pub(crate) fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Parses `--json` output: one JSON object per line.
pub(crate) fn events(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}
