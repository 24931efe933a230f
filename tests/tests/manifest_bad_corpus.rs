//! The bad-manifest corpus (`tests/bad-manifests/`, listed in `cases.tsv`): every case makes
//! the real `timctl` binary exit 1 with the listed problem at the listed place, without a
//! panic, and without creating any state.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

struct Expected {
    file: String,
    line: u64,
    column: u64,
    message: String,
}

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("bad-manifests")
}

fn cases() -> BTreeMap<String, Vec<Expected>> {
    let text = std::fs::read_to_string(corpus().join("cases.tsv")).expect("read cases.tsv");
    let mut cases: BTreeMap<String, Vec<Expected>> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let fields: Vec<&str> = line.split('\t').collect();
        assert_eq!(
            fields.len(),
            4,
            "cases.tsv line {line:?} needs 4 tab-separated fields"
        );
        let mut place = fields[1].rsplitn(3, ':');
        let column = place.next().unwrap().parse().expect("column");
        let line_no = place.next().unwrap().parse().expect("line");
        let file = place.next().unwrap().to_owned();
        cases
            .entry(fields[0].to_owned())
            .or_default()
            .push(Expected {
                file,
                line: line_no,
                column,
                message: fields[3].to_owned(),
            });
    }
    cases
}

/// The cases whose every problem is listed in cases.tsv, with the exact count.
fn counts() -> BTreeMap<String, usize> {
    let text = std::fs::read_to_string(corpus().join("counts.tsv")).expect("read counts.tsv");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (case, count) = l.split_once('\t').expect("counts.tsv: case<TAB>count");
            (case.to_owned(), count.parse().expect("count"))
        })
        .collect()
}

fn matches(p: &serde_json::Value, want: &Expected) -> bool {
    p["file"].as_str() == Some(want.file.as_str())
        && (want.line == 0 || p["line"].as_u64() == Some(want.line))
        && (want.column == 0 || p["column"].as_u64() == Some(want.column))
        && p["message"].as_str().unwrap_or("").contains(&want.message)
        && !p["help"].as_str().unwrap_or("").is_empty()
}

#[test]
fn corpus_has_at_least_forty_cases() {
    assert!(cases().len() >= 40, "only {} cases", cases().len());
}

#[test]
fn every_bad_manifest_fails_with_its_problem_at_its_place() {
    let state_dir = tempfile::tempdir().unwrap();
    let state = state_dir.path().join("state.db");
    let mut failures = Vec::new();
    let counts = counts();
    assert!(
        counts.keys().all(|c| cases().contains_key(c)),
        "counts.tsv names a case cases.tsv does not list"
    );
    for (case, expected) in cases() {
        let mut cmd = timctl_tests::timctl();
        cmd.current_dir(corpus())
            .args(["validate", "--format", "json", "-f", &case])
            .arg("--state")
            .arg(&state);
        let out = assert_cmd::Command::from_std(cmd)
            // A guard against hangs (an alias bomb that expands), not a speed target.
            .timeout(Duration::from_secs(60))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.code() != Some(1) || stderr.contains("panicked") {
            failures.push(format!(
                "{case}: exit {:?}, stderr {stderr}",
                out.status.code()
            ));
            continue;
        }
        let doc: serde_json::Value = match serde_json::from_slice(&out.stdout) {
            Ok(v) => v,
            Err(e) => {
                failures.push(format!("{case}: stdout is not JSON ({e})"));
                continue;
            }
        };
        assert_eq!(doc["valid"], false, "{case}");
        let problems = doc["problems"].as_array().unwrap();
        if let Some(&count) = counts.get(&case) {
            // Every problem in one run, each once: exactly the listed ones.
            let unlisted: Vec<_> = problems
                .iter()
                .filter(|p| !expected.iter().any(|want| matches(p, want)))
                .collect();
            if problems.len() != count || expected.len() != count || !unlisted.is_empty() {
                failures.push(format!(
                    "{case}: want exactly {count} problems ({} listed), got {}; not listed: {unlisted:#?}",
                    expected.len(),
                    problems.len()
                ));
            }
        }
        for want in &expected {
            let found = problems.iter().any(|p| matches(p, want));
            if !found {
                failures.push(format!(
                    "{case}: no problem at {}:{}:{} containing {:?}; got {problems:#?}",
                    want.file, want.line, want.column, want.message
                ));
            }
        }
    }
    assert!(!state.exists(), "validate created state");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn an_unreadable_path_is_reported_without_a_panic() {
    // As root every file is readable, so a path through a regular file stands in for one that
    // cannot be opened (ENOTDIR); either way it is an I/O error on reading.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain.yaml");
    std::fs::write(&file, "version: 1\n").unwrap();
    let out = timctl_tests::timctl()
        .args(["validate", "--format", "json", "-f"])
        .arg(file.join("inside.yaml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let message = doc["problems"][0]["message"].as_str().unwrap();
    assert!(message.contains("cannot read the manifest"), "{message}");
}

#[test]
fn text_output_shows_a_code_frame_and_github_output_annotates() {
    let text = timctl_tests::timctl()
        .current_dir(corpus())
        .args([
            "--color",
            "never",
            "validate",
            "-f",
            "several-problems.yaml",
        ])
        .output()
        .unwrap();
    assert_eq!(text.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&text.stderr);
    // Like rustc: each problem once, its place once (in the code frame's header), no bare
    // `Error:` lines, and the count last.
    assert_eq!(
        stderr.matches("several-problems.yaml:8:13").count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("[several-problems.yaml:8:13]"), "{stderr}");
    assert!(!stderr.contains("Error:"), "{stderr}");
    assert_eq!(
        stderr.trim_end().lines().last(),
        Some("error: could not validate the manifests due to 3 previous errors"),
        "{stderr}"
    );
    assert!(stderr.contains(r#"- user: """#), "{stderr}");

    let gh = timctl_tests::timctl()
        .current_dir(corpus())
        .args([
            "validate",
            "--format",
            "github",
            "-f",
            "duplicate-across-files",
        ])
        .output()
        .unwrap();
    assert_eq!(gh.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&gh.stdout);
    assert!(
        stdout.starts_with("::error file=duplicate-across-files/b.yaml,line=6,col=7,"),
        "{stdout}"
    );
    assert!(
        stdout.contains("duplicate-across-files/a.yaml:8:7"),
        "{stdout}"
    );
}

#[test]
fn the_other_place_of_a_duplicate_is_never_wrapped_in_the_middle_of_its_path() {
    // A long path with hyphens: miette's wrapping split it at a hyphen when it was part of the
    // message, so a terminal could not make it clickable.
    let dir = tempfile::tempdir().unwrap();
    let deep = dir
        .path()
        .join("team-manifests-for-the-customer-support-organisation")
        .join("conversations-that-must-never-come-back");
    std::fs::create_dir_all(&deep).unwrap();
    let app =
        "version: 1\napp:\n  sdkappid: 1400000001\n  region: singapore\n  admin: administrator\n";
    std::fs::write(
        deep.join("a.yaml"),
        format!("{app}absent:\n  alice:\n    - user: bob\n"),
    )
    .unwrap();
    std::fs::write(
        deep.join("b.yaml"),
        format!("{app}absent:\n  alice:\n    - user: bob\n"),
    )
    .unwrap();
    let out = timctl_tests::timctl()
        .current_dir(dir.path())
        .args(["--color", "never", "validate", "-f"])
        .arg(deep.strip_prefix(dir.path()).unwrap())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let first = "team-manifests-for-the-customer-support-organisation/conversations-that-must-never-come-back/a.yaml:8:7";
    assert!(
        stderr.lines().any(|l| l.trim_end().ends_with(first)),
        "the other place is not whole on one line:\n{stderr}"
    );
}
