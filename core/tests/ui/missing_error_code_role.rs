timctl_macros::api!("../../../../core/tests/specs/bad/missing_error_code_role.yaml");

fn main() {}
