//! `timctl completions`, `timctl man` and `timctl --version`, run for real: bash sources the
//! completion script, man-db and groff render every page, and the version names the commit of
//! this checkout.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn timctl(args: &[&str]) -> Output {
    timctl_tests::timctl().args(args).output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The command names listed under `Commands:` in `timctl [SUB] help`, without `help` itself:
/// read from the binary, so that a new command is covered without touching this test.
fn commands(prefix: &[&str]) -> Vec<String> {
    let mut args = prefix.to_vec();
    args.push("--help");
    let out = timctl(&args);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    let list = text
        .split("Commands:\n")
        .nth(1)
        .expect("a Commands: section");
    list.lines()
        .take_while(|l| l.starts_with("  "))
        // A long description wraps onto lines indented further: those name no command.
        .filter(|l| !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_command_list_is_read_from_help() {
    let top = commands(&[]);
    for name in [
        "validate",
        "plan",
        "apply",
        "fmt",
        "state",
        "completions",
        "man",
    ] {
        assert!(top.iter().any(|c| c == name), "{name} in {top:?}");
    }
    assert_eq!(
        commands(&["state"]),
        [
            "list",
            "show",
            "rm",
            "migrate",
            "history",
            "runs",
            "prune-history"
        ]
        .map(String::from)
    );
}

#[test]
fn bash_loads_the_completion_script() {
    let script = stdout(&timctl(&["completions", "bash"]));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("timctl.bash");
    std::fs::write(&file, &script).unwrap();
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -e; source '{}'; complete -p timctl",
            file.display()
        ))
        .output()
        .expect("bash runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let registered = stdout(&out);
    assert!(
        registered.contains("-F _timctl") && registered.trim_end().ends_with(" timctl"),
        "{registered}"
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn zsh_fish_powershell_and_elvish_scripts_name_every_command() {
    let top = commands(&[]);
    let state = commands(&["state"]);
    for shell in ["zsh", "fish", "powershell", "elvish"] {
        let out = timctl(&["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let script = stdout(&out);
        for name in top.iter().chain(&state) {
            // Each shell writes a candidate its own way: after a quote, or elvish's `cand `.
            let named = ["'", "\"", "cand "]
                .iter()
                .any(|q| script.contains(&format!("{q}{name}")));
            assert!(named, "the {shell} script does not offer `{name}`");
        }
        // The global flags complete after every command.
        for flag in ["state", "endpoint", "verbose", "quiet", "color"] {
            assert!(script.contains(flag), "{shell}: --{flag}");
        }
    }
    // The fish script, concretely: a completion per command, offered when none was typed yet.
    let fish = stdout(&timctl(&["completions", "fish"]));
    for name in &top {
        assert!(
            fish.contains(&format!(
                "-n \"__fish_timctl_needs_command\" -f -a \"{name}\""
            )),
            "fish: {name}"
        );
    }
}

#[test]
fn an_unknown_shell_is_a_usage_error_exiting_1() {
    let out = timctl(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("possible values: bash, elvish, fish, powershell, zsh"),
        "{err}"
    );
    let out = timctl(&["man"]);
    assert_eq!(out.status.code(), Some(1), "--out is required");
}

/// Renders `page` through man-db as a reader would, and through groff with every warning on;
/// returns whatever either said on stderr.
fn render_warnings(page: &Path) -> String {
    let man = Command::new("man")
        .arg("-l")
        .arg(page)
        .env("MANWIDTH", "80")
        .env("MAN_KEEP_FORMATTING", "0")
        .env_remove("MANPAGER")
        .env("PAGER", "cat")
        .output()
        .expect("man (man-db) runs");
    assert!(man.status.success(), "man -l {}", page.display());
    assert!(
        !man.stdout.is_empty(),
        "{} renders to nothing",
        page.display()
    );
    // -k runs preconv first, as man does, so UTF-8 text (×, —) is read as such.
    let groff = Command::new("groff")
        .args(["-k", "-man", "-ww", "-z"])
        .arg(page)
        .output()
        .expect("groff runs");
    assert!(groff.status.success(), "groff {}", page.display());
    format!(
        "{}{}",
        String::from_utf8_lossy(&man.stderr),
        String::from_utf8_lossy(&groff.stderr)
    )
}

#[test]
fn man_writes_one_page_per_command_and_each_renders_without_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("man1");
    let out = timctl(&["man", "--out", out_dir.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut expected: BTreeSet<String> = ["timctl.1".to_owned()].into();
    for name in commands(&[]) {
        expected.insert(format!("timctl-{name}.1"));
    }
    for name in commands(&["state"]) {
        expected.insert(format!("timctl-state-{name}.1"));
    }
    let written: BTreeSet<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(written, expected);

    for name in &written {
        let page = out_dir.join(name);
        let warnings = render_warnings(&page);
        assert!(warnings.is_empty(), "{name}:\n{warnings}");
        let text = std::fs::read_to_string(&page).unwrap();
        // Every page documents the global flags, which every command takes.
        for flag in [
            "\\-\\-state",
            "\\-\\-endpoint",
            "\\-v",
            "\\-\\-verbose",
            "\\-q",
            "\\-\\-quiet",
            "\\-\\-color",
        ] {
            assert!(text.contains(flag), "{name} lacks {flag}");
        }
    }
    // The plan page is the plan command's --help, not a generic one.
    let plan = std::fs::read_to_string(out_dir.join("timctl-plan.1")).unwrap();
    assert!(plan.contains("detailed\\-exitcode"), "{plan}");
}

#[test]
fn version_names_the_commit_of_this_checkout() {
    let long = stdout(&timctl(&["--version"]));
    let short = stdout(&timctl(&["-V"]));
    assert_eq!(long, short);
    let version = env!("CARGO_PKG_VERSION");
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(root())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(head) => {
            let date = git(&["log", "-1", "--format=%cs", "HEAD"]).unwrap();
            // Dirty means the binary's own sources differ from the commit (see build.rs).
            let inputs = [
                "Cargo.toml",
                "Cargo.lock",
                "api-spec",
                "macros",
                "core",
                "reconciler",
            ];
            let mut status = vec!["status", "--porcelain", "--untracked-files=no", "--"];
            status.extend(inputs);
            let dirty = git(&status).is_some_and(|s| !s.is_empty());
            let dirty = if dirty { "-dirty" } else { "" };
            assert_eq!(
                long,
                format!("timctl {version} (commit {head}{dirty}, {date})\n")
            );
            // The short form git itself would print is a prefix of ours.
            let git_short = git(&["rev-parse", "--short", "HEAD"]).unwrap();
            assert!(long.contains(&format!("commit {git_short}")), "{long}");
        }
        // A test run from a source archive: the binary says so rather than failing to build.
        None => assert_eq!(
            long,
            format!("timctl {version} (commit unknown: not built from a git checkout)\n")
        ),
    }
}
