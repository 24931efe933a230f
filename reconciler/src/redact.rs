//! The one redaction of what timctl prints about its input: problems in manifests (every
//! format, every command) and the error report `main` prints. The secrets are those of the
//! environment (`timctl_core::manifest::Secrets::from_lookup`) and the password of `--state`.

use std::ffi::OsString;
use std::sync::OnceLock;

use timctl_core::manifest::{ManifestErrors, Secrets};

/// `--state` as given (a PostgreSQL URL may hold a password), remembered by `main` before any
/// command runs.
static STATE: OnceLock<OsString> = OnceLock::new();

/// Remembers `--state`, whose password is one of the secrets.
pub(crate) fn remember_state(state: &std::ffi::OsStr) {
    let _ = STATE.set(state.to_owned());
}

/// The secrets to keep out of what is printed, read when something is about to be printed.
fn secrets() -> Secrets {
    let state = STATE.get().cloned().unwrap_or_default();
    Secrets::from_lookup(|name| std::env::var_os(name), &state)
}

/// The problems without the secrets, in their messages, helps and code frames.
pub(crate) fn problems(errors: &ManifestErrors) -> ManifestErrors {
    let mut errors = errors.clone();
    errors.redact(&secrets());
    errors
}

/// Rendered text without the secrets.
pub(crate) fn text(text: &str) -> String {
    secrets().scrub(text)
}
