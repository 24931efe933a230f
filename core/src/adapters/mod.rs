//! The client as the operations' ports, side by side: the one place that knows both the
//! client's HTTP calls and an operation's view of them.
//!
//! The client is generic over endpoints and knows nothing of plans; the operations know
//! nothing of HTTP. Each adapter maps an operation's request onto one endpoint and the call's
//! outcome back onto the operation's outcome:
//!
//! - [`deleter`]: [`crate::client::Client`] as apply's [`crate::apply::Deleter`]
//!   (`recentcontact/delete`);
//! - [`lister`]: [`crate::client::Client`] as the listing phase's [`crate::listing::Lister`]
//!   (`recentcontact/get_list`, paged).

pub(crate) mod deleter;
mod lister;
