//! The CI examples in `examples/ci/` run for real, so that an example never rots: the test reads
//! each workflow, takes every `timctl` command of each job's steps in order, and runs it with
//! bash and the real binary, in a temp dir holding `manifests/`, against fake-tim and a SQLite
//! state. Secrets and CI variables are replaced by the test's own (state = the SQLite file, key
//! = fake-tim's); everything else is the workflow's text.

mod apply_common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use apply_common::{APP, Fake, KEY, Out, conv};
use serde_json::Value;
use timctl_tests::FakePeer;
use timctl_tests::state_list::StateList;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn read_yaml(relative: &str) -> Value {
    let text = std::fs::read_to_string(root().join(relative)).unwrap();
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

/// The shell lines of a script that run timctl, with `\`-continued lines joined.
fn timctl_lines(script: &str) -> Vec<String> {
    script
        .replace("\\\n", " ")
        .lines()
        .map(str::trim)
        .filter(|l| l.split_whitespace().next() == Some("timctl"))
        .map(str::to_owned)
        .collect()
}

/// One CI job as the test runs it: its timctl commands, in order, and its environment.
#[derive(Debug)]
struct Job {
    name: String,
    commands: Vec<String>,
    env: BTreeMap<String, String>,
}

/// What a CI system would hand the workflows in its secrets or settings: the state (a SQLite
/// file here, a PostgreSQL URL in production) and the key.
struct Secrets {
    state: PathBuf,
}

impl Secrets {
    fn get(&self, name: &str) -> String {
        match name {
            "TIMCTL_STATE" | "TIMCTL_STATE_READONLY" => self.state.to_str().unwrap().to_owned(),
            "TIMCTL_SECRET_KEY" => KEY.to_owned(),
            other => panic!("the workflow uses a secret the test does not know: {other}"),
        }
    }
}

/// A GitHub Actions job: `env` of the workflow, the job and each step (`${{ secrets.X }}`
/// replaced), and the `run:` lines of its steps that invoke timctl.
fn github_job(workflow: &Value, name: &str, secrets: &Secrets) -> Job {
    let job = &workflow["jobs"][name];
    assert!(job.is_object(), "no job {name}");
    let resolve = |value: &Value| -> String {
        let text = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        match text.trim().strip_prefix("${{") {
            None => text,
            Some(expr) => {
                let expr = expr.trim_end_matches("}}").trim();
                let secret = expr.strip_prefix("secrets.").unwrap_or_else(|| {
                    panic!("{name}: an expression the test cannot supply: {text}")
                });
                secrets.get(secret)
            }
        }
    };
    let mut env = BTreeMap::new();
    for scope in [&workflow["env"], &job["env"]] {
        for (k, v) in scope.as_object().into_iter().flatten() {
            env.insert(k.clone(), resolve(v));
        }
    }
    let mut commands = Vec::new();
    for step in job["steps"].as_array().expect("steps") {
        let Some(run) = step["run"].as_str() else {
            continue;
        };
        let lines = timctl_lines(run);
        if !lines.is_empty() {
            assert!(
                step["env"].is_null(),
                "{name}: step-level env is not supported by this test"
            );
        }
        commands.extend(lines);
    }
    Job {
        name: format!("github {name}"),
        commands,
        env,
    }
}

/// A GitLab CI job: the global and the job's `variables` (a `$VAR` value read from the
/// project's CI/CD variables, i.e. `secrets`), plus the project's variables the job may see,
/// and the `script:` lines that invoke timctl.
fn gitlab_job(pipeline: &Value, name: &str, secrets: &Secrets, project_vars: &[&str]) -> Job {
    let job = &pipeline[name];
    assert!(job.is_object(), "no job {name}");
    let mut env = BTreeMap::new();
    for var in project_vars {
        env.insert((*var).to_owned(), secrets.get(var));
    }
    for scope in [&pipeline["variables"], &job["variables"]] {
        for (k, v) in scope.as_object().into_iter().flatten() {
            let text = v
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| v.to_string());
            let value = match text.strip_prefix('$') {
                Some(var) => secrets.get(var),
                None => text,
            };
            env.insert(k.clone(), value);
        }
    }
    let commands = job["script"]
        .as_array()
        .expect("script")
        .iter()
        .flat_map(|line| timctl_lines(line.as_str().expect("script lines are strings")))
        .collect();
    Job {
        name: format!("gitlab {name}"),
        commands,
        env,
    }
}

/// A temp dir as a CI checkout: `manifests/` with the app block in one file and the entries in
/// another (a set that only validates whole).
struct Checkout {
    dir: tempfile::TempDir,
    url: String,
}

impl Checkout {
    fn new(fake: &Fake) -> Checkout {
        let dir = tempfile::tempdir().unwrap();
        let manifests = dir.path().join("manifests");
        std::fs::create_dir(&manifests).unwrap();
        std::fs::write(
            manifests.join("app.yaml"),
            format!(
                "version: 1\napp:\n  sdkappid: {APP}\n  region: singapore\n  admin: administrator\n"
            ),
        )
        .unwrap();
        std::fs::write(
            manifests.join("team.yaml"),
            "version: 1\nabsent:\n  alice:\n    - user: bob\n    - group: \"@TGS#2C5SZEAEF\"\n  carol:\n    - user: dave\n",
        )
        .unwrap();
        Checkout {
            dir,
            url: fake.url().to_owned(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn secrets(&self) -> Secrets {
        Secrets {
            state: self.path().join("state.db"),
        }
    }

    /// Runs `job`'s timctl commands in order, as its CI would (bash, exit on a failure in a
    /// pipeline), and returns each command with what it came to. The endpoint is fake-tim's:
    /// the one thing that differs from production, where it comes from the manifest's region.
    fn run(&self, job: &Job) -> Vec<(String, Out)> {
        assert!(!job.commands.is_empty(), "{}: no timctl command", job.name);
        let bin_dir = timctl_tests::timctl_bin().parent().unwrap().to_owned();
        let path = std::env::join_paths(std::iter::once(bin_dir).chain(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        )))
        .unwrap();
        job.commands
            .iter()
            .map(|line| {
                let mut cmd = Command::new("bash");
                cmd.args(["--noprofile", "--norc", "-eo", "pipefail", "-c", line])
                    .current_dir(self.path())
                    .stdin(Stdio::null());
                for var in [
                    "TIMCTL_STATE",
                    "TIMCTL_ENDPOINT",
                    "TIMCTL_SECRET_KEY",
                    "TIMCTL_SECRET_KEY_FILE",
                    "TIMCTL_USERSIG",
                    "TIMCTL_LOG",
                ] {
                    cmd.env_remove(var);
                }
                cmd.envs(&job.env)
                    .env("PATH", &path)
                    .env("TIMCTL_ENDPOINT", &self.url)
                    .env("NO_COLOR", "1");
                (line.clone(), cmd.output().unwrap().into())
            })
            .collect()
    }
}

/// Asserts that every command of `job` exited `code`.
fn assert_all(results: &[(String, Out)], code: i32, job: &Job) {
    for (line, out) in results {
        assert_eq!(
            out.code,
            Some(code),
            "{}: `{line}`\n{}",
            job.name,
            out.all()
        );
    }
}

/// The three manifest conversations are in the state after the apply job. With `--refresh`,
/// each is deleted when the server lists it, or recorded as absent with no call when it does
/// not: either way the state holds all three, and no call went anywhere else.
fn three_in_state(fake: &Fake, checkout: &Checkout) {
    let listed = StateList::read(
        timctl_tests::timctl()
            .args(["state", "list", "--json"])
            .env("TIMCTL_STATE", checkout.secrets().state),
    );
    let mut got: Vec<(String, String, String)> = listed
        .entries
        .iter()
        .map(|e| (e.from.clone(), e.kind.clone(), e.peer.clone()))
        .collect();
    got.sort();
    let want = [
        ("alice", "group", "@TGS#2C5SZEAEF"),
        ("alice", "user", "bob"),
        ("carol", "user", "dave"),
    ]
    .map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned()));
    assert_eq!(got, want, "{listed:?}");
    let allowed = [
        conv("alice", 1, "bob", false),
        conv("alice", 2, "@TGS#2C5SZEAEF", false),
        conv("carol", 1, "dave", false),
    ];
    for key in fake.deletions().keys() {
        assert!(allowed.contains(key), "an unexpected deletion: {key:?}");
    }
}

#[test]
fn github_pull_request_job_validates_and_plans_without_the_key() {
    let workflow = read_yaml("examples/ci/github/timctl.yml");
    let fake = Fake::start(|_| {});
    let checkout = Checkout::new(&fake);
    let job = github_job(&workflow, "pull-request", &checkout.secrets());
    assert!(
        !job.env.contains_key("TIMCTL_SECRET_KEY"),
        "no key in pull-request jobs"
    );
    assert_eq!(job.commands.len(), 2, "{job:?}");
    assert!(job.commands[0].contains("--format github"));
    let results = checkout.run(&job);
    assert_all(&results, 0, &job);
    let plan = std::fs::read_to_string(checkout.path().join("plan.md")).unwrap();
    assert!(
        plan.starts_with("### timctl plan: 3 to delete"),
        "the comment is the markdown plan:\n{plan}"
    );
    assert_eq!(fake.stats().requests, 0, "a pull request calls nothing");

    // A broken manifest: the validate step fails with an annotation on the file and line.
    std::fs::write(
        checkout.path().join("manifests/team.yaml"),
        "version: 1\nabsent:\n  alice:\n    - usr: bob\n",
    )
    .unwrap();
    let results = checkout.run(&job);
    let (_, validate) = &results[0];
    assert_eq!(validate.code, Some(1), "{}", validate.all());
    assert!(
        validate
            .stdout
            .contains("::error file=manifests/team.yaml,line=4"),
        "{}",
        validate.all()
    );
}

#[test]
fn github_main_and_schedule_jobs_apply_then_raise_the_drift_alarm() {
    let workflow = read_yaml("examples/ci/github/timctl.yml");
    let fake = Fake::start(|_| {});
    let checkout = Checkout::new(&fake);
    let secrets = checkout.secrets();
    let apply = github_job(&workflow, "apply", &secrets);
    let drift = github_job(&workflow, "drift", &secrets);
    main_then_schedule(&fake, &checkout, &apply, &drift);
}

#[test]
fn gitlab_merge_request_job_validates_and_plans_without_the_key() {
    let pipeline = read_yaml("examples/ci/gitlab/.gitlab-ci.yml");
    let fake = Fake::start(|_| {});
    let checkout = Checkout::new(&fake);
    // Protected variables do not reach merge-request pipelines: only the read-only state.
    let job = gitlab_job(&pipeline, "plan", &checkout.secrets(), &[]);
    assert!(!job.env.contains_key("TIMCTL_SECRET_KEY"));
    assert_eq!(job.commands.len(), 2, "{job:?}");
    let results = checkout.run(&job);
    assert_all(&results, 0, &job);
    let plan = std::fs::read_to_string(checkout.path().join("plan.md")).unwrap();
    assert!(plan.starts_with("### timctl plan: 3 to delete"), "{plan}");
    assert_eq!(results[1].1.stdout, plan, "the log shows the plan too");
    assert_eq!(fake.stats().requests, 0);
}

#[test]
fn gitlab_default_branch_and_schedule_jobs_apply_then_raise_the_drift_alarm() {
    let pipeline = read_yaml("examples/ci/gitlab/.gitlab-ci.yml");
    let fake = Fake::start(|_| {});
    let checkout = Checkout::new(&fake);
    let secrets = checkout.secrets();
    // The protected variables, scoped to the production environment these jobs run in.
    let vars = ["TIMCTL_STATE", "TIMCTL_SECRET_KEY"];
    let apply = gitlab_job(&pipeline, "apply", &secrets, &vars);
    let drift = gitlab_job(&pipeline, "drift", &secrets, &vars);
    main_then_schedule(&fake, &checkout, &apply, &drift);
}

/// The main-branch job applies (the JSON events kept in a file); the scheduled drift alarm
/// then stays quiet, fires (exit 2) once a deleted conversation is back on the server, and is
/// quiet again after the next apply.
fn main_then_schedule(fake: &Fake, checkout: &Checkout, apply: &Job, drift: &Job) {
    assert!(
        apply.commands.iter().any(|c| c.contains("--refresh")
            && c.contains("--auto-approve")
            && c.contains("--max-deletes")),
        "{apply:?}"
    );
    assert_eq!(drift.commands.len(), 1, "{drift:?}");
    assert!(
        drift.commands[0].contains("--refresh") && drift.commands[0].contains("--drift-exitcode")
    );
    // On the server: two of the three conversations; the group is not in alice's list.
    fake.seed_conversations("alice", [FakePeer::user("bob")], false);
    fake.seed_conversations("carol", [FakePeer::user("dave")], false);

    let results = checkout.run(apply);
    assert_all(&results, 0, apply);
    three_in_state(fake, checkout);
    let events = std::fs::read_to_string(checkout.path().join("apply-events.jsonl")).unwrap();
    let last: Value = serde_json::from_str(events.lines().last().expect("events")).unwrap();
    assert_eq!(last["event"], "summary", "{events}");
    assert!(!events.contains(KEY), "the key is never in the events");
    assert!(fake.conversations("alice").is_empty() && fake.conversations("carol").is_empty());

    // Right after an apply the server matches the manifest: the alarm is quiet.
    let results = checkout.run(drift);
    assert_all(&results, 0, drift);

    // A new message brings alice's conversation with bob back: the alarm fires, naming it.
    fake.send_message("alice", FakePeer::user("bob"));
    let results = checkout.run(drift);
    assert_all(&results, 2, drift);
    let (_, out) = &results[0];
    assert!(out.stdout.contains("bob"), "{}", out.all());

    // The next apply deletes it again, and the alarm is quiet.
    let results = checkout.run(apply);
    assert_all(&results, 0, apply);
    assert!(fake.conversations("alice").is_empty());
    let results = checkout.run(drift);
    assert_all(&results, 0, drift);
}
