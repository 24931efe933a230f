//! Properties of the generated response decoders of both endpoints, on arbitrary JSON and bytes
//! (issue 11): decoding never panics, and an answer is never a success unless its
//! `ActionStatus` is exactly `OK` and its `ErrorCode` exactly 0.
//!
//! proptest's default of 256 cases per property keeps CI quick; run longer with
//! `PROPTEST_CASES=100000 cargo test -p timctl-core --test api_properties`.

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use timctl_core::api::{
    ApiError, Endpoint, ErrorClass, RecentContactDelete, RecentContactDeleteResponse,
    RecentContactGetList, RecentContactGetListResponse, SessionItem,
};

/// Keys the decoders know, mixed with others, so that generated objects often hit real fields.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            RecentContactGetListResponse::ACTION_STATUS,
            RecentContactGetListResponse::ERROR_CODE,
            RecentContactGetListResponse::ERROR_INFO,
            RecentContactGetListResponse::ERROR_DISPLAY,
            RecentContactGetListResponse::SESSION_ITEMS,
            RecentContactGetListResponse::COMPLETE_FLAG,
            RecentContactGetListResponse::TIME_STAMP,
            RecentContactGetListResponse::START_INDEX,
            RecentContactGetListResponse::TOP_TIME_STAMP,
            RecentContactGetListResponse::TOP_START_INDEX,
            SessionItem::CONVERSATION_TAG,
            SessionItem::TO_ACCOUNT,
            SessionItem::GROUP_ID,
            SessionItem::MSG_TIME,
            SessionItem::TOP_FLAG,
            "StandardMark",
            "ContactGroupId",
        ])
        .prop_map(str::to_owned),
        1 => "[A-Za-z_]{0,12}",
    ]
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        prop::sample::select(vec![0i64, 1, 2, 3, -1, 50001, 50004, 60007, 70001])
            .prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        prop::sample::select(vec!["OK", "FAIL", "ok", " OK", "", "0"]).prop_map(Value::from),
        ".{0,16}".prop_map(Value::from),
    ]
}

fn arbitrary_json() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..8)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// An object with a status and a code (often valid ones) and arbitrary other members.
fn answer_like() -> impl Strategy<Value = Value> {
    let status = prop_oneof![
        3 => Just(Some(json!("OK"))),
        1 => Just(Some(json!("FAIL"))),
        1 => prop::option::of(scalar()),
    ];
    let code = prop_oneof![3 => Just(Some(json!(0))), 1 => prop::option::of(scalar())];
    (
        status,
        code,
        prop::collection::vec((key(), arbitrary_json()), 0..4),
    )
        .prop_map(|(status, code, rest)| {
            let mut obj: Map<String, Value> = rest.into_iter().collect();
            if let Some(s) = status {
                obj.insert("ActionStatus".into(), s);
            }
            if let Some(c) = code {
                obj.insert("ErrorCode".into(), c);
            }
            Value::Object(obj)
        })
}

/// Whether the JSON itself says success: exactly `"OK"` and exactly the integer 0.
fn says_success(v: &Value) -> bool {
    v.get("ActionStatus") == Some(&json!("OK"))
        && v.get("ErrorCode").and_then(Value::as_i64) == Some(0)
}

/// Decodes and judges `v` as endpoint `E`'s answer; checks the success rule both ways.
fn check<E: Endpoint>(v: &Value, status_code: impl Fn(&E::Response) -> (&str, i64)) {
    let Ok(parsed) = serde_json::from_value::<E::Response>(v.clone()) else {
        return;
    };
    let seen = {
        let (s, c) = status_code(&parsed);
        (s.to_owned(), c)
    };
    match E::into_result(parsed) {
        Ok(_) => {
            assert_eq!((seen.0.as_str(), seen.1), ("OK", 0), "{v}");
            assert!(says_success(v), "taken for success: {v}");
        }
        Err(e) => {
            assert!(!says_success(v), "a success was refused ({e}): {v}");
            // A code-0 failure is transient, never "already absent" or fatal.
            if e.code() == 0 {
                assert_eq!(e.class(), ErrorClass::Retry, "{v}");
            }
        }
    }
}

fn check_both(v: &Value) {
    check::<RecentContactDelete>(v, |r: &RecentContactDeleteResponse| {
        (r.action_status.as_str(), r.error_code)
    });
    check::<RecentContactGetList>(v, |r: &RecentContactGetListResponse| {
        (r.action_status.as_str(), r.error_code)
    });
}

proptest! {
    #[test]
    fn arbitrary_json_never_panics_and_never_succeeds_unless_ok_and_zero(v in arbitrary_json()) {
        check_both(&v);
    }

    #[test]
    fn answer_like_objects_follow_the_success_rule(v in answer_like()) {
        check_both(&v);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = serde_json::from_slice::<RecentContactDeleteResponse>(&bytes);
        let _ = serde_json::from_slice::<RecentContactGetListResponse>(&bytes);
    }

    /// Pages with arbitrary items: decoding fails or keeps every item (an unknown Type is kept,
    /// never dropped), so no conversation silently disappears from a page.
    #[test]
    fn a_decoded_page_keeps_every_item(items in prop::collection::vec(arbitrary_json(), 0..6)) {
        let v = json!({"ActionStatus": "OK", "ErrorCode": 0, "SessionItem": items.clone()});
        if let Ok(page) = serde_json::from_value::<RecentContactGetListResponse>(v) {
            prop_assert_eq!(page.session_items.len(), items.len());
        }
    }
}
