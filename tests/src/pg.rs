//! A throwaway PostgreSQL cluster for tests: `initdb` in a temporary directory, a free loopback
//! port, `pg_ctl start`; never a system cluster. As root, the server runs as the `postgres`
//! system user (PostgreSQL refuses to run as root), which Debian's `postgresql` package
//! creates.
//!
//! A test binary shares one cluster ([`PgCluster::shared`]) and gives each test a fresh
//! database ([`PgCluster::database`]). A cluster is stopped when dropped; and because a shared
//! one lives in a static, which is never dropped, every cluster also has a watchdog process
//! that stops it and removes its directory once the test process is gone, whether it exited,
//! panicked or was killed.

use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// The role that owns the test databases, and its password.
pub const ROLE: &str = "timctl_ci";

/// A running throwaway cluster.
pub struct PgCluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    password: String,
    as_postgres: bool,
    databases: AtomicU32,
}

/// The newest PostgreSQL's binaries: `/usr/lib/postgresql/<version>/bin` with `initdb`.
pub fn bin_dir() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

impl PgCluster {
    /// The cluster shared by the tests of this test binary, started on first use.
    ///
    /// # Panics
    /// When PostgreSQL is missing or does not start (`.ci/run` installs it).
    pub fn shared() -> &'static PgCluster {
        static SHARED: OnceLock<PgCluster> = OnceLock::new();
        SHARED.get_or_init(PgCluster::start)
    }

    /// Starts a cluster of its own (for a test that stops and restarts the server).
    ///
    /// # Panics
    /// When PostgreSQL is missing or does not start.
    pub fn start() -> PgCluster {
        let bin = bin_dir().expect(
            "PostgreSQL's server binaries are missing (/usr/lib/postgresql/*/bin/initdb): \
             install Debian's `postgresql` package, as .ci/run does",
        );
        let as_postgres = is_root();
        let dir = tempfile::Builder::new()
            .prefix("timctl-pg-")
            .tempdir()
            .expect("create a temporary directory");
        let password = format!("pw-{}", uuid_like());
        std::fs::write(dir.path().join("pwfile"), format!("{password}\n")).expect("write pwfile");
        if as_postgres {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("run chown");
            assert!(status.success(), "chown the cluster directory to postgres");
        }
        let port = free_port();
        let cluster = PgCluster {
            bin,
            dir,
            port,
            password,
            as_postgres,
            databases: AtomicU32::new(0),
        };
        cluster.spawn_watchdog();
        let data = cluster.data_dir();
        let pwfile = cluster.dir.path().join("pwfile");
        cluster.run(
            "initdb",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "--pwfile".as_ref(),
                pwfile.as_os_str(),
                "--auth-local=trust".as_ref(),
                "--auth-host=scram-sha-256".as_ref(),
                "-E".as_ref(),
                "UTF8".as_ref(),
                "--locale=C.UTF-8".as_ref(),
                "--no-sync".as_ref(),
            ],
        );
        cluster.start_server();
        let mut admin = cluster.admin();
        admin
            .batch_execute(&format!(
                "CREATE ROLE {ROLE} LOGIN PASSWORD '{}'",
                cluster.password
            ))
            .expect("create the test role");
        cluster
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Runs one of PostgreSQL's programs (as `postgres` when root), panicking on failure.
    fn run(&self, program: &str, args: &[&std::ffi::OsStr]) {
        let out = self
            .command(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {program}: {e}"));
        assert!(
            out.status.success(),
            "{program} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(path);
            cmd
        } else {
            Command::new(path)
        }
    }

    /// Starts the server (again) on its port, listening on loopback only, and waits for it.
    pub fn start_server(&self) {
        let data = self.data_dir();
        let log = self.dir.path().join("server.log");
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c max_connections=100",
            self.port,
            self.dir.path().display()
        );
        self.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-l".as_ref(),
                log.as_os_str(),
                "-o".as_ref(),
                options.as_ref(),
                "-w".as_ref(),
                "-t".as_ref(),
                "60".as_ref(),
                "start".as_ref(),
            ],
        );
    }

    /// Stops the server at once (`immediate`: sessions are cut, as when a database host dies).
    pub fn stop_server(&self) {
        let data = self.data_dir();
        self.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-m".as_ref(),
                "immediate".as_ref(),
                "-w".as_ref(),
                "stop".as_ref(),
            ],
        );
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The password of [`ROLE`].
    pub fn password(&self) -> &str {
        &self.password
    }

    /// A superuser session, over the cluster's Unix socket (trusted), for test set-up.
    pub fn admin(&self) -> postgres::Client {
        self.admin_on("postgres")
    }

    /// A superuser session on `dbname`.
    pub fn admin_on(&self, dbname: &str) -> postgres::Client {
        postgres::Config::new()
            .host_path(self.dir.path())
            .port(self.port)
            .user("postgres")
            .dbname(dbname)
            .connect(postgres::NoTls)
            .expect("connect to the test cluster as postgres")
    }

    /// A fresh, empty database owned by [`ROLE`]; returns its name.
    pub fn database(&self) -> String {
        let n = self.databases.fetch_add(1, Ordering::SeqCst);
        let name = format!("t{}_{n}", std::process::id());
        self.admin()
            .batch_execute(&format!("CREATE DATABASE {name} OWNER {ROLE}"))
            .expect("create a test database");
        name
    }

    /// The state URL of `dbname`, without a password (give it in `PGPASSWORD`).
    pub fn url(&self, dbname: &str) -> String {
        format!(
            "postgres://{ROLE}@127.0.0.1:{}/{dbname}?sslmode=disable",
            self.port
        )
    }

    /// The state URL of `dbname` with the password in it.
    pub fn url_with_password(&self, dbname: &str) -> String {
        format!(
            "postgres://{ROLE}:{}@127.0.0.1:{}/{dbname}?sslmode=disable",
            self.password, self.port
        )
    }

    /// A process that stops the cluster and removes its directory when this process is gone.
    fn spawn_watchdog(&self) {
        let pg_ctl = self.bin.join("pg_ctl");
        let data = self.data_dir();
        let run_as = if self.as_postgres {
            "runuser -u postgres -- "
        } else {
            ""
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
             {run_as}'{pg_ctl}' -D '{data}' -m immediate stop >/dev/null 2>&1; rm -rf '{dir}'",
            pid = std::process::id(),
            pg_ctl = pg_ctl.display(),
            data = data.display(),
            dir = self.dir.path().display(),
        );
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Its own process group, so that a Ctrl-C of the test run does not kill it first.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let _ = cmd.spawn();
    }

    /// The server's log, for a failing test's message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// The cluster's directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops every process of the server with SIGSTOP (the postmaster and its backends): the
    /// kernel still accepts connections and data, nothing answers. The server stalls until the
    /// guard is dropped (SIGCONT).
    pub fn freeze(&self) -> Frozen {
        let pids = self.server_pids();
        assert!(!pids.is_empty(), "the server is not running");
        for &pid in &pids {
            signal_pid(pid, "-STOP");
        }
        Frozen { pids }
    }

    /// The postmaster (from `postmaster.pid`) and its children.
    fn server_pids(&self) -> Vec<i32> {
        let Ok(text) = std::fs::read_to_string(self.data_dir().join("postmaster.pid")) else {
            return Vec::new();
        };
        let Some(postmaster) = text
            .lines()
            .next()
            .and_then(|l| l.trim().parse::<i32>().ok())
        else {
            return Vec::new();
        };
        let children =
            std::fs::read_to_string(format!("/proc/{postmaster}/task/{postmaster}/children"))
                .unwrap_or_default();
        std::iter::once(postmaster)
            .chain(children.split_whitespace().filter_map(|p| p.parse().ok()))
            .collect()
    }
}

/// A server stopped by [`PgCluster::freeze`]; dropping it lets the server run again.
pub struct Frozen {
    pids: Vec<i32>,
}

impl Drop for Frozen {
    fn drop(&mut self) {
        for &pid in &self.pids {
            signal_pid(pid, "-CONT");
        }
    }
}

/// `kill -SIGNAL PID` (the library has no signal crate of its own).
fn signal_pid(pid: i32, signal: &str) {
    let _ = Command::new("kill")
        .args([signal, &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.data_dir();
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A free loopback port for the server, outside the ephemeral range (see [`crate::ports`]).
fn free_port() -> u16 {
    crate::ports::free_port()
}

/// A random hex string, for passwords that tests then look for in output.
fn uuid_like() -> String {
    let mut bytes = [0u8; 12];
    rand::Rng::fill(&mut rand::rng(), &mut bytes);
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
