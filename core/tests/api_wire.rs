//! The generated API layer against the endpoint's documentation: the sample requests, the
//! sample response, and every documented error code with the class the issue assigns it.

use timctl_core::api::{
    ApiError, Conversation, Endpoint, ErrorClass, RecentContactDelete, RecentContactDeleteError,
    RecentContactDeleteRequest, RecentContactDeleteResponse, Region,
};

/// The doc's samples, whitespace removed: same keys, same order, same values.
const SAMPLE_ONE_TO_ONE: &str =
    r#"{"From_Account":"id1","Type":1,"To_Account":"id2","ClearRamble":1}"#;
const SAMPLE_GROUP: &str = r#"{"From_Account":"id1","Type":2,"ToGroupid":"id2","ClearRamble":1}"#;

fn request(conversation: Conversation, clear: Option<bool>) -> String {
    let req = RecentContactDeleteRequest {
        from_account: "id1".into(),
        conversation,
        clear_ramble: clear,
    };
    serde_json::to_string(&req).unwrap()
}

#[test]
fn requests_serialise_to_the_documented_samples() {
    let one = Conversation::OneToOne {
        to_account: "id2".into(),
    };
    let group = Conversation::Group {
        to_groupid: "id2".into(),
    };
    assert_eq!(request(one.clone(), Some(true)), SAMPLE_ONE_TO_ONE);
    assert_eq!(request(group, Some(true)), SAMPLE_GROUP);
    assert_eq!(
        request(one.clone(), Some(false)),
        r#"{"From_Account":"id1","Type":1,"To_Account":"id2","ClearRamble":0}"#
    );
    assert_eq!(
        request(one, None),
        r#"{"From_Account":"id1","Type":1,"To_Account":"id2"}"#
    );
}

#[test]
fn endpoint_constants_match_the_documentation() {
    assert_eq!(RecentContactDelete::PATH, "v4/recentcontact/delete");
    assert_eq!(RecentContactDelete::CALLS_PER_SECOND, 200);
    assert_eq!(timctl_core::api::query::USERSIG, "usersig");
}

fn parse(body: &str) -> Result<RecentContactDeleteResponse, RecentContactDeleteError> {
    let resp: RecentContactDeleteResponse = serde_json::from_str(body).unwrap();
    RecentContactDelete::into_result(resp)
}

#[test]
fn the_documented_ok_response_is_success() {
    let ok =
        parse(r#"{"ActionStatus": "OK", "ErrorCode": 0, "ErrorInfo": "", "ErrorDisplay": ""}"#);
    assert_eq!(ok.unwrap().action_status, "OK");
    // The doc mentions ResultCode and ResultInfo, and servers add fields: they are ignored.
    let extra =
        parse(r#"{"ActionStatus":"OK","ErrorCode":0,"ResultCode":0,"ResultInfo":"","X":[1]}"#);
    assert!(extra.is_ok());
}

/// The classes the issue assigns, written out here independently of the spec.
fn expected_class(code: i64) -> ErrorClass {
    match code {
        60007 | 60008 | 60011 | 60013 | 60014 | 60018 | 60019 | 70169 | 70500 | 50004 | 50005 => {
            ErrorClass::Retry
        }
        60002 | 60003 | 60004 | 60005 | 60006 | 60009 | 60010 | 60012 | 60015 | 60016 | 60017
        | 60020 | 60021 | 60025 | 60026 | 70001 | 70002 | 70003 | 70005 | 70009 | 70013 | 70014
        | 70016 | 70020 | 70050 | 70052 | 50003 => ErrorClass::Fatal,
        50002 => ErrorClass::Item,
        50001 | 70107 => ErrorClass::AlreadyAbsent,
        other => panic!("code {other} is not in the issue's table"),
    }
}

#[test]
fn every_documented_code_parses_to_its_typed_error_and_class() {
    let codes = RecentContactDeleteError::CODES;
    assert_eq!(
        codes.len(),
        5 + 9 + 26 + 1,
        "50001-50005, 9 retry, 26 fatal, 70107"
    );
    for &code in codes {
        let body =
            format!(r#"{{"ActionStatus":"FAIL","ErrorCode":{code},"ErrorInfo":"text {code}"}}"#);
        let err = parse(&body).unwrap_err();
        assert!(
            !matches!(err, RecentContactDeleteError::Unknown { .. }),
            "{code} is unknown"
        );
        assert_eq!(err.code(), code);
        assert_eq!(err.class(), expected_class(code), "class of {code}");
        assert_eq!(err.info(), format!("text {code}"));
        assert!(!err.meaning().is_empty() && !err.action().is_empty());
    }
}

#[test]
fn the_endpoints_own_codes_are_the_documented_ones() {
    let cases = [
        (50001, "UserNotImported"),
        (50002, "InvalidParameter"),
        (50003, "AdminRequired"),
        (50004, "InternalServerError"),
        (50005, "NetworkTimeout"),
    ];
    for (code, variant) in cases {
        let err = RecentContactDeleteError::from_code(code, String::new());
        assert!(format!("{err:?}").starts_with(variant), "{code}: {err:?}");
    }
}

#[test]
fn an_unknown_code_keeps_its_code_and_text() {
    let err =
        parse(r#"{"ActionStatus":"FAIL","ErrorCode":91234,"ErrorInfo":"new thing"}"#).unwrap_err();
    assert_eq!(
        err,
        RecentContactDeleteError::Unknown {
            code: 91234,
            info: "new thing".into()
        }
    );
    assert_eq!(err.class(), ErrorClass::Item);
    assert_eq!(
        err.to_string(),
        "an error code the spec does not describe (91234): new thing"
    );
}

#[test]
fn a_missing_error_info_is_an_empty_text() {
    let err = parse(r#"{"ActionStatus":"FAIL","ErrorCode":50002}"#).unwrap_err();
    assert_eq!(err.info(), "");
    assert_eq!(err.to_string(), "Incorrect request parameter. (50002)");
}

#[test]
fn regions_match_the_product_table() {
    let table = [
        ("china", "console.tim.qq.com"),
        ("singapore", "adminapisgp.im.qcloud.com"),
        ("seoul", "adminapikr.im.qcloud.com"),
        ("tokyo", "adminapijpn.im.qcloud.com"),
        ("frankfurt", "adminapiger.im.qcloud.com"),
        ("mumbai", "adminapiind.im.qcloud.com"),
        ("silicon-valley", "adminapiusa.im.qcloud.com"),
        ("jakarta", "adminapiidn.im.qcloud.com"),
        ("saudi-arabia", "adminapiksa.im.qcloud.com"),
    ];
    assert_eq!(Region::ALL.len(), table.len());
    for (name, host) in table {
        let region: Region = name.parse().unwrap();
        assert_eq!((region.name(), region.host()), (name, host));
        assert_eq!(
            serde_json::to_string(&region).unwrap(),
            format!("\"{name}\"")
        );
    }
    assert!(
        "atlantis"
            .parse::<Region>()
            .unwrap_err()
            .contains("silicon-valley")
    );
}

/// Issue 11.1: success is `ActionStatus` OK *and* `ErrorCode` 0. A `FAIL` with code 0 used to
/// be counted as a deletion; it is now a transient failure, retried.
#[test]
fn a_fail_with_code_zero_is_a_transient_failure_not_a_success() {
    let err = parse(r#"{"ActionStatus":"FAIL","ErrorCode":0,"ErrorInfo":"busy"}"#).unwrap_err();
    assert_eq!(
        err,
        RecentContactDeleteError::NotOk {
            status: "FAIL".into(),
            info: "busy".into()
        }
    );
    assert_eq!((err.code(), err.class()), (0, ErrorClass::Retry));
    assert_eq!(err.info(), "busy");
    // Any status but exactly "OK" is a failure, whatever its case or spacing.
    for status in ["ok", "Ok", " OK", "", "SUCCESS"] {
        let body = format!(r#"{{"ActionStatus":{status:?},"ErrorCode":0}}"#);
        assert!(parse(&body).is_err(), "{body} was taken for success");
    }
}

#[test]
fn ok_with_a_non_zero_code_is_that_codes_error() {
    let err = parse(r#"{"ActionStatus":"OK","ErrorCode":50004}"#).unwrap_err();
    assert_eq!(
        err,
        RecentContactDeleteError::InternalServerError {
            info: String::new()
        }
    );
}

#[test]
fn an_answer_without_status_or_code_does_not_parse() {
    for body in [r#"{"ErrorCode":0}"#, r#"{"ActionStatus":"OK"}"#, "[]", "{}"] {
        assert!(
            serde_json::from_str::<RecentContactDeleteResponse>(body).is_err(),
            "{body}"
        );
    }
    // A key given twice is refused rather than silently taking one of them.
    let twice = r#"{"ActionStatus":"OK","ErrorCode":0,"ErrorCode":50001}"#;
    assert!(serde_json::from_str::<RecentContactDeleteResponse>(twice).is_err());
}

#[test]
fn generated_wire_names_match_the_documentation() {
    assert_eq!(RecentContactDeleteRequest::FROM_ACCOUNT, "From_Account");
    assert_eq!(RecentContactDeleteRequest::CONVERSATION_TAG, "Type");
    assert_eq!(RecentContactDeleteRequest::TO_GROUPID, "ToGroupid");
    assert_eq!(RecentContactDeleteResponse::ACTION_STATUS, "ActionStatus");
}
