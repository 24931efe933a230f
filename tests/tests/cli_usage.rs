//! The command line's own contract: help and version succeed, usage errors exit 1 (never
//! clap's 2, which `plan --detailed-exitcode` uses for "there are changes"), and global flags
//! work before or after the command.

fn timctl(args: &[&str]) -> std::process::Output {
    timctl_tests::timctl().args(args).output().unwrap()
}

#[test]
fn version_and_help_succeed() {
    let out = timctl(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    // The version, then the commit it was built from (gitops_cli.rs checks which).
    let version = String::from_utf8_lossy(&out.stdout);
    assert!(
        version.starts_with(&format!("timctl {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );
    let out = timctl(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for command in [
        "validate",
        "plan",
        "show",
        "apply",
        "schema",
        "state",
        "usersig",
        "completions",
        "man",
    ] {
        assert!(
            help.contains(command),
            "--help does not list {command}:\n{help}"
        );
    }
}

#[test]
fn usage_errors_exit_1() {
    for args in [
        &["--no-such-flag"][..],
        &["no-such-command"],
        &[],
        &["plan", "--format", "yaml"],
        &["apply", "--lock-timeout", "soon"],
        &["state", "rm", "alice"],
    ] {
        let out = timctl(args);
        assert_eq!(out.status.code(), Some(1), "timctl {args:?}");
        assert!(!out.stderr.is_empty(), "timctl {args:?} says nothing");
    }
}

#[test]
fn global_flags_go_before_or_after_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("elsewhere.db");
    let state = state.to_str().unwrap();
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/timctl.yaml");
    // `--state` is honoured in either place: a missing state lists as empty, at that path.
    for args in [
        &[
            "--state", state, "--color", "never", "state", "list", "--json",
        ][..],
        &[
            "state", "list", "--json", "--color", "never", "--state", state,
        ],
    ] {
        let out = timctl(args);
        assert_eq!(out.status.code(), Some(0), "timctl {args:?}");
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(doc["entries"], serde_json::json!([]), "timctl {args:?}");
    }
    for args in [
        &["-q", "validate", "-f", manifest][..],
        &["validate", "-f", manifest, "-q"],
    ] {
        let out = timctl(args);
        assert_eq!(out.status.code(), Some(0), "timctl {args:?}");
    }
    assert!(
        !std::path::Path::new(state).exists(),
        "reading created the state"
    );
}

#[test]
fn durations_are_explained_when_wrong() {
    let out = timctl(&["apply", "--lock-timeout", "soon"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("30s, 5m or 24h"), "{err}");
}
