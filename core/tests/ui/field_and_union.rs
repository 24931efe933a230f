timctl_macros::api!("../../../../core/tests/specs/bad/field_and_union.yaml");

fn main() {}
