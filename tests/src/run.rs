//! Running a child process in a test or a benchmark: one way to say "it must succeed", and one
//! way to stop a long-running one as its supervisor would.

use std::io::Read;
use std::process::{Child, Command, Output};

/// Panics with everything `out` printed unless it exited 0; returns it otherwise.
///
/// # Panics
/// When the process did not exit 0: the message has its status, stdout and stderr, so that a
/// failing test says why without a rerun.
#[track_caller]
pub fn assert_success(out: Output) -> Output {
    assert!(
        out.status.success(),
        "{}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `cmd` to the end and returns its output, which must be a success
/// ([`assert_success`]).
///
/// # Panics
/// When `cmd` cannot be started or does not exit 0.
#[track_caller]
pub fn succeeds(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", cmd.get_program()));
    assert_success(out)
}

/// Sends `child` SIGTERM, as systemd's stop and the kubelet do, and waits for it: its exit code
/// and everything it printed on stderr (which must be piped).
///
/// # Panics
/// When the signal cannot be sent, or stderr was not piped.
pub fn terminate(mut child: Child) -> (Option<i32>, String) {
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::TERM,
    )
    .expect("SIGTERM to the child");
    let status = child.wait().expect("waiting for the child");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("the child's stderr is piped")
        .read_to_string(&mut stderr)
        .expect("reading the child's stderr");
    (status.code(), stderr)
}
