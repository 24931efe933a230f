//! The CI examples in `examples/ci/` run for real, so that an example never rots: the test reads
//! each workflow, takes every `timctl` command of each job's steps in order, and runs it with
//! bash and the real binary, in a temp dir holding `manifests/`, against fake-tim and a SQLite
//! state. Secrets and CI variables are replaced by the test's own (state = the SQLite file, key
//! = fake-tim's); everything else is the workflow's text. The shell around timctl that decides
//! something (which `cargo install` flag a ref takes, what replaces the plan comment on a
//! failure, the apply's summary comment, the guards against empty variables, publishing to
//! serve) runs for real too, with stand-ins for the CI's own tools (`gh`, `curl`, `cargo`,
//! `git` pushing to GitLab) that record what they were asked.

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

/// Stand-ins for the CI's own tools, first on PATH: each appends its command line to
/// `calls.log` in its directory; `gh api` prints `$FAKE_PR` (the pull request a commit came
/// from), `gh pr comment --body-file F` keeps F as `comment.md`, `curl --data-urlencode body@F`
/// keeps F as `note.md`. `cargo` and `git` only record.
struct Tools {
    dir: tempfile::TempDir,
}

impl Tools {
    fn new() -> Tools {
        let dir = tempfile::tempdir().unwrap();
        let tools = [
            (
                "gh",
                r#"case "$1" in
  api) echo "${FAKE_PR:-}" ;;
  pr) while [ $# -gt 0 ]; do [ "$1" = --body-file ] && cp "$2" "$TOOLS_DIR/comment.md"; shift; done ;;
esac"#,
            ),
            (
                "curl",
                r#"for a in "$@"; do case "$a" in body@*) cp "${a#body@}" "$TOOLS_DIR/note.md" ;; esac; done"#,
            ),
            ("cargo", ""),
            ("git", ""),
        ];
        for (name, body) in tools {
            let path = dir.path().join(name);
            std::fs::write(
                &path,
                format!("#!/bin/sh\necho \"{name} $*\" >>\"$TOOLS_DIR/calls.log\"\n{body}\n"),
            )
            .unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        Tools { dir }
    }

    /// What the tools were asked, one command line each.
    fn calls(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("calls.log")).unwrap_or_default()
    }

    fn kept(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name))
            .unwrap_or_else(|e| panic!("{name} was not kept: {e}\ncalls:\n{}", self.calls()))
    }
}

/// The `run:` script of the step named `step` in GitHub job `job`.
fn github_step<'a>(workflow: &'a Value, job: &str, step: &str) -> &'a str {
    workflow["jobs"][job]["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["name"] == step)
        .and_then(|s| s["run"].as_str())
        .unwrap_or_else(|| panic!("no step {step:?} with a script in job {job}"))
}

/// A GitLab job's `script` (or `after_script`, `before_script`), joined as the runner joins
/// them into one shell script.
fn gitlab_script(pipeline: &Value, job: &str, key: &str) -> String {
    pipeline[job][key]
        .as_array()
        .unwrap_or_else(|| panic!("{job} has no {key}"))
        .iter()
        .map(|l| l.as_str().expect("script lines are strings"))
        .collect::<Vec<_>>()
        .join("\n")
}

const GITHUB: [&str; 2] = [
    "examples/ci/github/timctl.yml",
    "examples/ci/github/timctl-with-serve.yml",
];
const GITLAB: [&str; 2] = [
    "examples/ci/gitlab/.gitlab-ci.yml",
    "examples/ci/gitlab/with-serve.gitlab-ci.yml",
];

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

    /// The file GitHub's `$GITHUB_STEP_SUMMARY` names.
    fn step_summary(&self) -> PathBuf {
        self.path().join("step-summary.md")
    }

    /// Runs a whole shell `script` (a step's `run:`, a GitLab job's script) as the CI would
    /// (`bash -eo pipefail`), with `env` and then `extra`, the stand-ins of `tools` first on
    /// PATH, then timctl unless `without_timctl`.
    fn script(
        &self,
        script: &str,
        env: &BTreeMap<String, String>,
        extra: &[(&str, &str)],
        tools: &Tools,
        without_timctl: bool,
    ) -> Out {
        let timctl_dir = timctl_tests::timctl_bin().parent().unwrap().to_owned();
        let system: Vec<PathBuf> = if without_timctl {
            vec!["/usr/bin".into(), "/bin".into()]
        } else {
            std::iter::once(timctl_dir)
                .chain(std::env::split_paths(
                    &std::env::var_os("PATH").unwrap_or_default(),
                ))
                .collect()
        };
        let path = std::env::join_paths(std::iter::once(tools.dir.path().to_owned()).chain(system))
            .unwrap();
        let mut cmd = Command::new("bash");
        cmd.args(["--noprofile", "--norc", "-eo", "pipefail", "-c", script])
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
        cmd.envs(env)
            .env("PATH", &path)
            .env("TIMCTL_ENDPOINT", &self.url)
            .env("NO_COLOR", "1")
            .env("GITHUB_STEP_SUMMARY", self.step_summary())
            .env("TOOLS_DIR", tools.dir.path());
        for (k, v) in extra {
            cmd.env(k, v);
        }
        cmd.output().unwrap().into()
    }

    fn read(&self, relative: &str) -> String {
        std::fs::read_to_string(self.path().join(relative))
            .unwrap_or_else(|e| panic!("{relative}: {e}"))
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
                    .env("NO_COLOR", "1")
                    // What GitHub gives every step: the file its summary is appended to.
                    .env("GITHUB_STEP_SUMMARY", self.step_summary());
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
    for file in GITHUB {
        github_pull_request_job(file);
    }
}

fn github_pull_request_job(file: &str) {
    let workflow = read_yaml(file);
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

    // The drift alarm's plans are on the run's page (the step summary): the one that fired
    // names bob.
    let summary = checkout.read("step-summary.md");
    assert!(
        summary.contains("### timctl plan") && summary.contains("bob"),
        "{summary}"
    );

    // The last apply deleted bob's conversation again: its summary goes to the step summary
    // and, as a comment, to the pull request merged into the commit.
    let summarize = github_step(&workflow, "apply", "Summarize");
    let tools = Tools::new();
    let ci = [
        ("FAKE_PR", "42"),
        ("GITHUB_EVENT_NAME", "push"),
        ("GITHUB_REPOSITORY", "acme/chat-manifests"),
        ("GITHUB_SHA", "0123456789abcdef0123456789abcdef01234567"),
        (
            "RUN_URL",
            "https://github.com/acme/chat-manifests/actions/runs/7",
        ),
    ];
    let out = checkout.script(summarize, &apply.env, &ci, &tools, false);
    assert_eq!(out.code, Some(0), "{}", out.all());
    let comment = tools.kept("comment.md");
    assert!(
        comment.starts_with("### timctl apply: 1 deleted, 0 recorded, 0 forgotten, 0 failed"),
        "{comment}"
    );
    assert!(comment.contains("- alice: user:bob"), "{comment}");
    assert!(
        tools
            .calls()
            .contains("gh pr comment 42 --repo acme/chat-manifests")
    );
    assert!(checkout.read("step-summary.md").ends_with(&comment));

    // A message brings it back once more, and an apply over its --max-deletes is refused: the
    // summary says so, and how to go on.
    fake.send_message("alice", FakePeer::user("bob"));
    let mut strict = apply;
    strict.env.insert("MAX_DELETES".into(), "0".into());
    let results = checkout.run(&strict);
    assert_eq!(results.last().unwrap().1.code, Some(1), "{results:?}");
    let tools = Tools::new();
    let out = checkout.script(summarize, &strict.env, &ci, &tools, false);
    assert_eq!(out.code, Some(0), "{}", out.all());
    let comment = tools.kept("comment.md");
    assert!(comment.contains("**Refused or failed:**"), "{comment}");
    assert!(comment.contains("--max-deletes 0"), "{comment}");
    assert!(
        fake.conversations("alice").len() == 1,
        "the refused apply deleted nothing"
    );

    // A run by hand (or a push without a pull request) comments nowhere.
    let tools = Tools::new();
    let by_hand = [
        ("GITHUB_EVENT_NAME", "workflow_dispatch"),
        ci[2],
        ci[3],
        ci[4],
    ];
    let out = checkout.script(summarize, &strict.env, &by_hand, &tools, false);
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(!tools.calls().contains("gh"), "{}", tools.calls());
}

#[test]
fn gitlab_merge_request_job_validates_and_plans_without_the_key() {
    for file in GITLAB {
        gitlab_merge_request_job(file);
    }
}

fn gitlab_merge_request_job(file: &str) {
    let pipeline = read_yaml(file);
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

/// The GitHub jobs that install timctl, with their install scripts.
fn github_installs(workflow: &Value) -> Vec<(String, String)> {
    workflow["jobs"]
        .as_object()
        .unwrap()
        .iter()
        .filter_map(|(name, job)| {
            let step = job["steps"]
                .as_array()?
                .iter()
                .find(|s| s["name"] == "Install timctl")?;
            Some((name.clone(), step["run"].as_str()?.to_owned()))
        })
        .collect()
}

#[test]
fn a_sha_installs_with_rev_and_a_tag_with_tag() {
    const SHA: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";
    let fake = Fake::start(|_| {});
    let checkout = Checkout::new(&fake);
    let mut scripts = Vec::new();
    for file in GITHUB {
        let workflow = read_yaml(file);
        let installs = github_installs(&workflow);
        assert!(installs.len() >= 2, "{file}: {installs:?}");
        scripts.extend(
            installs
                .into_iter()
                .map(|(job, script)| (format!("{file} {job}"), script)),
        );
    }
    for file in GITLAB {
        let pipeline = read_yaml(file);
        scripts.push((
            format!("{file} .timctl"),
            gitlab_script(&pipeline, ".timctl", "before_script"),
        ));
    }
    for (what, script) in &scripts {
        for (reference, flag) in [(SHA, "--rev"), ("v0.1.0", "--tag")] {
            let tools = Tools::new();
            let env = BTreeMap::from([
                (
                    "TIMCTL_GIT".to_owned(),
                    "https://example.com/timctl".to_owned(),
                ),
                ("TIMCTL_REF".to_owned(), reference.to_owned()),
                (
                    "CI_PROJECT_DIR".to_owned(),
                    checkout.path().display().to_string(),
                ),
            ]);
            let out = checkout.script(script, &env, &[], &tools, true);
            assert_eq!(out.code, Some(0), "{what}: {}", out.all());
            let calls = tools.calls();
            assert!(
                calls.starts_with("cargo install --locked")
                    && calls.contains(&format!("{flag} {reference} timctl"))
                    && calls.lines().count() == 1,
                "{what} with {reference}: {calls}"
            );
        }
    }
}

#[test]
fn github_a_failed_validate_or_plan_replaces_the_plan_comment_with_the_failure() {
    for file in GITHUB {
        let workflow = read_yaml(file);
        let fake = Fake::start(|_| {});
        let checkout = Checkout::new(&fake);
        let job = github_job(&workflow, "pull-request", &checkout.secrets());
        let failure = github_step(
            &workflow,
            "pull-request",
            "Put the failure in the comment instead",
        );
        let tools = Tools::new();
        let outcome = |validate: &str, plan: &str| {
            let extra = [
                ("VALIDATE", validate),
                ("PLAN", plan),
                ("RUN_URL", "https://github.com/acme/m/actions/runs/9"),
            ];
            let out = checkout.script(failure, &job.env, &extra, &tools, false);
            assert_eq!(out.code, Some(0), "{file}: {}", out.all());
            checkout.read("plan.md")
        };

        // A manifest that does not validate: the comment names the file, line and problem.
        std::fs::write(
            checkout.path().join("manifests/team.yaml"),
            "version: 1\nabsent:\n  alice:\n    - usr: bob\n",
        )
        .unwrap();
        let results = checkout.run(&job);
        assert_eq!(results[0].1.code, Some(1), "{file}: {results:?}");
        let comment = outcome("failure", "skipped");
        assert!(
            comment.starts_with("### timctl: validate failed, no plan"),
            "{file}: {comment}"
        );
        assert!(
            comment.contains("manifests/team.yaml:4:7: unknown field `usr`"),
            "{file}: {comment}"
        );

        // Valid manifests, a state that is not one: the comment quotes the plan's error.
        std::fs::write(
            checkout.path().join("manifests/team.yaml"),
            "version: 1\nabsent:\n  alice:\n    - user: bob\n",
        )
        .unwrap();
        std::fs::write(checkout.path().join("state.db"), "not a database").unwrap();
        let results = checkout.run(&job);
        assert_eq!(results[0].1.code, Some(0), "{file}: {results:?}");
        assert_eq!(results[1].1.code, Some(1), "{file}: {results:?}");
        let errors = checkout.read("plan-errors.txt");
        assert!(
            !errors.trim().is_empty(),
            "{file}: the plan's error is kept"
        );
        let comment = outcome("success", "failure");
        assert!(
            comment.starts_with("### timctl: plan failed"),
            "{file}: {comment}"
        );
        assert!(comment.contains(errors.trim()), "{file}: {comment}");
        assert!(!comment.contains(KEY));
    }
}

#[test]
fn gitlab_merge_request_note_is_the_plan_or_the_failure_and_no_state_means_no_plan() {
    for file in GITLAB {
        let pipeline = read_yaml(file);
        let fake = Fake::start(|_| {});
        let checkout = Checkout::new(&fake);
        let script = gitlab_script(&pipeline, "plan", "script");
        let after = gitlab_script(&pipeline, "plan", "after_script");
        let job = gitlab_job(&pipeline, "plan", &checkout.secrets(), &[]);
        let note_vars = |status: &'static str| {
            [
                ("CI_JOB_STATUS", status),
                ("TIMCTL_NOTE_TOKEN", "note-token"),
                ("CI_API_V4_URL", "https://gitlab.example.com/api/v4"),
                ("CI_PROJECT_ID", "7"),
                ("CI_MERGE_REQUEST_IID", "3"),
                ("CI_COMMIT_SHORT_SHA", "0123abcd"),
                ("CI_JOB_URL", "https://gitlab.example.com/acme/m/-/jobs/11"),
            ]
        };

        // The whole script, as the runner runs it: the plan, then posted as a note.
        let out = checkout.script(&script, &job.env, &[], &Tools::new(), false);
        assert_eq!(out.code, Some(0), "{file}: {}", out.all());
        let plan = checkout.read("plan.md");
        assert!(
            plan.starts_with("### timctl plan: 3 to delete"),
            "{file}: {plan}"
        );
        let tools = Tools::new();
        let out = checkout.script(&after, &job.env, &note_vars("success"), &tools, false);
        assert_eq!(out.code, Some(0), "{file}: {}", out.all());
        assert_eq!(tools.kept("note.md"), plan, "{file}");
        assert!(
            tools
                .calls()
                .contains("https://gitlab.example.com/api/v4/projects/7/merge_requests/3/notes"),
            "{file}: {}",
            tools.calls()
        );

        // A broken manifest: the job fails, and the note is the failure, naming file:line.
        std::fs::write(
            checkout.path().join("manifests/team.yaml"),
            "version: 1\nabsent:\n  alice:\n    - usr: bob\n",
        )
        .unwrap();
        let out = checkout.script(&script, &job.env, &[], &Tools::new(), false);
        assert_eq!(out.code, Some(1), "{file}: {}", out.all());
        let tools = Tools::new();
        let out = checkout.script(&after, &job.env, &note_vars("failed"), &tools, false);
        assert_eq!(out.code, Some(0), "{file}: {}", out.all());
        let note = tools.kept("note.md");
        assert!(
            note.starts_with("### timctl: validate or plan failed for 0123abcd"),
            "{file}: {note}"
        );
        assert!(note.contains("team.yaml:4:7"), "{file}: {note}");

        // No read-only state for this pipeline (a fork, a missing variable: empty, or the
        // reference left as it is): validated, not planned, no state created.
        std::fs::write(
            checkout.path().join("manifests/team.yaml"),
            "version: 1\nabsent:\n  alice:\n    - user: bob\n",
        )
        .unwrap();
        for state in ["", "$TIMCTL_STATE_READONLY"] {
            let mut env = job.env.clone();
            env.insert("TIMCTL_STATE".into(), state.into());
            let out = checkout.script(&script, &env, &[], &Tools::new(), false);
            assert_eq!(out.code, Some(0), "{file}: {}", out.all());
            assert!(
                checkout.read("plan.md").contains("not planned"),
                "{file}: {}",
                out.all()
            );
            assert!(!checkout.path().join(".timctl").exists(), "{file}");
        }
        // Without the note token: nothing is posted, and the job is not failed for it.
        let tools = Tools::new();
        let mut vars = note_vars("success").to_vec();
        vars.retain(|(k, _)| *k != "TIMCTL_NOTE_TOKEN");
        let out = checkout.script(&after, &job.env, &vars, &tools, false);
        assert_eq!(out.code, Some(0), "{file}: {}", out.all());
        assert!(tools.calls().is_empty(), "{file}: {}", tools.calls());
        assert_eq!(fake.stats().requests, 0);
    }
}

#[test]
fn apply_and_drift_jobs_refuse_to_run_without_their_secrets() {
    let fake = Fake::start(|_| {});
    let checkout = Checkout::new(&fake);
    let secrets = checkout.secrets();
    let workflow = read_yaml("examples/ci/github/timctl.yml");
    let pipeline = read_yaml("examples/ci/gitlab/.gitlab-ci.yml");
    let vars = ["TIMCTL_STATE", "TIMCTL_SECRET_KEY"];
    let cases = [
        (
            "github apply",
            github_step(&workflow, "apply", "Check the secrets").to_owned(),
            github_job(&workflow, "apply", &secrets).env,
        ),
        (
            "github drift",
            github_step(&workflow, "drift", "Check the secrets").to_owned(),
            github_job(&workflow, "drift", &secrets).env,
        ),
        (
            "gitlab apply",
            gitlab_script(&pipeline, "apply", "script"),
            gitlab_job(&pipeline, "apply", &secrets, &vars).env,
        ),
        (
            "gitlab drift",
            gitlab_script(&pipeline, "drift", "script"),
            gitlab_job(&pipeline, "drift", &secrets, &vars).env,
        ),
    ];
    for (what, script, env) in &cases {
        for missing in vars {
            let mut env = env.clone();
            env.insert(missing.into(), String::new());
            let out = checkout.script(script, &env, &[], &Tools::new(), false);
            assert_eq!(out.code, Some(1), "{what} without {missing}: {}", out.all());
            assert!(out.stdout.contains("must be set") || out.stdout.contains("is not set"));
        }
    }
    assert_eq!(fake.stats().requests, 0);
    assert!(!checkout.path().join(".timctl").exists());
    assert!(!checkout.path().join("state.db").exists());
}

#[test]
fn the_drift_alarm_waits_for_no_reviewer_reads_with_the_read_only_role_and_runs_by_hand() {
    let workflow = read_yaml("examples/ci/github/timctl.yml");
    let drift = &workflow["jobs"]["drift"];
    assert_eq!(drift["environment"], "drift");
    assert_eq!(
        drift["env"]["TIMCTL_STATE"],
        "${{ secrets.TIMCTL_STATE_READONLY }}"
    );
    // Run by hand: a choice between the alarm and an apply.
    let input = &workflow["on"]["workflow_dispatch"]["inputs"]["action"];
    assert_eq!(input["type"], "choice");
    assert_eq!(input["options"], serde_json::json!(["drift", "apply"]));
    for job in ["apply", "drift"] {
        let condition = workflow["jobs"][job]["if"].as_str().unwrap();
        assert!(
            condition.contains(&format!("inputs.action == '{job}'")),
            "{job}: {condition}"
        );
    }
    let pipeline = read_yaml("examples/ci/gitlab/.gitlab-ci.yml");
    assert_eq!(pipeline["drift"]["environment"]["name"], "drift");
    assert_eq!(
        pipeline["drift"]["variables"]["TIMCTL_STATE"],
        "$TIMCTL_STATE_READONLY"
    );
}

#[test]
fn actions_are_pinned_by_full_sha_and_images_by_version() {
    for file in GITHUB {
        let text = std::fs::read_to_string(root().join(file)).unwrap();
        let uses: Vec<&str> = text
            .lines()
            .filter_map(|l| l.trim().trim_start_matches("- ").strip_prefix("uses: "))
            .collect();
        assert!(!uses.is_empty(), "{file}");
        for u in uses {
            let (action, rest) = u.split_once('@').unwrap_or_else(|| panic!("{file}: {u}"));
            let (sha, comment) = rest.split_once(" # v").unwrap_or((rest, ""));
            assert!(
                sha.len() == 40 && sha.bytes().all(|b| b.is_ascii_hexdigit()),
                "{file}: {action} is not pinned by a full SHA: {u}"
            );
            assert!(
                comment.split('.').count() == 3,
                "{file}: {action}: the release is not in a comment: {u}"
            );
        }
    }
    for file in GITLAB {
        let pipeline = read_yaml(file);
        let image = pipeline[".timctl"]["image"].as_str().unwrap();
        let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or("");
        let version = tag.split('-').next().unwrap();
        assert!(
            version.split('.').count() == 3 && version.split('.').all(|p| p.parse::<u32>().is_ok()),
            "{file}: the image is not pinned to a release: {image}"
        );
    }
}

#[test]
fn with_serve_ci_never_applies_holds_no_key_and_publishes_only_validated_manifests() {
    for file in GITHUB[1..].iter().chain(&GITLAB[1..]) {
        let text = std::fs::read_to_string(root().join(file)).unwrap();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .collect();
        for l in &lines {
            assert!(!l.contains("timctl apply"), "{file}: {l}");
            assert!(!l.contains("--refresh"), "{file}: {l}");
            assert!(!l.contains("TIMCTL_SECRET_KEY"), "{file}: {l}");
            assert!(!l.contains("schedule"), "{file}: {l}");
        }
    }

    // GitHub: validate, then a fast-forward push of main to `published`, for real into a bare
    // repository standing in for GitHub.
    let workflow = read_yaml(GITHUB[1]);
    let fake = Fake::start(|_| {});
    let checkout = Checkout::new(&fake);
    let publish = github_job(&workflow, "publish", &checkout.secrets());
    assert_eq!(publish.commands.len(), 1, "{publish:?}");
    assert!(publish.commands[0].starts_with("timctl validate"));
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(["-c", "user.name=ci", "-c", "user.email=ci@example.invalid"])
            .args(args)
            .current_dir(checkout.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let origin = tempfile::tempdir().unwrap();
    let origin_path = origin.path().to_str().unwrap();
    git(&["init", "-q", "--bare", origin_path]);
    git(&["init", "-q"]);
    git(&["add", "manifests"]);
    git(&["commit", "-qm", "manifests"]);
    git(&["remote", "add", "origin", origin_path]);
    let results = checkout.run(&publish);
    assert_all(&results, 0, &publish);
    let step = github_step(&workflow, "publish", "Publish");
    // With the real git (script() would put the stand-in first on PATH).
    let real = Command::new("bash")
        .args(["--noprofile", "--norc", "-eo", "pipefail", "-c", step])
        .current_dir(checkout.path())
        .envs(&publish.env)
        .env("GITHUB_SHA", git(&["rev-parse", "HEAD"]))
        .env("GITHUB_STEP_SUMMARY", checkout.step_summary())
        .output()
        .unwrap();
    assert!(
        real.status.success(),
        "{}",
        String::from_utf8_lossy(&real.stderr)
    );
    let head = git(&["rev-parse", "HEAD"]);
    let published = Command::new("git")
        .args([
            "--git-dir",
            origin_path,
            "rev-parse",
            "refs/heads/published",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&published.stdout).trim(), head);
    assert!(checkout.read("step-summary.md").contains("Published"));

    // GitLab: the push goes to the project's URL with the publish token; none without it,
    // and none when the manifests do not validate.
    let pipeline = read_yaml(GITLAB[1]);
    let script = gitlab_script(&pipeline, "publish", "script");
    let job = gitlab_job(&pipeline, "publish", &checkout.secrets(), &[]);
    let vars = [
        ("TIMCTL_PUBLISH_TOKEN", "publish-token"),
        ("CI_SERVER_HOST", "gitlab.example.com"),
        ("CI_PROJECT_PATH", "acme/chat-manifests"),
    ];
    let tools = Tools::new();
    let out = checkout.script(&script, &job.env, &vars, &tools, false);
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert_eq!(
        tools.calls().trim(),
        "git push https://timctl-publish:publish-token@gitlab.example.com/acme/chat-manifests.git HEAD:refs/heads/published"
    );
    let tools = Tools::new();
    let out = checkout.script(&script, &job.env, &vars[1..], &tools, false);
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(tools.calls().is_empty());
    std::fs::write(
        checkout.path().join("manifests/team.yaml"),
        "version: 1\nabsent:\n  alice:\n    - usr: bob\n",
    )
    .unwrap();
    let tools = Tools::new();
    let out = checkout.script(&script, &job.env, &vars, &tools, false);
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(
        tools.calls().is_empty(),
        "nothing published: {}",
        tools.calls()
    );
    assert_eq!(fake.stats().requests, 0);
}
