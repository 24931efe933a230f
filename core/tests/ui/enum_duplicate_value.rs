timctl_macros::api!("../../../../core/tests/specs/bad/enum_duplicate_value.yaml");

fn main() {}
