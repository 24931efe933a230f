//! `timctl-core`: everything timctl does, as plain functions over plain data.
//!
//! The `timctl` binary is a thin layer of argument parsing and printing over this crate. The
//! modules, from the wire up:
//!
//! - [`api`]: the request, response and error types, generated at compile time from
//!   `api-spec/` by `timctl_macros::api!`. The spec is the single source of truth for the wire.
//! - [`ids`]: UserIDs, group IDs and peers, validated once where they enter.
//! - [`usersig`]: TLSSigAPIv2 UserSigs, made and verified.
//! - [`client`]: the only code that talks HTTP: signing, regions, rate limits, retries, and
//!   one user's whole conversation list (`get_list`, paged).
//! - [`input`]: the one way files from outside are read: regular files only, size-capped.
//! - [`manifest`]: reads and validates YAML manifests into a [`desired::DesiredState`]
//!   ([`desired`]: the plain data every later step works on).
//! - [`ledger`]: the state: what has been deleted, in SQLite or PostgreSQL, behind the
//!   `Ledger`/`LedgerWriter` traits, with its lock, its history and `state migrate`.
//! - [`plan`]: the pure diff of desired state against the ledger (and, with refresh, the
//!   server's lists: [`plan::observed`]), its renderings and its saved form; [`plan::make`] is
//!   the one way to make a plan.
//! - [`listing`]: the listing phase of `--refresh`: the users chosen on the state, each one's
//!   list read through a [`listing::Lister`].
//! - [`apply`]: carries a plan out through a [`apply::Deleter`] and records it in the ledger:
//!   `prepare` → `lock` → `run`, and the executor.
//! - `adapters` (private): the client as the operations' ports, side by side: apply's
//!   `Deleter` and the listing's `Lister`.
//! - [`stop`]: the one stop signal of a run, obeyed by the client, the executor and the
//!   listing.
//! - [`callback`]: Tencent's message callbacks for the reconciler (`serve`): authentication,
//!   the fields that name a conversation, and which forbidden conversations a message concerns.
//! - [`serve`]: the reconciler's enforcer (settle queue, recording thread), HTTP routers and
//!   metrics.
//!
//! # Operations
//!
//! What the binary's commands end in (ARCHITECTURE.md, "The operations"): reconcile is
//! [`listing::users_to_list`] → [`listing::list`] → [`plan::make`] (with the lists, or
//! without for a plain `plan`); apply is [`apply::prepare`] → [`apply::Prepared::lock`] →
//! [`apply::Locked::run`]; `serve` assembles the reconcile operation with [`serve`]'s
//! enforcer.

// The generated code names this crate by its external name, so that the same macro output also
// works in integration tests and other crates.
extern crate self as timctl_core;

mod adapters;
pub mod api;
pub mod apply;
pub mod callback;
pub mod client;
pub mod desired;
pub mod ids;
pub mod input;
pub mod ledger;
pub mod listing;
pub mod manifest;
pub mod plan;
pub mod serve;
pub mod stop;
pub mod usersig;
