//! `timctl serve`'s library: from an authenticated callback to a recorded deletion.
//!
//! - [`enforcer`], the deduplicated queue with the settle rule, the deletions through the
//!   apply's [`Deleter`](crate::apply::Deleter) and the recording thread.
//! - [`http`], the callback listener (`POST /callback`) and the ops listener (`/healthz`,
//!   `/readyz`, `/metrics`) as axum routers.
//! - [`listener`], the callback listener's connections: the cap, the client deadline, TLS.
//! - [`metrics`], the metrics README documents, through prometheus-client.
//! - [`reload`], the controller loop's pure parts: what a reload changes, `--max-deletes`,
//!   the users waiting for a targeted resync.
//! - [`resync`], `apply --refresh`'s work for some or all users, behind enforcement.
//! - [`replica`], replicas on PostgreSQL: the standby's forwarding to the state's queue and the
//!   active replica's taking from it.
//! - [`controller`], the life after start: terms as the active replica, a standby or held
//!   between them, and the resync and reload loops.
//! - [`cidr`], `--callback-allow`.
//!
//! The binary (`reconciler/src/cmd/serve.rs`) reads flags, the token and the credentials,
//! binds the sockets in the documented order, tries the state's lock, and hands the rest to
//! [`controller::Replica::run`].

pub mod cidr;
pub mod controller;
pub mod enforcer;
pub mod http;
pub mod listener;
pub mod metrics;
pub mod reload;
pub mod replica;
pub mod resync;

use crate::callback::Message;

/// The history's `trigger` of an enforced deletion: `{"command", "msg_key"}` for a one-to-one
/// message, `{"command", "group_id", "msg_seq"}` for a group message; `command` always, the
/// others when the callback carried them.
pub fn trigger(message: &Message) -> serde_json::Value {
    let mut t = serde_json::Map::new();
    match message {
        Message::OneToOne { msg_key, .. } => {
            t.insert("command".into(), crate::callback::C2C_AFTER_SEND.into());
            if let Some(k) = msg_key {
                t.insert("msg_key".into(), k.as_str().into());
            }
        }
        Message::Group { group, msg_seq } => {
            t.insert("command".into(), crate::callback::GROUP_AFTER_SEND.into());
            t.insert("group_id".into(), group.as_str().into());
            if let Some(s) = msg_seq {
                t.insert("msg_seq".into(), (*s).into());
            }
        }
    }
    serde_json::Value::Object(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triggers_carry_the_command_and_what_the_callback_named() {
        let one = Message::OneToOne {
            from: "a".into(),
            to: "b".into(),
            msg_key: Some("1_2_3".into()),
        };
        assert_eq!(
            trigger(&one),
            serde_json::json!({"command": "C2C.CallbackAfterSendMsg", "msg_key": "1_2_3"})
        );
        let group = Message::Group {
            group: "g".into(),
            msg_seq: None,
        };
        assert_eq!(
            trigger(&group),
            serde_json::json!({"command": "Group.CallbackAfterSendMsg", "group_id": "g"})
        );
    }
}
