timctl_macros::api!("../../../../core/tests/specs/bad/enum_value_not_integer.yaml");

fn main() {}
