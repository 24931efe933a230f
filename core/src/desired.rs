//! The desired state: what the manifests, merged and validated, ask for. It is plain data: the
//! manifest loader produces it, the planner consumes it, and neither needs the other.

use crate::api::Region;
use crate::ids::{ConversationKey, UserId};

/// The app the manifests are about, from their `app` block.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct App {
    /// The app's SDKAppID.
    pub sdkappid: u64,
    /// Where the app lives; picks the API host.
    pub region: Region,
    /// The app admin account whose UserSig signs the calls.
    pub admin: UserId,
}

/// One conversation that must not exist.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DesiredEntry {
    /// Which conversation.
    pub key: ConversationKey,
    /// Whether to clear roaming messages too (ClearRamble), after defaults were applied.
    pub clear_roaming: bool,
}

/// All manifests, merged.
///
/// Invariant: `entries` is sorted by key and holds each key once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredState {
    /// The app every manifest agreed on.
    pub app: App,
    /// The conversations that must not exist.
    pub entries: Vec<DesiredEntry>,
    /// A digest of the manifests' content (hex), recorded in plans and the ledger's audit trail.
    pub digest: String,
    /// How many manifest files were read.
    pub files: usize,
}
