//! serve's deployment kit in `examples/serve/` runs for real, so that it never rots: the systemd
//! unit's `ExecStart=` with its `Environment=` and credentials, and the Kubernetes Deployment's
//! timctl container (its `args` and `env`, the state on a real PostgreSQL), each started as the
//! real binary against fake-tim, which posts a signed callback that serve must act on. What
//! differs from production is only where things are: absolute paths are rooted in a temp dir
//! (`/etc/timctl/manifests` becomes `ROOT/etc/timctl/manifests`), the listen ports are free
//! loopback ones, the endpoint is fake-tim's, and the Deployment's database URL is the test
//! cluster's. The Prometheus rules are checked against what serve's /metrics really exports.

mod apply_common;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use timctl_tests::ports::free_addr;

use apply_common::{APP, Fake, KEY, wait_for};
use serde_json::Value;
use timctl_tests::callbacks::{self, CallbackAnswer, CallbackTarget};
use timctl_tests::pg::PgCluster;

/// The callback token "set in the console"; it must never show up in serve's logs.
const TOKEN: &str = "serve-kit-callback-token-8d1e";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(root().join(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

/// The manifest serve enforces in these tests: alice must have no conversation with bob.
fn manifest() -> String {
    format!(
        "version: 1\napp:\n  sdkappid: {APP}\n  region: singapore\n  admin: administrator\nabsent:\n  alice:\n    - user: bob\n"
    )
}

/// `path` (absolute in the example) under the test's root directory.
fn rooted(root: &Path, path: &str) -> PathBuf {
    assert!(path.starts_with('/'), "not an absolute path: {path}");
    root.join(path.trim_start_matches('/'))
}

/// A `timctl serve` started from an example's command line.
struct Serve {
    child: Option<Child>,
    ops: String,
    rt: tokio::runtime::Runtime,
}

impl Serve {
    /// Starts `args` (after the binary) with exactly `env` (plus fake-tim's endpoint), and
    /// waits for `readiness` on the ops listener `ops` to answer 200.
    fn start(
        args: &[String],
        env: &BTreeMap<String, String>,
        ops: &str,
        readiness: &str,
        fake: &Fake,
    ) -> Serve {
        let child = timctl_tests::timctl()
            .args(args)
            .envs(env)
            .env("TIMCTL_ENDPOINT", fake.url())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut serve = Serve {
            child: Some(child),
            ops: ops.to_owned(),
            rt,
        };
        wait_for("serve never became ready", || {
            if let Some(status) = serve.child.as_mut().unwrap().try_wait().unwrap() {
                let mut stderr = String::new();
                let _ = serve
                    .child
                    .as_mut()
                    .unwrap()
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut stderr);
                panic!("serve exited {status}: {stderr}");
            }
            serve.get(readiness).is_some_and(|a| a.status == 200)
        });
        serve
    }

    fn get(&self, path: &str) -> Option<CallbackAnswer> {
        self.rt.block_on(callbacks::get(&self.ops, path)).ok()
    }

    /// SIGTERM, as systemd's stop and the kubelet send; the exit code and stderr.
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

/// The kit's promise, whatever runs serve: a message that brings a forbidden conversation
/// back is followed by its deletion, and the alerts' metrics are all exported.
fn a_callback_deletes_and_the_alerts_metrics_are_exported(
    serve: &Serve,
    fake: &Fake,
    listen: &str,
    what: &str,
) {
    wait_for("the first resync", || {
        serve
            .get("/readyz")
            .is_some_and(|a| a.body.contains("first resync: done"))
    });
    fake.callbacks_to(CallbackTarget {
        addr: listen.to_owned(),
        path: "/callback".into(),
        token: Some(TOKEN.into()),
        sdkappid: APP,
    });
    let answer = serve
        .rt
        .block_on(fake.send_one_to_one("bob", "alice", 1))
        .unwrap()
        .unwrap();
    assert_eq!(answer.status, 200, "{what}: {answer:?}");
    wait_for("the enforced deletion", || {
        fake.conversations("alice").is_empty()
    });
    // Bob's own list is his: no manifest names it.
    assert_eq!(fake.conversations("bob").len(), 1, "{what}");

    // The deletion is counted once serve has its answer, a moment after fake-tim removed it.
    let mut metrics = String::new();
    wait_for("the enforced deletion counted", || {
        metrics = serve.get("/metrics").unwrap().body;
        metrics.contains(r#"timctl_deletions_total{reason="enforced",outcome="deleted"} 1"#)
    });
    let rules = read("examples/serve/prometheus/timctl-alerts.yaml");
    let mut used: Vec<&str> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("timctl_"))
        .collect();
    used.sort_unstable();
    used.dedup();
    assert!(used.len() >= 7, "{used:?}");
    // Every name is documented (README's ops listener), and exported by now, except the
    // reload counter: a family is exported from its first sample on, and no reload happens here.
    let readme = read("README.md");
    for name in used {
        let family = name
            .strip_suffix("_total")
            .or_else(|| name.strip_suffix("_bucket"))
            .unwrap_or(name);
        let documented = if name.ends_with("_bucket") {
            family
        } else {
            name
        };
        assert!(
            readme.contains(&format!("`{documented}")),
            "{what}: the alerts use {name}, which README does not document"
        );
        assert!(
            metrics.contains(&format!("# TYPE {family} ")),
            "{what}: the alerts use {name}, which serve does not export:\n{metrics}"
        );
    }
}

/// The keys and values of a unit's `[Service]` (and other) lines, in order.
fn unit_settings(unit: &str) -> Vec<(String, String)> {
    unit.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("not a setting: {l}"));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

#[test]
fn the_systemd_unit_runs_serve_with_its_credentials_and_a_callback_deletes() {
    let unit = read("examples/serve/systemd/timctl-serve.service");
    let settings = unit_settings(&unit);
    let get = |key: &str| -> Vec<&str> {
        settings
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    // No secret in the unit: every one comes through a credential, read from a file.
    assert!(!unit.contains("TIMCTL_SECRET_KEY=") && !unit.contains("TIMCTL_CALLBACK_TOKEN="));
    assert_eq!(get("DynamicUser"), ["yes"]);
    assert_eq!(get("ExecReload"), ["/bin/kill -HUP $MAINPID"]);
    assert_eq!(get("Restart"), ["on-failure"]);

    // The credentials, where systemd puts them ($CREDENTIALS_DIRECTORY, %d).
    let dir = tempfile::tempdir().unwrap();
    let credentials = dir.path().join("run/credentials/timctl-serve.service");
    std::fs::create_dir_all(&credentials).unwrap();
    let mut loaded = Vec::new();
    for credential in get("LoadCredential") {
        let (id, _source) = credential.split_once(':').unwrap();
        let value = match id {
            "secret-key" => KEY,
            "callback-token" => TOKEN,
            other => panic!("a credential the test does not know: {other}"),
        };
        std::fs::write(credentials.join(id), format!("{value}\n")).unwrap();
        loaded.push(id);
    }
    assert_eq!(loaded, ["secret-key", "callback-token"]);

    // Environment=, with %d expanded and paths rooted in the temp dir.
    let mut env = BTreeMap::new();
    for assignment in get("Environment") {
        let (k, v) = assignment.split_once('=').unwrap();
        let v = v.replace("%d", credentials.to_str().unwrap());
        let v = if k == "TIMCTL_STATE" {
            let state = rooted(dir.path(), &v);
            std::fs::create_dir_all(state.parent().unwrap()).unwrap();
            state.to_str().unwrap().to_owned()
        } else {
            v
        };
        env.insert(k.to_owned(), v);
    }
    assert_eq!(env["TIMCTL_LOG_FORMAT"], "json");

    // ExecStart=, the binary the test's, the manifests rooted, the ports free ones.
    let exec = get("ExecStart");
    assert_eq!(exec.len(), 1);
    assert!(!exec[0].contains(['"', '\'', '\\', '%']), "{}", exec[0]);
    let words: Vec<&str> = exec[0].split_whitespace().collect();
    assert_eq!(words[0], "/usr/local/bin/timctl");
    let (listen, ops) = (free_addr(), free_addr());
    let mut args = Vec::new();
    let mut words = words[1..].iter();
    while let Some(word) = words.next() {
        args.push(word.to_string());
        match *word {
            "-f" => {
                let manifests = rooted(dir.path(), words.next().unwrap());
                std::fs::create_dir_all(&manifests).unwrap();
                std::fs::write(manifests.join("chat.yaml"), manifest()).unwrap();
                args.push(manifests.to_str().unwrap().to_owned());
            }
            "--listen" => {
                assert_eq!(
                    words.next(),
                    Some(&"127.0.0.1:8080"),
                    "behind a local proxy"
                );
                args.push(listen.clone());
            }
            "--ops-listen" => {
                assert_eq!(words.next(), Some(&"127.0.0.1:9464"));
                args.push(ops.clone());
            }
            "--shutdown-timeout" => {
                let timeout = words.next().unwrap();
                let stop = get("TimeoutStopSec");
                let seconds = |d: &str| d.trim_end_matches('s').parse::<u64>().unwrap();
                // In-flight deletions get --shutdown-timeout, their recording as long again.
                assert!(
                    seconds(stop[0]) > 2 * seconds(timeout),
                    "TimeoutStopSec {stop:?} <= 2 x {timeout}"
                );
                args.push(timeout.to_string());
            }
            _ => {}
        }
    }

    let fake = Fake::start(|_| {});
    let serve = Serve::start(&args, &env, &ops, "/readyz", &fake);
    a_callback_deletes_and_the_alerts_metrics_are_exported(&serve, &fake, &listen, "systemd");
    let (code, stderr) = serve.terminate();
    assert_eq!(code, Some(0), "{stderr}");
    // No secret in the log.
    assert!(!stderr.contains(TOKEN) && !stderr.contains(KEY), "{stderr}");
    // The state is where the unit said, in its state directory.
    assert!(Path::new(&env["TIMCTL_STATE"]).exists());
}

fn read_yaml(relative: &str) -> Value {
    serde_saphyr::from_str(&read(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

/// Seconds of a duration written `10s`, `2m`.
fn seconds(d: &str) -> u64 {
    match d.strip_suffix('m') {
        Some(m) => m.parse::<u64>().unwrap() * 60,
        None => d.trim_end_matches('s').parse().unwrap(),
    }
}

#[test]
fn the_kubernetes_objects_fit_together() {
    let deployment = read_yaml("examples/serve/kubernetes/deployment.yaml");
    let spec = &deployment["spec"];
    let pod = &spec["template"]["spec"];
    let labels = &spec["template"]["metadata"]["labels"];
    assert_eq!(&spec["selector"]["matchLabels"], labels);
    // Two replicas (one active, one standby) and a rollout that starts a new pod, ready as a
    // standby, before it stops an old one: never fewer than two ready.
    assert_eq!(spec["replicas"], 2);
    assert_eq!(spec["strategy"]["type"], "RollingUpdate");
    assert_eq!(spec["strategy"]["rollingUpdate"]["maxUnavailable"], 0);
    assert_eq!(spec["strategy"]["rollingUpdate"]["maxSurge"], 1);
    let containers = pod["containers"].as_array().unwrap();
    let timctl = containers.iter().find(|c| c["name"] == "timctl").unwrap();
    let args: Vec<&str> = timctl["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| *a == name)
            .map(|i| args[i + 1])
            .unwrap()
    };
    // The kubelet waits longer than serve's own shutdown (the deletions in flight, then their
    // recording, each at most --shutdown-timeout) before SIGKILL.
    assert!(
        pod["terminationGracePeriodSeconds"].as_u64().unwrap()
            > 2 * seconds(flag("--shutdown-timeout"))
    );
    // Non-root, read-only, no privilege, in every container.
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    for c in containers
        .iter()
        .chain(pod["initContainers"].as_array().unwrap())
    {
        let sc = &c["securityContext"];
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{}", c["name"]);
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{}", c["name"]);
        assert!(
            c["resources"]["requests"]["memory"].is_string(),
            "{}",
            c["name"]
        );
    }
    // The probes and the metrics Service reach the ops listener; the callback Service the
    // callback listener; the ops listener is on every address in the pod.
    let port = |name: &str| {
        timctl["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap()["containerPort"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(flag("--ops-listen"), format!("0.0.0.0:{}", port("metrics")));
    assert_eq!(flag("--listen"), format!("0.0.0.0:{}", port("callback")));
    assert_eq!(timctl["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(timctl["readinessProbe"]["httpGet"]["port"], "metrics");
    assert_eq!(timctl["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(timctl["livenessProbe"]["httpGet"]["port"], "metrics");
    for (file, target) in [
        ("service-callback.yaml", "callback"),
        ("service-metrics.yaml", "metrics"),
    ] {
        let service = read_yaml(&format!("examples/serve/kubernetes/{file}"));
        assert_eq!(&service["spec"]["selector"], labels, "{file}");
        let ports = service["spec"]["ports"].as_array().unwrap();
        assert_eq!(ports.len(), 1, "{file}: one port, so the two never mix");
        assert_eq!(ports[0]["targetPort"], target, "{file}");
    }
    let pdb = read_yaml("examples/serve/kubernetes/poddisruptionbudget.yaml");
    assert_eq!(&pdb["spec"]["selector"]["matchLabels"], labels);
    // A drain may take one of the two replicas, never the last ready one; fewer than
    // `replicas` must stay allowed, or no node could ever be drained.
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert!(pdb["spec"]["maxUnavailable"].is_null());
    assert!(pdb["spec"]["minAvailable"].as_u64().unwrap() < spec["replicas"].as_u64().unwrap());
    let ingress = read_yaml("examples/serve/kubernetes/ingress.yaml");
    let path = &ingress["spec"]["rules"][0]["http"]["paths"][0];
    assert_eq!(path["path"], "/callback");
    assert_eq!(path["backend"]["service"]["name"], "timctl-callback");
    // Secrets: the key and the token as files from the Secret, never values in the spec.
    for e in timctl["env"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap();
        assert!(
            !matches!(
                name,
                "TIMCTL_SECRET_KEY" | "TIMCTL_CALLBACK_TOKEN" | "TIMCTL_USERSIG"
            ),
            "a secret in the environment: {name}"
        );
    }
}

#[test]
fn the_kubernetes_timctl_container_runs_serve_on_postgresql_and_a_callback_deletes() {
    let deployment = read_yaml("examples/serve/kubernetes/deployment.yaml");
    let pod = &deployment["spec"]["template"]["spec"];
    let timctl = pod["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "timctl")
        .unwrap();
    let dir = tempfile::tempdir().unwrap();

    // The Secret's files, where the volume mounts them.
    let mount = timctl["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "secrets")
        .unwrap()["mountPath"]
        .as_str()
        .unwrap();
    let secrets = rooted(dir.path(), mount);
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(secrets.join("secret-key"), KEY).unwrap();
    std::fs::write(secrets.join("callback-token"), TOKEN).unwrap();

    // The environment: file paths rooted, the database the test cluster's.
    let cluster = PgCluster::shared();
    let database = cluster.database();
    let mut env = BTreeMap::new();
    for e in timctl["env"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap().to_owned();
        let value = match (name.as_str(), e["value"].as_str()) {
            ("TIMCTL_STATE", Some(url)) => {
                assert!(url.starts_with("postgres://"), "{url}");
                let user_part = url
                    .trim_start_matches("postgres://")
                    .split('@')
                    .next()
                    .unwrap();
                assert!(!user_part.contains(':'), "a password in the URL: {url}");
                cluster.url(&database)
            }
            (_, Some(path)) if path.starts_with('/') => {
                rooted(dir.path(), path).to_str().unwrap().to_owned()
            }
            (_, Some(value)) => value.to_owned(),
            ("PGPASSWORD", None) => {
                assert_eq!(e["valueFrom"]["secretKeyRef"]["name"], "timctl");
                cluster.password().to_owned()
            }
            (other, None) => panic!("an env var the test cannot supply: {other}"),
        };
        env.insert(name, value);
    }
    assert!(env["TIMCTL_CALLBACK_TOKEN_FILE"].starts_with(secrets.to_str().unwrap()));

    // The args: the manifests where git-sync links them (a `current` link to a checkout), the
    // listeners on free loopback ports.
    let (listen, ops) = (free_addr(), free_addr());
    let mut args = Vec::new();
    let mut given = timctl["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap());
    while let Some(arg) = given.next() {
        args.push(arg.to_owned());
        match arg {
            "-f" => {
                let path = given.next().unwrap();
                let (link, below) = path.split_once("/current/").expect("git-sync's link");
                let checkout = rooted(dir.path(), &format!("{link}/.worktrees/abc123"));
                std::fs::create_dir_all(checkout.join(below)).unwrap();
                std::fs::write(checkout.join(below).join("chat.yaml"), manifest()).unwrap();
                std::os::unix::fs::symlink(
                    &checkout,
                    rooted(dir.path(), &format!("{link}/current")),
                )
                .unwrap();
                args.push(rooted(dir.path(), path).to_str().unwrap().to_owned());
            }
            "--listen" => {
                given.next();
                args.push(listen.clone());
            }
            "--ops-listen" => {
                given.next();
                args.push(ops.clone());
            }
            _ => {}
        }
    }
    let readiness = timctl["readinessProbe"]["httpGet"]["path"]
        .as_str()
        .unwrap();
    let liveness = timctl["livenessProbe"]["httpGet"]["path"].as_str().unwrap();

    let fake = Fake::start(|_| {});
    let serve = Serve::start(&args, &env, &ops, readiness, &fake);
    assert_eq!(serve.get(liveness).map(|a| a.status), Some(200));
    a_callback_deletes_and_the_alerts_metrics_are_exported(&serve, &fake, &listen, "kubernetes");
    // The deletion is recorded in the PostgreSQL state (within a second, as serve promises).
    wait_for("the deletion in the PostgreSQL state", || {
        let listed = timctl_tests::timctl()
            .args(["state", "list", "--json", "--sdkappid", &APP.to_string()])
            .env("TIMCTL_STATE", cluster.url(&database))
            .env("PGPASSWORD", cluster.password())
            .output()
            .unwrap();
        String::from_utf8_lossy(&listed.stdout).contains("\"peer\":\"bob\"")
    });
    let (code, stderr) = serve.terminate();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        !stderr.contains(TOKEN) && !stderr.contains(KEY) && !stderr.contains(cluster.password())
    );
}
