//! Unit tests of the generator on spec text: what it emits, and that spec edits alone change it.

use super::generate;

const COMMON: &str = include_str!("../../api-spec/common.yaml");
const DELETE: &str = include_str!("../../api-spec/recentcontact_delete.yaml");
const GET_LIST: &str = include_str!("../../api-spec/recentcontact_get_list.yaml");

/// Generates from (name, text) pairs and pretty-prints, or returns the error messages.
fn check(files: &[(&str, &str)]) -> Result<String, Vec<String>> {
    let files: Vec<(String, String)> = files
        .iter()
        .map(|(n, t)| ((*n).to_owned(), (*t).to_owned()))
        .collect();
    let includes: Vec<String> = files.iter().map(|(n, _)| n.clone()).collect();
    match generate(&files, &includes) {
        Ok(tokens) => {
            let file: syn::File = syn::parse2(tokens).expect("generated code parses as Rust");
            Ok(prettyplease::unparse(&file))
        }
        Err(errors) => Err(errors.iter().map(ToString::to_string).collect()),
    }
}

fn real_spec() -> String {
    check(&[
        ("common.yaml", COMMON),
        ("recentcontact_delete.yaml", DELETE),
    ])
    .unwrap()
}

#[test]
fn generated_code_snapshot() {
    insta::assert_snapshot!("recentcontact_delete", real_spec());
}

fn get_list_spec() -> String {
    check(&[
        ("common.yaml", COMMON),
        ("recentcontact_get_list.yaml", GET_LIST),
    ])
    .unwrap()
}

#[test]
fn generated_get_list_snapshot() {
    insta::assert_snapshot!("recentcontact_get_list", get_list_spec());
}

#[test]
fn a_new_error_code_is_a_spec_edit() {
    let edited = DELETE.replace(
        "    errors:\n",
        "    errors:\n      - code: 50006\n        name: ConversationGone\n        class: already_absent\n        meaning: Gone.\n        action: Count as done.\n",
    );
    let before = real_spec();
    let after = check(&[
        ("common.yaml", COMMON),
        ("recentcontact_delete.yaml", &edited),
    ])
    .unwrap();
    assert!(!before.contains("ConversationGone"));
    let compact: String = after.split_whitespace().collect();
    assert!(
        compact.contains("ConversationGone{///Theserver'sErrorInfo.info:::std::string::String,}")
    );
    assert!(compact.contains("50006i64=>{RecentContactDeleteError::ConversationGone{info,}}"));
    assert!(compact.contains(
        "RecentContactDeleteError::ConversationGone{..}=>{::timctl_core::api::ErrorClass::AlreadyAbsent}"
    ));
}

#[test]
fn a_different_rate_limit_is_a_spec_edit() {
    let edited = DELETE.replace("calls_per_second: 200", "calls_per_second: 150");
    let after = check(&[
        ("common.yaml", COMMON),
        ("recentcontact_delete.yaml", &edited),
    ])
    .unwrap();
    assert!(real_spec().contains("const CALLS_PER_SECOND: u32 = 200u32;"));
    assert!(after.contains("const CALLS_PER_SECOND: u32 = 150u32;"));
}

#[test]
fn errors_name_file_line_and_column() {
    let edited = DELETE.replace("type: bool01", "type: boolean");
    let errors = check(&[("common.yaml", COMMON), ("d.yaml", &edited)]).unwrap_err();
    let line = edited
        .lines()
        .position(|l| l.contains("type: boolean"))
        .unwrap()
        + 1;
    assert_eq!(
        errors,
        vec![format!(
            "d.yaml:{line}:15: unknown field type `boolean`; expected string, integer, bool01, int_enum or array"
        )]
    );
}

#[test]
fn every_problem_is_reported_not_only_the_first() {
    let edited = DELETE
        .replace("code: 50002", "code: 50001")
        .replace("class: retry", "class: sometimes");
    let errors = check(&[("common.yaml", COMMON), ("d.yaml", &edited)]).unwrap_err();
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert!(
        errors
            .iter()
            .any(|e| e.contains("duplicate error code 50001: first defined at d.yaml:"))
    );
    assert_eq!(
        errors
            .iter()
            .filter(|e| e.contains("unknown error class `sometimes`"))
            .count(),
        2
    );
}

#[test]
fn a_public_code_repeated_by_an_endpoint_is_refused() {
    let edited = DELETE.replace("code: 50005", "code: 60007");
    let errors = check(&[("common.yaml", COMMON), ("d.yaml", &edited)]).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].starts_with("common.yaml:"), "{}", errors[0]);
    assert!(errors[0].contains("duplicate error code 60007: first defined at d.yaml:"));
}

#[test]
fn yaml_errors_name_the_place_once() {
    let errors = check(&[("d.yaml", "endpoints:\n  - name: \"unclosed\n")]).unwrap_err();
    assert_eq!(errors, vec!["d.yaml:2:11: unclosed quote".to_owned()]);
}
