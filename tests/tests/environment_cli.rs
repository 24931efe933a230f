//! Environment variables, `--help` and the man pages' ENVIRONMENT, EXIT STATUS and EXAMPLES,
//! through the binary: a variable does what its flag does, an empty one counts as unset, and
//! README's table lists exactly the variables the binary documents.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn check(out: &Output, code: i32) -> (String, String) {
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    (stdout, stderr)
}

/// The variables an `Environment:` section of `--help` lists (names alone on their line).
fn help_variables(help: &str) -> BTreeSet<String> {
    let section = help
        .split("Environment:\n")
        .nth(1)
        .expect("an Environment: section");
    section
        .lines()
        .take_while(|l| l.is_empty() || l.starts_with("  "))
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .map(|l| l.trim().to_owned())
        .collect()
}

#[test]
fn readme_lists_exactly_the_variables_timctl_documents() {
    let out = timctl_tests::timctl().arg("--help").output().unwrap();
    let (help, _) = check(&out, 0);
    let documented = help_variables(&help);
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let table = readme
        .split("<!-- environment table -->")
        .nth(1)
        .expect("README marks its table of variables");
    let listed: BTreeSet<String> = table
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| l.split('`').nth(1).map(str::to_owned))
        .filter(|name| name.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .collect();
    assert_eq!(listed, documented);
    for name in [
        "TIMCTL_SECRET_KEY",
        "TIMCTL_STATE",
        "TIMCTL_MAX_DELETES",
        "TIMCTL_MANIFEST",
    ] {
        assert!(documented.contains(name), "{name} missing from --help");
    }
}

#[test]
fn apply_help_names_its_credentials_exit_codes_and_examples() {
    let out = timctl_tests::timctl()
        .args(["apply", "--help"])
        .output()
        .unwrap();
    let (help, _) = check(&out, 0);
    let vars = help_variables(&help);
    for name in [
        "TIMCTL_SECRET_KEY",
        "TIMCTL_SECRET_KEY_FILE",
        "TIMCTL_LOCK_TIMEOUT",
    ] {
        assert!(vars.contains(name), "{name}:\n{help}");
    }
    for text in [
        "Exit status:",
        "130",
        "143",
        "Examples:",
        "timctl apply plan.json",
    ] {
        assert!(help.contains(text), "{text}:\n{help}");
    }
    // A command that calls nothing does not list the credentials.
    let out = timctl_tests::timctl()
        .args(["schema", "--help"])
        .output()
        .unwrap();
    let (help, _) = check(&out, 0);
    assert!(
        !help_variables(&help).contains("TIMCTL_SECRET_KEY"),
        "{help}"
    );
}

#[test]
fn every_man_page_renders_environment_exit_status_and_examples() {
    let dir = tempfile::tempdir().unwrap();
    let out = timctl_tests::timctl()
        .args(["man", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    check(&out, 0);
    let mut pages = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let page = entry.unwrap().path();
        let man = std::process::Command::new("man")
            .arg("-l")
            .arg(&page)
            .env("MANWIDTH", "100")
            .output()
            .expect("man (man-db) runs");
        let (text, _) = check(&man, 0);
        let text = without_overstrike(&text);
        for section in ["ENVIRONMENT", "EXIT STATUS", "EXAMPLES"] {
            assert!(
                text.lines().any(|l| l == section),
                "{}: no {section}:\n{text}",
                page.display()
            );
        }
        pages += 1;
    }
    assert!(pages >= 10, "only {pages} pages");
    let apply = std::fs::read_to_string(dir.path().join("timctl-apply.1")).unwrap();
    assert!(apply.contains("TIMCTL_SECRET_KEY"), "{apply}");
}

/// `text` without the backspace overstriking (bold, underline) man may write into a pipe.
fn without_overstrike(text: &str) -> String {
    let mut out: Vec<char> = Vec::with_capacity(text.len());
    for c in text.chars() {
        if c == '\u{8}' {
            out.pop();
        } else {
            out.push(c);
        }
    }
    out.into_iter().collect()
}

/// A state directory of its own, and the example manifest (three deletions).
fn example() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    (dir, root().join("examples/timctl.yaml"))
}

#[test]
fn an_empty_variable_counts_as_unset() {
    let (dir, manifest) = example();
    let out = timctl_tests::timctl()
        .current_dir(dir.path())
        .args(["plan", "-f"])
        .arg(&manifest)
        .env("TIMCTL_STATE", "")
        .env("TIMCTL_STATE_NAME", "")
        .env("TIMCTL_ENDPOINT", "")
        .env("TIMCTL_COLOR", "")
        .env("TIMCTL_MANIFEST", "")
        .output()
        .unwrap();
    let (stdout, _) = check(&out, 0);
    assert!(stdout.contains("Plan: 3 to delete"), "{stdout}");

    let out = timctl_tests::timctl()
        .current_dir(dir.path())
        .args(["apply", "--auto-approve", "-f"])
        .arg(&manifest)
        .env("TIMCTL_MAX_DELETES", "")
        .env("TIMCTL_RATE", "")
        .env("TIMCTL_LOCK_TIMEOUT", "")
        .output()
        .unwrap();
    // Nothing refused it on the variables' account: it went on to need credentials.
    let (_, stderr) = check(&out, 1);
    assert!(stderr.contains("TIMCTL_SECRET_KEY"), "{stderr}");
    assert!(!stderr.contains("value is required"), "{stderr}");
}

#[test]
fn a_variable_does_what_its_flag_does() {
    let (dir, manifest) = example();
    // TIMCTL_MANIFEST stands for -f.
    let out = timctl_tests::timctl()
        .current_dir(dir.path())
        .args(["plan", "--out", "plan.json"])
        .env("TIMCTL_MANIFEST", &manifest)
        .output()
        .unwrap();
    let (stdout, _) = check(&out, 0);
    assert!(stdout.contains("Plan: 3 to delete"), "{stdout}");

    // TIMCTL_MAX_DELETES refuses as --max-deletes does, before any credential is needed.
    let out = timctl_tests::timctl()
        .current_dir(dir.path())
        .args(["apply", "--auto-approve"])
        .env("TIMCTL_MANIFEST", &manifest)
        .env("TIMCTL_MAX_DELETES", "2")
        .output()
        .unwrap();
    let (_, stderr) = check(&out, 1);
    assert!(stderr.contains("max-deletes"), "{stderr}");
    assert!(!dir.path().join(".timctl/state.db").exists());

    // A job-wide TIMCTL_MANIFEST does not make `apply PLANFILE` a conflict, as `-f` would.
    let out = timctl_tests::timctl()
        .current_dir(dir.path())
        .args(["apply", "plan.json", "--max-deletes", "2"])
        .env("TIMCTL_MANIFEST", &manifest)
        .output()
        .unwrap();
    let (_, stderr) = check(&out, 1);
    assert!(stderr.contains("max-deletes"), "{stderr}");
    assert!(!stderr.contains("cannot be used with"), "{stderr}");
    let out = timctl_tests::timctl()
        .current_dir(dir.path())
        .args(["apply", "plan.json", "-f"])
        .arg(&manifest)
        .output()
        .unwrap();
    let (_, stderr) = check(&out, 1);
    assert!(stderr.contains("cannot be used with"), "{stderr}");

    // A bad value is refused naming the flag the variable stands for.
    let out = timctl_tests::timctl()
        .current_dir(dir.path())
        .args(["apply", "--auto-approve"])
        .env("TIMCTL_MANIFEST", &manifest)
        .env("TIMCTL_LOCK_TIMEOUT", "soon")
        .output()
        .unwrap();
    let (_, stderr) = check(&out, 1);
    assert!(stderr.contains("--lock-timeout"), "{stderr}");
    // ... and the variable it came from, which the job set and never typed as a flag.
    assert!(
        stderr.contains("the value came from TIMCTL_LOCK_TIMEOUT"),
        "{stderr}"
    );
    let out = timctl_tests::timctl()
        .current_dir(dir.path())
        .args(["plan"])
        .env("TIMCTL_MANIFEST", &manifest)
        .env("TIMCTL_COLOR", "bogus")
        .output()
        .unwrap();
    let (_, stderr) = check(&out, 1);
    assert!(
        stderr.contains("--color") && stderr.contains("the value came from TIMCTL_COLOR"),
        "{stderr}"
    );
    // A bad value typed on the command line is the flag's own: no variable is blamed.
    let out = timctl_tests::timctl()
        .current_dir(dir.path())
        .args(["plan", "--color", "bogus"])
        .env("TIMCTL_MANIFEST", &manifest)
        .env("TIMCTL_COLOR", "never")
        .output()
        .unwrap();
    let (_, stderr) = check(&out, 1);
    assert!(!stderr.contains("came from"), "{stderr}");
}
