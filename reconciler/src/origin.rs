//! Where and by whom a run runs, as the history records it: the one place every command that
//! writes a run (apply, serve, the state commands) reads it from the environment.

use timctl_core::ledger::RunOrigin;

/// Where and by whom this run runs, for the history: the commit timctl was built from, the
/// host, the OS user and the CI job's URL (GitHub Actions, GitLab CI). Only the binary reads
/// the environment.
pub(crate) fn run_origin() -> RunOrigin {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    // `TIMCTL_LONG_VERSION` reads `0.1.0 (commit 0123abcd…, 2026-01-31)`, or `commit unknown`.
    let long = env!("TIMCTL_LONG_VERSION");
    let commit = long
        .split_once("(commit ")
        .map(|(_, rest)| {
            rest.split([',', ')'])
                .next()
                .unwrap_or("")
                .trim()
                .to_owned()
        })
        .filter(|c| !c.is_empty() && !c.starts_with("unknown"));
    RunOrigin {
        commit,
        host: Some(gethostname()).filter(|h| !h.is_empty()),
        os_user: var("USER")
            .or_else(|| var("LOGNAME"))
            .or_else(|| var("USERNAME"))
            .or_else(account_of_uid),
        ci_job_url: RunOrigin::ci_job_url(var),
    }
}

/// The account of the process's real user ID when the environment names none (cron, systemd
/// units, containers run without `USER`): its name from `/etc/passwd`, else `uid N`, so a run
/// always says who ran it.
fn account_of_uid() -> Option<String> {
    let uid = rustix::process::getuid().as_raw();
    Some(passwd_name(uid).unwrap_or_else(|| format!("uid {uid}")))
}

/// The name `/etc/passwd` gives `uid`. The file is read only up to 1 MiB: an account database
/// bigger than that is not a plain file, and the `uid N` fallback is as good an answer.
fn passwd_name(uid: u32) -> Option<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open("/etc/passwd")
        .ok()?
        .take(1 << 20)
        .read_to_string(&mut text)
        .ok()?;
    name_in_passwd(&text, uid)
}

/// The first account in a passwd file's `name:password:uid:…` lines whose uid is `uid`.
fn name_in_passwd(text: &str, uid: u32) -> Option<String> {
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id = fields.nth(1)?.parse::<u32>().ok()?;
        (id == uid && !name.is_empty()).then(|| name.to_owned())
    })
}

/// The host's name, as the state's lock holder names it.
fn gethostname() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::name_in_passwd;

    #[test]
    fn a_uid_is_named_by_its_passwd_line() {
        let passwd =
            "root:x:0:0:root:/root:/bin/sh\n# comment\nbroken\nci:x:1001:1001::/home/ci:/bin/sh\n";
        assert_eq!(name_in_passwd(passwd, 0).as_deref(), Some("root"));
        assert_eq!(name_in_passwd(passwd, 1001).as_deref(), Some("ci"));
        assert_eq!(name_in_passwd(passwd, 42), None);
    }
}
