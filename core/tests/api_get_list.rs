//! The generated `recentcontact/get_list` types against the endpoint's documentation
//! (https://www.tencentcloud.com/document/product/1047/43087): the sample request and
//! responses, the Type-keyed union, the named integers, the cursors and the error codes.

use serde_json::json;
use timctl_core::api::{
    ApiError, CompleteFlag, Endpoint, ErrorClass, ListedConversation, RecentContactGetList,
    RecentContactGetListError, RecentContactGetListRequest, RecentContactGetListResponse,
    SessionItem, TopFlag,
};

fn parse(body: &str) -> Result<RecentContactGetListResponse, RecentContactGetListError> {
    let resp: RecentContactGetListResponse = serde_json::from_str(body).unwrap();
    RecentContactGetList::into_result(resp)
}

#[test]
fn the_request_serialises_to_the_documented_sample() {
    let req = RecentContactGetListRequest {
        from_account: "user_0001".into(),
        time_stamp: 0,
        start_index: 0,
        top_time_stamp: 0,
        top_start_index: 0,
        assist_flags: 63,
    };
    assert_eq!(
        serde_json::to_string(&req).unwrap(),
        r#"{"From_Account":"user_0001","TimeStamp":0,"StartIndex":0,"TopTimeStamp":0,"TopStartIndex":0,"AssistFlags":63}"#
    );
}

#[test]
fn endpoint_constants_match_the_documentation() {
    assert_eq!(RecentContactGetList::PATH, "v4/recentcontact/get_list");
    assert_eq!(RecentContactGetList::CALLS_PER_SECOND, 200);
    assert_eq!(RecentContactGetList::NAME, "RecentContactGetList");
    assert_eq!(RecentContactGetListResponse::COMPLETE_FLAG, "CompleteFlag");
    assert_eq!(SessionItem::CONVERSATION_TAG, "Type");
    assert_eq!(SessionItem::GROUP_ID, "GroupId");
}

/// The older versions' sample response, as documented.
const SAMPLE: &str = r#"{"SessionItem": [
   {"Type": 1, "To_Account": "id2", "MsgTime": 1630997627, "TopFlag": 1},
   {"Type": 2, "GroupId": "id3", "MsgTime": 1630997628, "TopFlag": 1},
   {"Type": 1, "To_Account": "id4", "MsgTime": 1630997630, "TopFlag": 0},
   {"Type": 2, "GroupId": "id5", "MsgTime": 1630997650, "TopFlag": 0}],
 "CompleteFlag": 1, "TimeStamp": 1631012800, "StartIndex": 0, "TopTimeStamp": 1631012800,
 "TopStartIndex": 0, "ActionStatus": "OK", "ErrorCode": 0, "ErrorInfo": "", "ErrorDisplay": ""}"#;

fn item(conversation: ListedConversation, msg_time: i64, top: TopFlag) -> SessionItem {
    SessionItem {
        conversation,
        msg_time: Some(msg_time),
        top_flag: Some(top),
    }
}

fn user(id: &str) -> ListedConversation {
    ListedConversation::OneToOne {
        to_account: id.into(),
    }
}

fn group(id: &str) -> ListedConversation {
    ListedConversation::Group {
        group_id: id.into(),
    }
}

#[test]
fn the_documented_sample_response_decodes() {
    let page = parse(SAMPLE).unwrap();
    assert_eq!(
        page.session_items,
        vec![
            item(user("id2"), 1630997627, TopFlag::Pinned),
            item(group("id3"), 1630997628, TopFlag::Pinned),
            item(user("id4"), 1630997630, TopFlag::Ordinary),
            item(group("id5"), 1630997650, TopFlag::Ordinary),
        ]
    );
    assert_eq!(page.complete_flag, Some(CompleteFlag::Complete));
    assert_eq!(
        (
            page.time_stamp,
            page.start_index,
            page.top_time_stamp,
            page.top_start_index
        ),
        (Some(1631012800), Some(0), Some(1631012800), Some(0))
    );
}

#[test]
fn the_newest_mark_fields_are_ignored_whatever_their_shape() {
    for marks in [
        json!({"StandardMark": "111001", "CustomMark": "abcd", "ContactGroupId": [1, 2]}),
        json!({"StandardMark": 7, "CustomMark": null, "ContactGroupId": "x"}),
        json!({}),
    ] {
        let mut entry =
            json!({"Type": 2, "GroupId": "@TGS#1B2AUI7RZ", "MsgTime": 1775185968, "TopFlag": 0});
        entry
            .as_object_mut()
            .unwrap()
            .extend(marks.as_object().unwrap().clone());
        let body = json!({"ActionStatus": "OK", "ErrorCode": 0, "CompleteFlag": 1, "SessionItem": [entry]});
        let page = parse(&body.to_string()).unwrap();
        assert_eq!(page.session_items[0].conversation, group("@TGS#1B2AUI7RZ"));
    }
}

#[test]
fn an_unknown_type_is_kept_without_failing_the_page() {
    let body = json!({"ActionStatus": "OK", "ErrorCode": 0, "CompleteFlag": 0, "SessionItem": [
        {"Type": 3, "CommunityId": "c1", "MsgTime": 1},
        {"Type": 1, "To_Account": "bob"},
    ]});
    let page = parse(&body.to_string()).unwrap();
    assert_eq!(
        page.session_items[0].conversation,
        ListedConversation::Unknown { tag: 3 }
    );
    assert_eq!(page.session_items[0].conversation.tag(), 3);
    assert_eq!(page.session_items[1].conversation, user("bob"));
    assert_eq!(page.session_items[1].msg_time, None);
    assert_eq!(page.complete_flag, Some(CompleteFlag::More));
}

#[test]
fn a_known_type_without_its_key_fails_the_page() {
    // Skipping it could make a present conversation look absent: the page must fail instead.
    for entry in [
        json!({"Type": 1, "GroupId": "g"}),
        json!({"Type": 2, "To_Account": "bob"}),
        json!({"To_Account": "bob"}),
        json!({"Type": "1", "To_Account": "bob"}),
    ] {
        let body = json!({"ActionStatus": "OK", "ErrorCode": 0, "SessionItem": [entry]});
        assert!(
            serde_json::from_value::<RecentContactGetListResponse>(body.clone()).is_err(),
            "{body}"
        );
    }
}

#[test]
fn complete_flag_is_an_integer_enum_and_its_absence_is_visible() {
    assert_eq!(CompleteFlag::from_value(0), CompleteFlag::More);
    assert_eq!(CompleteFlag::from_value(1), CompleteFlag::Complete);
    assert_eq!(CompleteFlag::from_value(2), CompleteFlag::Unknown(2));
    assert_eq!(CompleteFlag::Complete.value(), 1);
    assert_eq!(CompleteFlag::Unknown(9).value(), 9);
    let page = parse(r#"{"ActionStatus":"OK","ErrorCode":0,"CompleteFlag":2}"#).unwrap();
    assert_eq!(page.complete_flag, Some(CompleteFlag::Unknown(2)));
    let page = parse(r#"{"ActionStatus":"OK","ErrorCode":0}"#).unwrap();
    assert_eq!(
        page.complete_flag, None,
        "a missing CompleteFlag must be visible"
    );
    assert!(
        page.session_items.is_empty(),
        "an absent SessionItem reads as empty"
    );
    let page = parse(r#"{"ActionStatus":"OK","ErrorCode":0,"SessionItem":null}"#).unwrap();
    assert!(page.session_items.is_empty());
}

#[test]
fn success_needs_ok_and_code_zero() {
    let err = parse(r#"{"ActionStatus":"FAIL","ErrorCode":0,"CompleteFlag":1}"#).unwrap_err();
    assert!(matches!(err, RecentContactGetListError::NotOk { .. }));
    assert_eq!(err.class(), ErrorClass::Retry);
    let err = parse(r#"{"ActionStatus":"OK","ErrorCode":50002,"ErrorInfo":"bad"}"#).unwrap_err();
    assert_eq!(
        err,
        RecentContactGetListError::InvalidParameter { info: "bad".into() }
    );
}

#[test]
fn error_codes_have_their_classes() {
    let class = |code| RecentContactGetListError::from_code(code, String::new()).class();
    // 50001 is the only already_absent code of get_list: "this user has no conversations".
    assert_eq!(class(50001), ErrorClass::AlreadyAbsent);
    assert_eq!(class(50002), ErrorClass::Item);
    assert_eq!(class(50003), ErrorClass::Fatal);
    assert_eq!(class(50004), ErrorClass::Retry);
    assert_eq!(class(50005), ErrorClass::Retry);
    assert_eq!(class(60007), ErrorClass::Retry);
    assert_eq!(class(70001), ErrorClass::Fatal);
    let absent: Vec<i64> = RecentContactGetListError::CODES
        .iter()
        .copied()
        .filter(|&c| class(c) == ErrorClass::AlreadyAbsent && c < 60000)
        .collect();
    assert_eq!(absent, [50001]);
}
