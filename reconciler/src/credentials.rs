//! The credentials, read from the process environment: the one place the binary reads
//! `TIMCTL_SECRET_KEY`, `TIMCTL_SECRET_KEY_FILE` and `TIMCTL_USERSIG`. The rules live in
//! `timctl_core::client::credentials`, over a lookup function.

use timctl_core::client::{Credentials, CredentialsError, secret_key_from_lookup};
use timctl_core::usersig::SecretKey;

/// The credentials for calls: a secret key wins over a ready UserSig.
pub(crate) fn from_env() -> Result<Credentials, CredentialsError> {
    Credentials::from_lookup(|name| std::env::var_os(name))
}

/// The secret key alone (for `timctl usersig`).
pub(crate) fn secret_key_from_env() -> Result<SecretKey, CredentialsError> {
    secret_key_from_lookup(&|name: &str| std::env::var_os(name))
}
