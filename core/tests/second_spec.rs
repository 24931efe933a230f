//! The macro works for any spec, not only timctl's: this test-only spec has two endpoints, its
//! own public codes and regions. Everything below is generated from
//! `tests/specs/two_endpoints.yaml`; no Rust was written for it.

use serde_json::json;
use timctl_core::api::{ApiError, Endpoint, ErrorClass};

mod second {
    timctl_macros::api!("tests/specs/two_endpoints.yaml");
}

use second::*;

#[test]
fn each_endpoint_has_its_constants() {
    assert_eq!(RecentContactGetList::PATH, "v4/recentcontact/get_list");
    assert_eq!(RecentContactGetList::CALLS_PER_SECOND, 50);
    assert_eq!(Pin::PATH, "v4/recentcontact/pin");
    assert_eq!(Pin::CALLS_PER_SECOND, 20);
    assert_eq!(<Pin as Endpoint>::NAME, "Pin");
}

#[test]
fn requests_serialise_in_spec_order() {
    let req = RecentContactGetListRequest {
        from_account: "alice".into(),
        time_stamp: 0,
        start_index: 10,
        assist_flags: None,
    };
    assert_eq!(
        serde_json::to_string(&req).unwrap(),
        r#"{"From_Account":"alice","TimeStamp":0,"StartIndex":10}"#
    );
    let pin = PinRequest {
        from_account: "alice".into(),
        target: PinTarget::Group {
            to_groupid: "@TGS#1".into(),
            silent: Some(true),
        },
    };
    assert_eq!(
        serde_json::to_string(&pin).unwrap(),
        r#"{"From_Account":"alice","Type":2,"ToGroupid":"@TGS#1","Silent":1}"#
    );
    let all = PinRequest {
        from_account: "alice".into(),
        target: PinTarget::Everything {},
    };
    assert_eq!(
        serde_json::to_value(&all).unwrap(),
        json!({"From_Account": "alice", "Type": 3})
    );
}

#[test]
fn errors_combine_endpoint_and_public_codes() {
    assert_eq!(PinError::CODES, &[50010, 60007, 70001]);
    assert_eq!(RecentContactGetListError::CODES, &[50001, 60007, 70001]);
    assert_eq!(
        PinError::from_code(70001, String::new()).class(),
        ErrorClass::Fatal
    );
    assert_eq!(
        PinError::from_code(50010, String::new()).class(),
        ErrorClass::Item
    );
    // 50001 is get_list's own code, not Pin's: Pin keeps it as an unknown code.
    let unknown = PinError::from_code(50001, "who?".into());
    assert_eq!(
        (unknown.code(), unknown.info(), unknown.class()),
        (50001, "who?", ErrorClass::Item)
    );
}

#[test]
fn responses_keep_extra_fields_and_ignore_unknown_ones() {
    let body = r#"{"ActionStatus":"OK","ErrorCode":0,"CompleteFlag":1,"SessionItem":[]}"#;
    let resp: RecentContactGetListResponse = serde_json::from_str(body).unwrap();
    assert_eq!(resp.complete_flag, Some(1));
    assert!(RecentContactGetList::into_result(resp).is_ok());
}

#[test]
fn regions_come_from_the_spec() {
    assert_eq!(Region::ALL, &[Region::MoonBase]);
    assert_eq!(Region::MoonBase.host(), "api.moon.test");
    assert_eq!("moon-base".parse::<Region>(), Ok(Region::MoonBase));
}

#[test]
fn arrays_of_scalars_named_integers_and_an_optional_status() {
    let resp: PinResponse = serde_json::from_value(
        json!({"ActionStatus": "OK", "ErrorCode": 0, "PinnedIds": [3, 4], "Level": 5}),
    )
    .unwrap();
    assert_eq!(resp.pinned_ids, vec![3, 4]);
    assert_eq!(resp.level, PinLevel::High);
    assert!(Pin::into_result(resp).is_ok());
    // A required array is required; a status that is absent is not OK.
    assert!(serde_json::from_value::<PinResponse>(json!({"ErrorCode": 0, "Level": 1})).is_err());
    let no_status: PinResponse =
        serde_json::from_value(json!({"ErrorCode": 0, "PinnedIds": [], "Level": 1})).unwrap();
    assert_eq!(
        Pin::into_result(no_status).unwrap_err(),
        PinError::NotOk {
            status: String::new(),
            info: String::new()
        }
    );
}
