timctl_macros::api!("../../../../core/tests/specs/bad/wrong_value_type.yaml");

fn main() {}
