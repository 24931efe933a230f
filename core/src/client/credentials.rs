//! How calls are signed: the app's secret key, or a ready UserSig.
//!
//! Core never reads the process environment: the binary passes a lookup function
//! ([`Credentials::from_lookup`]), so the rules (which variable wins, what counts as unset) are
//! tested here with plain data.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;

use crate::usersig::SecretKey;

/// How calls are signed. `Debug` never shows the key or the UserSig.
#[derive(Clone)]
pub enum Credentials {
    /// The app's secret key: the client makes the admin's UserSig and renews it.
    SecretKey(SecretKey),
    /// A ready UserSig, used as given.
    UserSig(String),
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::SecretKey(_) => f.write_str("Credentials::SecretKey([redacted])"),
            Credentials::UserSig(_) => f.write_str("Credentials::UserSig([redacted])"),
        }
    }
}

/// Why no credentials could be read.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum CredentialsError {
    /// Nothing set.
    #[error("no credentials to sign the calls with")]
    #[diagnostic(
        code(timctl::credentials::missing),
        help(
            "set TIMCTL_SECRET_KEY or TIMCTL_SECRET_KEY_FILE (the app's secret key, from the Chat console), or TIMCTL_USERSIG (a ready UserSig for app.admin)"
        )
    )]
    Missing,
    /// No secret key set, where one is needed (making a UserSig).
    #[error("no secret key")]
    #[diagnostic(
        code(timctl::credentials::missing_key),
        help(
            "set TIMCTL_SECRET_KEY or TIMCTL_SECRET_KEY_FILE to the app's secret key, from the Chat console"
        )
    )]
    MissingKey,
    /// Both ways of giving the key at once; which one is meant is unclear.
    #[error("both TIMCTL_SECRET_KEY and TIMCTL_SECRET_KEY_FILE are set")]
    #[diagnostic(code(timctl::credentials::both_keys), help("unset one of them"))]
    BothKeys,
    /// A variable that is not UTF-8.
    #[error("{0} is not valid UTF-8")]
    #[diagnostic(
        code(timctl::credentials::not_utf8),
        help("secret keys and UserSigs are ASCII; check how the variable is set")
    )]
    NotUtf8(&'static str),
    /// The key file could not be read.
    #[error("could not read the secret key file {path} (TIMCTL_SECRET_KEY_FILE)")]
    #[diagnostic(
        code(timctl::credentials::read_key_file),
        help("check the path and that this user may read the file")
    )]
    ReadKeyFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The key file holds nothing but whitespace.
    #[error("the secret key file {0} (TIMCTL_SECRET_KEY_FILE) is empty")]
    #[diagnostic(
        code(timctl::credentials::empty_key_file),
        help("write the app's secret key, from the Chat console, into the file")
    )]
    EmptyKeyFile(PathBuf),
}

impl Credentials {
    /// From `TIMCTL_SECRET_KEY`, `TIMCTL_SECRET_KEY_FILE` or `TIMCTL_USERSIG`, each read
    /// through `get` (the binary passes `std::env::var_os`). A secret key wins over a ready
    /// UserSig, because the client can renew what it makes. Empty values count as unset.
    pub fn from_lookup(get: impl Fn(&str) -> Option<OsString>) -> Result<Self, CredentialsError> {
        match secret_key_from_lookup(&get) {
            Ok(key) => return Ok(Credentials::SecretKey(key)),
            Err(CredentialsError::MissingKey) => {}
            Err(e) => return Err(e),
        }
        match non_empty(&get, "TIMCTL_USERSIG")? {
            Some(sig) => Ok(Credentials::UserSig(sig.trim().to_owned())),
            None => Err(CredentialsError::Missing),
        }
    }
}

/// The secret key alone, from `TIMCTL_SECRET_KEY` or `TIMCTL_SECRET_KEY_FILE` read through
/// `get` (for `timctl usersig`, which makes or checks UserSigs and so needs the key itself).
pub fn secret_key_from_lookup(
    get: &impl Fn(&str) -> Option<OsString>,
) -> Result<SecretKey, CredentialsError> {
    let key = non_empty(get, "TIMCTL_SECRET_KEY")?;
    let file = get("TIMCTL_SECRET_KEY_FILE").filter(|v| !v.is_empty());
    match (key, file) {
        (Some(_), Some(_)) => Err(CredentialsError::BothKeys),
        (Some(k), None) => SecretKey::new(k).ok_or(CredentialsError::MissingKey),
        (None, Some(path)) => {
            let path = PathBuf::from(path);
            let text =
                std::fs::read_to_string(&path).map_err(|source| CredentialsError::ReadKeyFile {
                    path: path.clone(),
                    source,
                })?;
            SecretKey::new(text).ok_or(CredentialsError::EmptyKeyFile(path))
        }
        (None, None) => Err(CredentialsError::MissingKey),
    }
}

fn non_empty(
    get: &impl Fn(&str) -> Option<OsString>,
    name: &'static str,
) -> Result<Option<String>, CredentialsError> {
    match get(name) {
        None => Ok(None),
        Some(v) => {
            let v = v
                .into_string()
                .map_err(|_| CredentialsError::NotUtf8(name))?;
            Ok(if v.trim().is_empty() { None } else { Some(v) })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_from_a_lookup() {
        use std::collections::HashMap;
        let env = |pairs: &[(&str, &str)]| {
            let m: HashMap<String, OsString> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), OsString::from(v)))
                .collect();
            move |k: &str| m.get(k).cloned()
        };
        assert!(matches!(
            Credentials::from_lookup(env(&[])),
            Err(CredentialsError::Missing)
        ));
        assert!(matches!(
            Credentials::from_lookup(env(&[("TIMCTL_SECRET_KEY", " ")])),
            Err(CredentialsError::Missing)
        ));
        assert!(matches!(
            Credentials::from_lookup(env(&[("TIMCTL_SECRET_KEY", "k"), ("TIMCTL_USERSIG", "s")])),
            Ok(Credentials::SecretKey(_))
        ));
        assert!(
            matches!(Credentials::from_lookup(env(&[("TIMCTL_USERSIG", "s")])), Ok(Credentials::UserSig(s)) if s == "s")
        );
        assert!(matches!(
            Credentials::from_lookup(env(&[
                ("TIMCTL_SECRET_KEY", "k"),
                ("TIMCTL_SECRET_KEY_FILE", "/f")
            ])),
            Err(CredentialsError::BothKeys)
        ));
        assert!(matches!(
            secret_key_from_lookup(&env(&[("TIMCTL_USERSIG", "s")])),
            Err(CredentialsError::MissingKey)
        ));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key");
        std::fs::write(&file, "from-file\n").unwrap();
        let found =
            Credentials::from_lookup(env(&[("TIMCTL_SECRET_KEY_FILE", file.to_str().unwrap())]))
                .unwrap();
        assert!(matches!(&found, Credentials::SecretKey(k) if k.expose() == "from-file"));
        assert!(!format!("{found:?}").contains("from-file"));
        let missing = dir.path().join("nope");
        let err = Credentials::from_lookup(env(&[(
            "TIMCTL_SECRET_KEY_FILE",
            missing.to_str().unwrap(),
        )]))
        .unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
