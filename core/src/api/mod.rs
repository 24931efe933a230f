//! The typed API layer.
//!
//! Everything that describes the wire (request and response types, the error enum with one
//! variant per documented code, the endpoint constants and the regions) is generated at compile
//! time by [`timctl_macros::api!`] from the YAML files in `api-spec/`. This module adds only the
//! two small traits that make the client generic over endpoints, and the error classes.

use std::fmt;

/// One REST endpoint: ties its request, response and error types together, so that the client
/// is written once for every endpoint the spec describes.
pub trait Endpoint {
    /// The endpoint's name in the spec, e.g. `RecentContactDelete`.
    const NAME: &'static str;
    /// Path below the host, without a leading slash, e.g. `v4/recentcontact/delete`.
    const PATH: &'static str;
    /// The documented maximum call frequency.
    const CALLS_PER_SECOND: u32;
    /// The JSON body sent.
    type Request: serde::Serialize + Send + Sync;
    /// The JSON body received; unknown fields are ignored.
    type Response: serde::de::DeserializeOwned + Send;
    /// A non-zero `ErrorCode`, typed.
    type Error: ApiError;
    /// Splits a parsed response into success, or the typed error its `ErrorCode` carries.
    fn into_result(response: Self::Response) -> Result<Self::Response, Self::Error>;
}

/// A non-zero `ErrorCode` from the server, as the spec describes it.
pub trait ApiError: std::error::Error + Send + Sync + 'static {
    /// The numeric code, e.g. 50001.
    fn code(&self) -> i64;
    /// What the code does to the caller.
    fn class(&self) -> ErrorClass;
    /// What the code means, from the spec.
    fn meaning(&self) -> &'static str;
    /// What a caller should do about it, from the spec.
    fn action(&self) -> &'static str;
    /// The server's `ErrorInfo` text (may be empty).
    fn info(&self) -> &str;
}

/// What an error code does to the caller. The spec assigns one to every code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// Transient: back off and try the same call again.
    Retry,
    /// Dooms every call of the run (bad credentials, unknown app): stop everything.
    Fatal,
    /// This call failed; the others may succeed.
    Item,
    /// There is nothing to delete (the user does not exist): the item counts as done.
    AlreadyAbsent,
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorClass::Retry => "retry",
            ErrorClass::Fatal => "fatal",
            ErrorClass::Item => "item",
            ErrorClass::AlreadyAbsent => "already_absent",
        })
    }
}

/// Helpers the generated `Deserialize` impls call, so that each field reads as one line.
#[doc(hidden)]
pub mod decode {
    /// Fills a field's slot, refusing a key that appears twice (as serde's derive does).
    pub fn once<T, E: serde::de::Error>(
        slot: &mut Option<T>,
        value: T,
        wire: &'static str,
    ) -> Result<(), E> {
        if slot.is_some() {
            return Err(E::duplicate_field(wire));
        }
        *slot = Some(value);
        Ok(())
    }

    /// A required field's value, or the error naming it.
    pub fn required<T, E: serde::de::Error>(slot: Option<T>, wire: &'static str) -> Result<T, E> {
        slot.ok_or_else(|| E::missing_field(wire))
    }
}

timctl_macros::api!(
    "../api-spec/common.yaml",
    "../api-spec/recentcontact_delete.yaml",
    "../api-spec/recentcontact_get_list.yaml"
);
