//! `timctl state list --json`, decoded once for every test that reads the state back through
//! the binary.

use std::process::Command;

/// The document `timctl state list --json` prints; with no state, `None` meta fields and no
/// entries.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
pub struct StateList {
    /// The state's lineage (a UUID).
    pub lineage: Option<String>,
    /// The state's serial.
    pub serial: Option<u64>,
    /// The app the state is bound to.
    pub sdkappid: Option<u64>,
    /// The entries, in the order listed.
    pub entries: Vec<ListedEntry>,
}

/// One entry of [`StateList`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
pub struct ListedEntry {
    /// The From_Account.
    pub from: String,
    /// `user` or `group`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The UserID or GroupId.
    pub peer: String,
    /// Whether the roaming messages were cleared.
    pub clear_roaming: bool,
    /// When it was deleted (or seen absent), RFC 3339.
    pub deleted_at: String,
    /// `deleted` or `absent`.
    pub origin: String,
}

impl ListedEntry {
    /// The conversation as the command line spells it: `user:bob`, `group:@TGS#1`.
    pub fn conversation(&self) -> String {
        format!("{}:{}", self.kind, self.peer)
    }
}

impl StateList {
    /// Runs `cmd`, a `timctl … state list --json`, which must succeed, and decodes what it
    /// printed.
    ///
    /// # Panics
    /// When `cmd` fails or prints something else (the message has its output).
    #[track_caller]
    pub fn read(cmd: &mut Command) -> Self {
        let out = crate::run::succeeds(cmd);
        Self::parse(&String::from_utf8_lossy(&out.stdout))
    }

    /// Decodes the output of `timctl state list --json`.
    ///
    /// # Panics
    /// When `stdout` is not that document (the message has it).
    #[track_caller]
    pub fn parse(stdout: &str) -> Self {
        serde_json::from_str(stdout)
            .unwrap_or_else(|e| panic!("not the output of `state list --json` ({e}): {stdout}"))
    }

    /// The state's (lineage, serial), or `None` when there is no state.
    pub fn state_ref(&self) -> Option<(String, u64)> {
        Some((self.lineage.clone()?, self.serial?))
    }
}
