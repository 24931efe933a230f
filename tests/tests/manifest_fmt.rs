//! `timctl fmt` through the real binary: it rewrites, `--check` names what would change and
//! exits 1, `--diff` prints a unified diff, a file that does not validate is never rewritten,
//! JSON is left as it is, and a second run changes nothing.

use std::path::{Path, PathBuf};

const UNFORMATTED: &str = "\
# yaml-language-server: $schema=timctl.schema.json
absent:
  zed:
    - group: '@TGS#2'   # a group
    - user: \"bob\"
  alice:
    # why alice
    - {user: carol, clear_roaming: true}
app: {sdkappid: 1400000001, region: singapore, admin: administrator}
version: 1
";

const FORMATTED: &str = "\
# yaml-language-server: $schema=timctl.schema.json
version: 1
app:
  sdkappid: 1400000001
  region: singapore
  admin: administrator
absent:
  alice:
    # why alice
    - user: carol
      clear_roaming: true
  zed:
    - user: bob
    - group: \"@TGS#2\"   # a group
";

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn fmt(args: &[&str], path: &Path) -> std::process::Output {
    timctl_tests::timctl()
        .arg("fmt")
        .args(args)
        .arg("-f")
        .arg(path)
        .output()
        .unwrap()
}

#[test]
fn fmt_rewrites_in_the_canonical_layout_and_a_second_run_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "timctl.yaml", UNFORMATTED);
    let out = timctl_tests::assert_success(fmt(&[], &path));
    assert!(String::from_utf8_lossy(&out.stdout).contains("timctl.yaml"));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), FORMATTED);
    let again = timctl_tests::assert_success(fmt(&[], &path));
    assert!(
        again.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), FORMATTED);
    timctl_tests::assert_success(fmt(&["--check"], &path));
}

#[test]
fn check_names_the_files_that_would_change_exits_1_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let set = dir.path().join("manifests");
    std::fs::create_dir(&set).unwrap();
    write(&set, "a.yaml", FORMATTED);
    let b = UNFORMATTED
        .replace("alice", "anna")
        .replace("zed", "zoe")
        .replace(
            "app: {sdkappid: 1400000001, region: singapore, admin: administrator}\n",
            "",
        );
    write(&set, "b.yaml", &b);
    let out = fmt(&["--check"], &set);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("b.yaml") && !stdout.contains("a.yaml"),
        "{stdout}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("1 manifest is not in the canonical layout")
    );
    assert_eq!(std::fs::read_to_string(set.join("b.yaml")).unwrap(), b);
}

#[test]
fn diff_prints_a_unified_diff_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "timctl.yaml", UNFORMATTED);
    let out = timctl_tests::assert_success(fmt(&["--diff"], &path));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("--- a/") && stdout.contains("+++ b/"),
        "{stdout}"
    );
    assert!(
        stdout.contains("@@ ") && stdout.contains("+    - user: bob\n"),
        "{stdout}"
    );
    assert!(stdout.contains("-    - user: \"bob\"\n"), "{stdout}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), UNFORMATTED);
    let with_check = fmt(&["--diff", "--check"], &path);
    assert_eq!(with_check.status.code(), Some(1));
}

#[test]
fn a_file_that_does_not_validate_is_not_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let bad = UNFORMATTED.replace("user: \"bob\"", "usr: \"bob\"");
    let path = write(dir.path(), "timctl.yaml", &bad);
    let out = fmt(&[], &path);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown field `usr`"), "{stderr}");
    assert!(
        stderr.contains("could not format the manifests"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), bad);
}

#[test]
fn a_manifest_written_as_json_is_left_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let json = r#"{"version": 1, "absent": {"b": [{"user": "x"}], "a": [{"user": "y"}]}}"#;
    let path = write(dir.path(), "team.yaml", json);
    let out = timctl_tests::assert_success(fmt(&["--check"], &path));
    assert!(String::from_utf8_lossy(&out.stderr).contains("written as JSON"));
    timctl_tests::assert_success(fmt(&[], &path));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), json);
}

#[test]
fn the_examples_are_formatted() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    timctl_tests::succeeds(timctl_tests::timctl().current_dir(root).args([
        "fmt",
        "--check",
        "-f",
        "examples/timctl.yaml",
        "-f",
        "examples/acme",
    ]));
}
