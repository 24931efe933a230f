//! One module per command: its flags (`Args`) and a `run` that calls into `timctl-core` and
//! prints the result.

pub(crate) mod apply;
pub(crate) mod completions;
pub(crate) mod fmt;
pub(crate) mod man;
pub(crate) mod plan;
pub(crate) mod schema;
pub(crate) mod serve;
pub(crate) mod show;
pub(crate) mod state;
pub(crate) mod usersig;
pub(crate) mod validate;
