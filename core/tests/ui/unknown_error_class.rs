timctl_macros::api!("../../../../core/tests/specs/bad/unknown_error_class.yaml");

fn main() {}
