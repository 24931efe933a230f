timctl_macros::api!("../../../../core/tests/specs/bad/duplicate_error_code.yaml");

fn main() {}
