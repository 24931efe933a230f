//! What `--help` and the man pages say beyond the flags: each command's environment, exit
//! status and examples.
//!
//! Both are made from here and from the clap definitions (a flag declared with `env` documents
//! its variable), so the two cannot drift apart. README's table of variables lists the same
//! names; `tests/tests/gitops_cli.rs` compares them with the top-level man page.

use clap::Command;

/// An environment variable that is not a flag's (credentials, libraries' conventions), or whose
/// flag cannot be declared with clap's `env` (see [`MANIFEST_VARIABLE`]).
pub(crate) struct Variable {
    pub(crate) name: &'static str,
    /// The commands it matters to, as paths (`apply`, `state list`); empty for every command.
    pub(crate) commands: &'static [&'static str],
    pub(crate) doc: &'static str,
}

/// `-f/--manifest`'s variable. It is applied as the flag's default when the command line is
/// parsed (`args::parse`), not through clap's `env`: an environment value counts as given on
/// the command line for clap's conflicts, and `apply PLANFILE` refuses `-f`, which a job-wide
/// variable must not trip.
pub(crate) const MANIFEST_VARIABLE: &str = "TIMCTL_MANIFEST";

const MANIFEST_COMMANDS: &[&str] = &[
    "validate",
    "plan",
    "apply",
    "serve",
    "fmt",
    "usersig",
    "state list",
    "state show",
    "state rm",
    "state migrate",
    "state history",
    "state runs",
    "state prune-history",
];
/// The commands that write a run into the state's history.
const RUN_COMMANDS: &[&str] = &[
    "apply",
    "serve",
    "state rm",
    "state migrate",
    "state prune-history",
];
const CALLING_COMMANDS: &[&str] = &["plan", "apply", "serve", "usersig"];

pub(crate) const VARIABLES: &[Variable] = &[
    Variable {
        name: MANIFEST_VARIABLE,
        commands: MANIFEST_COMMANDS,
        doc: "One manifest file or directory, used when no -f/--manifest is given (the flag may \
              be repeated; the variable names one path).",
    },
    Variable {
        name: "TIMCTL_SECRET_KEY",
        commands: CALLING_COMMANDS,
        doc: "The app's secret key: timctl makes the admin's UserSig from it and renews it. \
              Needed by apply when there is something to delete, by --refresh, and by usersig.",
    },
    Variable {
        name: "TIMCTL_SECRET_KEY_FILE",
        commands: CALLING_COMMANDS,
        doc: "A file holding the secret key (surrounding whitespace ignored), for systemd \
              credentials and Kubernetes secrets. Setting both key variables is an error.",
    },
    Variable {
        name: "TIMCTL_USERSIG",
        commands: &["plan", "apply"],
        doc: "A ready UserSig, used as given and never renewed. A secret key, when also set, wins.",
    },
    Variable {
        name: "SSL_CERT_FILE",
        commands: &["plan", "apply"],
        doc: "A PEM file of the certificate authorities to trust instead of the system's (a \
              private gateway's, for --endpoint).",
    },
    Variable {
        name: "PGPASSWORD",
        commands: &[],
        doc: "The password of a PostgreSQL state whose URL has none. Never shown.",
    },
    Variable {
        name: "PGPASSFILE",
        commands: &[],
        doc: "The password file read when neither the URL nor PGPASSWORD gives a password \
              (default ~/.pgpass).",
    },
    Variable {
        name: "GITHUB_ACTIONS",
        commands: RUN_COMMANDS,
        doc: "When true, the run's history names its GitHub Actions job, made from \
              GITHUB_SERVER_URL, GITHUB_REPOSITORY and GITHUB_RUN_ID.",
    },
    Variable {
        name: "GITLAB_CI",
        commands: RUN_COMMANDS,
        doc: "When true, the run's history names its GitLab CI job: CI_JOB_URL.",
    },
    Variable {
        name: "TIMCTL_CALLBACK_TOKEN",
        commands: &["serve"],
        doc: "The token of the callback configuration in the Tencent Cloud Chat console: a \
              callback is accepted only when its Sign is hex(SHA-256(token + RequestTime)) and \
              RequestTime is within 60 s. Never shown.",
    },
    Variable {
        name: "TIMCTL_CALLBACK_TOKEN_FILE",
        commands: &["serve"],
        doc: "A file holding the callback token (surrounding whitespace ignored), for systemd \
              credentials and Kubernetes secrets; TIMCTL_CALLBACK_TOKEN wins when both are set.",
    },
    Variable {
        name: "TIMCTL_LOG",
        commands: &[],
        doc: "A log filter (tracing's syntax, e.g. timctl_core=debug) that replaces the level \
              -v and -q choose.",
    },
    Variable {
        name: "NO_COLOR",
        commands: &[],
        doc: "When set and not empty, --color auto means never.",
    },
];

/// What one variable does for one command, as `--help` and the man page show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Documented {
    pub(crate) name: String,
    pub(crate) doc: String,
}

/// The three sections of a command's documentation that clap does not make.
pub(crate) struct Sections {
    pub(crate) environment: Vec<Documented>,
    pub(crate) exit_status: &'static [(&'static str, &'static str)],
    pub(crate) examples: &'static [(&'static str, &'static str)],
}

/// The sections for the command at `path` (`""` for `timctl` itself, `"state list"`).
/// `cmd` is that command; `globals` the top level's global flags, which clap copies into each
/// subcommand only when the tree is built.
pub(crate) fn sections(cmd: &Command, path: &str, globals: &[&clap::Arg]) -> Sections {
    let mut environment: Vec<Documented> = Vec::new();
    let mut add = |d: Documented| {
        if !environment.iter().any(|e| e.name == d.name) {
            environment.push(d);
        }
    };
    let flags = globals.iter().copied().chain(cmd.get_arguments());
    for arg in flags.filter(|a| !a.is_hide_set()) {
        if let Some(name) = arg.get_env() {
            let flag = arg
                .get_long()
                .map(|l| format!("--{l}"))
                .unwrap_or_else(|| arg.get_id().to_string());
            add(Documented {
                name: name.to_string_lossy().into_owned(),
                doc: format!("Same as {flag}. An empty value counts as unset."),
            });
        }
    }
    for v in VARIABLES {
        let concerns = path.is_empty()
            || v.commands.is_empty()
            || v.commands
                .iter()
                .any(|c| *c == path || c.starts_with(&format!("{path} ")));
        if concerns {
            add(Documented {
                name: v.name.to_owned(),
                doc: v.doc.to_owned(),
            });
        }
    }
    // The top level lists every variable of every command, so that `timctl --help` and
    // `man timctl` are the whole table.
    if path.is_empty() {
        let mut stack: Vec<&Command> = cmd.get_subcommands().collect();
        while let Some(sub) = stack.pop() {
            for arg in sub.get_arguments().filter(|a| !a.is_hide_set()) {
                if let (Some(name), Some(long)) = (arg.get_env(), arg.get_long()) {
                    add(Documented {
                        name: name.to_string_lossy().into_owned(),
                        doc: format!("Same as --{long}. An empty value counts as unset."),
                    });
                }
            }
            stack.extend(sub.get_subcommands());
        }
    }
    environment.sort_by(|a, b| a.name.cmp(&b.name));
    Sections {
        environment,
        exit_status: exit_status(path),
        examples: examples(path),
    }
}

const SUCCESS_OR_ERROR: &[(&str, &str)] = &[
    ("0", "Success."),
    (
        "1",
        "An error, usage errors included; the message says what to do.",
    ),
];

/// Exit codes by command. Usage errors exit 1, never clap's 2: under `plan
/// --detailed-exitcode` a 2 means "there are changes", and a typo must not read as that.
fn exit_status(path: &str) -> &'static [(&'static str, &'static str)] {
    match path {
        "" => &[
            ("0", "Success."),
            (
                "1",
                "An error, usage errors included; the message says what to do.",
            ),
            (
                "2",
                "plan --detailed-exitcode: there are changes; plan --drift-exitcode: a \
                 conversation that must not exist is on the server.",
            ),
            (
                "130",
                "apply stopped by SIGINT (Ctrl-C), its confirmed deletions recorded.",
            ),
            (
                "143",
                "apply stopped by SIGTERM, its confirmed deletions recorded.",
            ),
        ],
        "validate" => &[
            ("0", "Every manifest is valid."),
            (
                "1",
                "A problem was found (each is printed), or another error.",
            ),
        ],
        "plan" => &[
            (
                "0",
                "The plan was made (with --detailed-exitcode: and it has no changes; with \
                 --drift-exitcode: and no conversation that must not exist is on the server).",
            ),
            (
                "1",
                "An error; with --drift-exitcode also when a user's conversation list could \
                 not be read (after printing the plan), since an alarm that cannot look must \
                 not be green.",
            ),
            (
                "2",
                "--detailed-exitcode: the plan has changes (delete, record or forget). \
                 --drift-exitcode: a conversation that must not exist is on the server.",
            ),
        ],
        "apply" => &[
            (
                "0",
                "Everything planned succeeded, or there was nothing to do.",
            ),
            (
                "1",
                "Something failed, or the run was refused and changed nothing (a usage error, \
                 --max-deletes, the lock, no approval, a stale saved plan).",
            ),
            (
                "130",
                "Stopped by SIGINT (Ctrl-C): calls in flight finished and were recorded first.",
            ),
            (
                "143",
                "Stopped by SIGTERM: calls in flight finished and were recorded first.",
            ),
        ],
        "serve" => &[
            (
                "0",
                "Stopped by SIGTERM or SIGINT: deletions in flight finished and were recorded, \
                 the lock was released.",
            ),
            (
                "1",
                "Refused to start (invalid manifests, no callback token, unusable --tls-cert or \
                 --tls-key, the lock, a listener address in use), or stopped by a fatal answer (bad key, unknown app) or a \
                 state write failing, with one message saying which.",
            ),
            (
                "130, 143",
                "A second SIGINT or SIGTERM during the shutdown: exited at once.",
            ),
        ],
        "usersig" => &[
            (
                "0",
                "The UserSig was printed; with --verify, the UserSig is valid.",
            ),
            (
                "1",
                "With --verify, the UserSig is not valid (the reason is printed: malformed, \
                 wrong key, other identifier or app, expired); or another error.",
            ),
        ],
        "fmt" => &[
            (
                "0",
                "Every manifest is in the canonical layout (rewritten if it was not).",
            ),
            (
                "1",
                "With --check, a file would change (each is named); or a manifest does not \
                 validate (it is left as it was), or another error.",
            ),
        ],
        "state rm" => &[
            ("0", "The entry was removed (with --dry-run: would be)."),
            ("1", "No such entry, the state is locked, or another error."),
        ],
        "state migrate" => &[
            ("0", "The state was copied."),
            (
                "1",
                "The destination already holds that state, a lock is held, or another error; \
                 the destination is left as it was.",
            ),
        ],
        _ => SUCCESS_OR_ERROR,
    }
}

/// Examples by command: a comment, then the command line.
fn examples(path: &str) -> &'static [(&'static str, &'static str)] {
    match path {
        "" => &[
            (
                "Check the manifests, then see what apply would do:",
                "timctl validate -f manifests/ && timctl plan -f manifests/",
            ),
            ("Delete it, asking first:", "timctl apply -f manifests/"),
            (
                "In CI, with the state in PostgreSQL and the key from a secret:",
                "TIMCTL_STATE=postgres://timctl@db.example.com/timctl TIMCTL_SECRET_KEY_FILE=/run/secrets/tim-key timctl apply -f manifests/ --refresh --auto-approve --max-deletes 500",
            ),
        ],
        "validate" => &[
            (
                "Check every manifest below manifests/:",
                "timctl validate -f manifests/",
            ),
            (
                "In GitHub Actions, as annotations on the pull request:",
                "timctl validate -f manifests/ --format github",
            ),
        ],
        "plan" => &[
            (
                "What apply would do, from the manifests and the state:",
                "timctl plan -f manifests/",
            ),
            (
                "Save the plan for apply, and exit 2 when it has changes:",
                "timctl plan -f manifests/ --out plan.json --detailed-exitcode",
            ),
            (
                "A pull-request comment:",
                "timctl plan -f manifests/ --format markdown > plan.md",
            ),
            (
                "The scheduled drift alarm (reads the server's lists; exits 2 on drift, 1 when it cannot look):",
                "timctl plan -f manifests/ --refresh --drift-exitcode",
            ),
        ],
        "show" => &[
            ("Print a saved plan:", "timctl show plan.json"),
            (
                "As Markdown, for a comment:",
                "timctl show plan.json --format markdown",
            ),
        ],
        "apply" => &[
            (
                "Plan, show the plan, ask, then delete:",
                "timctl apply -f manifests/",
            ),
            (
                "Carry out a saved plan exactly (no prompt; refused if the state moved on):",
                "timctl apply plan.json",
            ),
            (
                "In CI: look at the server first, never more than 500 deletions, one JSON event per line:",
                "timctl apply -f manifests/ --refresh --auto-approve --max-deletes 500 --lock-timeout 10m --json",
            ),
        ],
        "serve" => &[
            (
                "Enforce the manifests, with the token from a file (as a systemd credential):",
                "TIMCTL_CALLBACK_TOKEN_FILE=/run/credentials/timctl/token timctl serve -f manifests/",
            ),
            (
                "In a pod: the ops listener on every address, callbacks only from the gateway:",
                "timctl serve -f /manifests --ops-listen 0.0.0.0:9464 --callback-allow 10.0.0.0/8",
            ),
            (
                "HTTPS from cert-manager's files, manifests from git-sync, at most 500 new deletions per change, 90 days of history:",
                "timctl serve -f /git/current --tls-cert /tls/tls.crt --tls-key /tls/tls.key --max-deletes 500 --history-retention 90d",
            ),
            (
                "Read the manifests and the certificate again now:",
                "kill -HUP \"$(pidof timctl)\"",
            ),
        ],
        "schema" => &[(
            "Write the schema for editors (see the manifest's first line):",
            "timctl schema --out timctl.schema.json",
        )],
        "state show" => &[(
            "One conversation: its entry, then every deletion, record, forget and removal, newest first:",
            "timctl state show alice user:bob",
        )],
        "state" | "state list" => &[
            ("The recorded deletions:", "timctl state list"),
            ("One user's:", "timctl state list --user alice"),
            (
                "As JSON, from a PostgreSQL state holding several apps:",
                "timctl state list --json --sdkappid 1400000001",
            ),
        ],
        "state rm" => &[(
            "See what would be removed, then remove it:",
            "timctl state rm alice user:bob --dry-run && timctl state rm alice user:bob",
        )],
        "fmt" => &[
            (
                "Rewrite the manifests in the canonical layout, comments kept:",
                "timctl fmt -f manifests/",
            ),
            (
                "In CI: fail naming the files that are not formatted, and show how:",
                "timctl fmt -f manifests/ --check --diff",
            ),
        ],
        "state history" => &[
            (
                "When was this conversation deleted, by which run, how often did it come back:",
                "timctl state history --user alice --peer user:bob --limit 0",
            ),
            (
                "The last week, as JSON Lines:",
                "timctl state history --since 7d --json",
            ),
        ],
        "state runs" => &[(
            "The runs that wrote the state, with their CI jobs:",
            "timctl state runs --json",
        )],
        "state prune-history" => &[(
            "How many events are older than a year, then delete them:",
            "timctl state prune-history --before 365d --dry-run && timctl state prune-history --before 365d",
        )],
        "state migrate" => &[(
            "Move the state from the SQLite file to PostgreSQL:",
            "timctl state migrate --to postgres://timctl@db.example.com/timctl?sslmode=verify-full",
        )],
        "usersig" => &[
            (
                "Make a UserSig for curl (printed alone on stdout):",
                "TIMCTL_SECRET_KEY_FILE=key.txt timctl usersig --expire 1h",
            ),
            (
                "Check one, reading it from stdin:",
                "printf %s \"$SIG\" | TIMCTL_SECRET_KEY_FILE=key.txt timctl usersig --verify -",
            ),
        ],
        "completions" => &[
            (
                "bash:",
                "timctl completions bash > ~/.local/share/bash-completion/completions/timctl",
            ),
            (
                "zsh (with fpath+=~/.zfunc before compinit):",
                "timctl completions zsh > ~/.zfunc/_timctl",
            ),
            (
                "fish:",
                "timctl completions fish > ~/.config/fish/completions/timctl.fish",
            ),
        ],
        "man" => &[(
            "Install for your user, then read one:",
            "timctl man --out ~/.local/share/man/man1 && man timctl-plan",
        )],
        _ => &[],
    }
}

/// The sections as text, for `--help` (clap's `after_long_help`).
pub(crate) fn to_text(sections: &Sections) -> String {
    let mut out = String::new();
    if !sections.environment.is_empty() {
        out.push_str("Environment:\n");
        for v in &sections.environment {
            out.push_str(&format!("  {}\n          {}\n", v.name, v.doc));
        }
    }
    out.push_str("\nExit status:\n");
    for (code, meaning) in sections.exit_status {
        out.push_str(&format!("  {code}\n          {meaning}\n"));
    }
    if !sections.examples.is_empty() {
        out.push_str("\nExamples:\n");
        for (comment, line) in sections.examples {
            out.push_str(&format!("  # {comment}\n  {line}\n"));
        }
    }
    out.trim_end().to_owned()
}

/// Adds each command's sections to its `--help`, recursively.
pub(crate) fn document(cmd: Command) -> Command {
    let globals: Vec<clap::Arg> = cmd
        .get_arguments()
        .filter(|a| a.is_global_set())
        .cloned()
        .collect();
    let globals: Vec<&clap::Arg> = globals.iter().collect();
    document_at(cmd, "", &globals)
}

fn document_at(mut cmd: Command, path: &str, globals: &[&clap::Arg]) -> Command {
    let text = to_text(&sections(&cmd, path, globals));
    cmd = cmd.after_long_help(text);
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .collect();
    for name in names {
        let sub_path = if path.is_empty() {
            name.clone()
        } else {
            format!("{path} {name}")
        };
        cmd = cmd.mut_subcommand(&name, |sub| document_at(sub, &sub_path, globals));
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn paths(cmd: &Command, prefix: &str, out: &mut Vec<String>) {
        out.push(prefix.to_owned());
        for sub in cmd.get_subcommands() {
            let path = if prefix.is_empty() {
                sub.get_name().to_owned()
            } else {
                format!("{prefix} {}", sub.get_name())
            };
            paths(sub, &path, out);
        }
    }

    #[test]
    fn every_command_has_examples_and_every_variable_names_real_commands() {
        let cmd = crate::args::Cli::command();
        let mut all = Vec::new();
        paths(&cmd, "", &mut all);
        for path in &all {
            // `help` is clap's own; `state` groups its subcommands, which have their own.
            if path == "help" {
                continue;
            }
            assert!(
                !examples(path).is_empty(),
                "no examples for `timctl {path}`"
            );
        }
        for v in VARIABLES {
            for c in v.commands {
                assert!(all.iter().any(|p| p == c), "{}: no command `{c}`", v.name);
            }
        }
    }

    #[test]
    fn a_command_lists_its_flags_variables_and_the_globals() {
        let cmd = document(crate::args::Cli::command());
        let apply = cmd.find_subcommand("apply").unwrap();
        let help = apply.get_after_long_help().unwrap().to_string();
        for name in [
            "TIMCTL_STATE",
            "TIMCTL_MAX_DELETES",
            "TIMCTL_SECRET_KEY",
            MANIFEST_VARIABLE,
        ] {
            assert!(help.contains(name), "apply --help lacks {name}:\n{help}");
        }
        let schema = cmd.find_subcommand("schema").unwrap();
        let help = schema.get_after_long_help().unwrap().to_string();
        assert!(!help.contains("TIMCTL_SECRET_KEY"), "{help}");
        assert!(help.contains("TIMCTL_STATE"), "{help}");
    }
}
