use super::*;
use crate::api::Region;
use crate::desired::{App, DesiredEntry};
use crate::ids::UserId;

fn token() -> CallbackToken {
    CallbackToken::new("xxxxyyyy").unwrap()
}

fn query(sign: &str, time: &str) -> CallbackQuery {
    CallbackQuery::parse(&format!(
        "SdkAppid=1400000001&CallbackCommand=C2C.CallbackAfterSendMsg&contenttype=json&Sign={sign}&RequestTime={time}"
    ))
}

/// The documentation's worked example: token "xxxxyyyy", RequestTime "1669872112".
const EXAMPLE_SIGN: &str = "17773bc39a671d7b9aa835458704d2a6db81360a5940292b587d6d760d484061";

#[test]
fn the_documentations_worked_example_signs_and_checks() {
    assert_eq!(token().sign("1669872112"), EXAMPLE_SIGN);
    assert_eq!(
        token().check(&query(EXAMPLE_SIGN, "1669872112"), 1669872112),
        Ok(())
    );
    // Upper-case hex is the same signature.
    let upper = EXAMPLE_SIGN.to_ascii_uppercase();
    assert_eq!(
        token().check(&query(&upper, "1669872112"), 1669872150),
        Ok(())
    );
}

#[test]
fn forged_missing_and_stale_callbacks_are_refused_each_for_its_reason() {
    let t = token();
    let now = 1669872112;
    let mut forged = EXAMPLE_SIGN.to_owned();
    forged.replace_range(..1, "2");
    assert_eq!(
        t.check(&query(&forged, "1669872112"), now),
        Err(AuthError::Forged)
    );
    assert_eq!(
        t.check(&query("short", "1669872112"), now),
        Err(AuthError::Forged)
    );
    // Another token's signature of the same time.
    let other = CallbackToken::new("another").unwrap().sign("1669872112");
    assert_eq!(
        t.check(&query(&other, "1669872112"), now),
        Err(AuthError::Forged)
    );
    // A genuine signature of another time does not sign this one.
    assert_eq!(
        t.check(&query(EXAMPLE_SIGN, "1669872113"), now),
        Err(AuthError::Forged)
    );

    assert_eq!(
        t.check(
            &CallbackQuery::parse("SdkAppid=1&RequestTime=1669872112"),
            now
        ),
        Err(AuthError::Missing)
    );
    assert_eq!(
        t.check(&CallbackQuery::parse(&format!("Sign={EXAMPLE_SIGN}")), now),
        Err(AuthError::Missing)
    );
    assert_eq!(
        t.check(&query(&t.sign("soon"), "soon"), now),
        Err(AuthError::BadTime)
    );

    // The window is 60 s either way, inclusive.
    for (time, ok) in [
        (now - 60, true),
        (now + 60, true),
        (now - 61, false),
        (now + 61, false),
    ] {
        let time_s = time.to_string();
        let result = t.check(&query(&t.sign(&time_s), &time_s), now);
        if ok {
            assert_eq!(result, Ok(()), "{time}");
        } else {
            assert_eq!(
                result,
                Err(AuthError::Stale {
                    skew_seconds: time - now
                }),
                "{time}"
            );
        }
    }
}

#[test]
fn the_query_is_read_without_regard_to_case_and_the_first_value_wins() {
    let q = CallbackQuery::parse(
        "sdkappid=1400000001&CALLBACKCOMMAND=Group.CallbackAfterSendMsg&sign=ab&requesttime=5&SdkAppid=2",
    );
    assert_eq!(q.sdkappid.as_deref(), Some("1400000001"));
    assert_eq!(q.command.as_deref(), Some(GROUP_AFTER_SEND));
    assert_eq!(
        (q.sign.as_deref(), q.request_time.as_deref()),
        (Some("ab"), Some("5"))
    );
    assert!(q.is_for_app(1400000001));
    assert!(!q.is_for_app(2));
    assert!(!CallbackQuery::parse("SdkAppid=abc").is_for_app(0));
    // Escapes are decoded, in names and values alike, as form_urlencoded decodes them; pairs
    // without a value and empty pairs are read as such.
    let q = CallbackQuery::parse(
        "&Sdk%41ppid=%2014&CallbackCommand=C2C.Callback%41fterSendMsg&Sign&Request+Time=x&RequestTime=a+b%2B",
    );
    assert_eq!(q.sdkappid.as_deref(), Some(" 14"));
    assert!(q.is_for_app(14));
    assert_eq!(q.command.as_deref(), Some(C2C_AFTER_SEND));
    assert_eq!(q.sign.as_deref(), Some(""));
    assert_eq!(q.request_time.as_deref(), Some("a b+"));
    assert!(!CallbackQuery::parse("").is_for_app(0));
}

#[test]
fn the_token_never_prints_and_blank_is_none() {
    assert_eq!(format!("{:?}", token()), "CallbackToken(<redacted>)");
    assert!(CallbackToken::new(" \n").is_none());
    assert_eq!(CallbackToken::new("tok\n").unwrap().expose(), "tok");
}

#[test]
fn bodies_keep_only_what_names_the_conversation() {
    let c2c = br#"{"CallbackCommand":"C2C.CallbackAfterSendMsg","From_Account":"jared","To_Account":"Jonh",
        "MsgSeq":48374,"MsgRandom":2837546,"MsgTime":1557481126,"MsgKey":"48374_2837546_1557481126",
        "OnlineOnlyFlag":1,"SendMsgResult":0,"ErrorInfo":"send msg succeed","UnreadMsgNum":0,
        "MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"red packet"}}],
        "CloudCustomData":"x","EventTime":1670574414123,"SomethingNew":{"a":[1,2]}}"#;
    assert_eq!(
        parse_body(C2C_AFTER_SEND, c2c).unwrap(),
        Some(Message::OneToOne {
            from: "jared".into(),
            to: "Jonh".into(),
            msg_key: Some("48374_2837546_1557481126".into()),
        })
    );
    // EventTime as a string, no MsgKey: still read.
    let c2c = br#"{"From_Account":"a","To_Account":"b","EventTime":"1670574414123"}"#;
    assert!(matches!(
        parse_body(C2C_AFTER_SEND, c2c).unwrap(),
        Some(Message::OneToOne { msg_key: None, .. })
    ));
    for (seq, want) in [
        ("2", Some(2)),
        ("\"3\"", Some(3)),
        ("null", None),
        ("{}", None),
    ] {
        let body = format!(
            r#"{{"GroupId":"@TGS#2C5SZEAEF","Type":"Public","MsgSeq":{seq},"EventTime":"1"}}"#
        );
        assert_eq!(
            parse_body(GROUP_AFTER_SEND, body.as_bytes()).unwrap(),
            Some(Message::Group {
                group: "@TGS#2C5SZEAEF".into(),
                msg_seq: want
            }),
            "{seq}"
        );
    }
    // Other commands report no message.
    let alert = br#"{"ServiceName":"x","Command":"y","Request":1,"Limit":2}"#;
    assert_eq!(parse_body("Alert.RequestOverLimit", alert).unwrap(), None);
    // Malformed: not JSON, or without the fields that name the conversation.
    for body in [
        &b"not json"[..],
        br#"{"From_Account":"a"}"#,
        br#"{"From_Account":1,"To_Account":"b"}"#,
    ] {
        assert!(
            parse_body(C2C_AFTER_SEND, body).is_err(),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    assert!(parse_body(GROUP_AFTER_SEND, b"[]").is_err());
}

fn desired(entries: &[(&str, &str, bool)]) -> DesiredState {
    let mut entries: Vec<DesiredEntry> = entries
        .iter()
        .map(|(from, peer, clear)| DesiredEntry {
            key: ConversationKey::new(UserId::new(*from).unwrap(), peer.parse().unwrap()),
            clear_roaming: *clear,
        })
        .collect();
    entries.sort();
    DesiredState {
        app: App {
            sdkappid: 1400000001,
            region: Region::Singapore,
            admin: UserId::new("administrator").unwrap(),
        },
        entries,
        digest: "d".into(),
        files: 1,
    }
}

fn keys(found: &[Forbidden]) -> Vec<(String, bool)> {
    let mut k: Vec<(String, bool)> = found
        .iter()
        .map(|f| (f.key.to_string(), f.clear_roaming))
        .collect();
    k.sort();
    k
}

fn one_to_one(from: &str, to: &str) -> Message {
    Message::OneToOne {
        from: from.into(),
        to: to.into(),
        msg_key: None,
    }
}

#[test]
fn a_message_concerns_both_directions_and_every_user_of_a_group() {
    let index = ForbiddenIndex::new(&desired(&[
        ("alice", "user:bob", true),
        ("bob", "user:alice", false),
        ("carol", "user:bob", false),
        ("alice", "group:@TGS#1", false),
        ("dave", "group:@TGS#1", true),
        ("erin", "group:@TGS#2", false),
    ]))
    .unwrap();
    assert_eq!(index.len(), 6);
    // Either direction of a one-to-one message concerns both lists.
    let both = vec![
        ("alice user:bob".to_owned(), true),
        ("bob user:alice".to_owned(), false),
    ];
    assert_eq!(keys(&index.concerned(&one_to_one("alice", "bob"))), both);
    assert_eq!(keys(&index.concerned(&one_to_one("bob", "alice"))), both);
    // Only the direction a manifest names.
    assert_eq!(
        keys(&index.concerned(&one_to_one("bob", "carol"))),
        [("carol user:bob".to_owned(), false)]
    );
    // A group message: every user the manifests give that group.
    let group = |g: &str| Message::Group {
        group: g.into(),
        msg_seq: None,
    };
    assert_eq!(
        keys(&index.concerned(&group("@TGS#1"))),
        [
            ("alice group:@TGS#1".to_owned(), false),
            ("dave group:@TGS#1".to_owned(), true)
        ]
    );
    // Nobody forbids these: nothing, whatever the IDs look like.
    for m in [
        one_to_one("alice", "carol"),
        one_to_one("", "bob"),
        one_to_one("alice", "group:@TGS#1"),
        group("@TGS#3"),
        group("bob"),
        group(&"x".repeat(10_000)),
    ] {
        assert!(index.concerned(&m).is_empty(), "{m:?}");
    }
}

#[test]
fn an_index_of_many_entries_finds_each_one() {
    let entries: Vec<(String, String)> = (0..2000)
        .map(|i| {
            (
                format!("u{i}"),
                if i % 3 == 0 {
                    format!("group:g{}", i % 7)
                } else {
                    format!("user:p{i}")
                },
            )
        })
        .collect();
    let refs: Vec<(&str, &str, bool)> = entries
        .iter()
        .map(|(f, p)| (f.as_str(), p.as_str(), false))
        .collect();
    let index = ForbiddenIndex::new(&desired(&refs)).unwrap();
    for (from, peer) in &entries {
        let found = match peer.split_once(':').unwrap() {
            ("user", p) => index.concerned(&one_to_one(from, p)),
            (_, g) => index
                .concerned(&Message::Group {
                    group: g.into(),
                    msg_seq: None,
                })
                .into_iter()
                .filter(|f| f.key.from.as_str() == from)
                .collect(),
        };
        assert_eq!(found.len(), 1, "{from} {peer}");
    }
}

#[test]
fn an_id_named_as_a_user_and_as_a_group_keeps_each_entry_its_own() {
    // "ops" is a user with a one-to-one entry, a peer, and a group; the index numbers the text
    // once, and each entry keeps its kind and its clear_roaming.
    let index = ForbiddenIndex::new(&desired(&[
        ("ops", "user:alice", true),
        ("alice", "user:ops", false),
        ("alice", "group:ops", true),
        ("bob", "group:ops", false),
    ]))
    .unwrap();
    assert_eq!(index.len(), 4);
    assert_eq!(
        keys(&index.concerned(&one_to_one("alice", "ops"))),
        [
            ("alice user:ops".to_owned(), false),
            ("ops user:alice".to_owned(), true)
        ]
    );
    assert_eq!(
        keys(&index.concerned(&Message::Group {
            group: "ops".into(),
            msg_seq: None,
        })),
        [
            ("alice group:ops".to_owned(), true),
            ("bob group:ops".to_owned(), false)
        ]
    );
    // Both IDs are known, but no entry pairs them.
    assert!(index.concerned(&one_to_one("bob", "alice")).is_empty());
    assert!(index.concerned(&one_to_one("ops", "ops")).is_empty());
}
