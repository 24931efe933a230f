timctl_macros::api!("../../../../core/tests/specs/bad/unknown_field_type.yaml");

fn main() {}
