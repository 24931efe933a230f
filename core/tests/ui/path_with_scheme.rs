timctl_macros::api!("../../../../core/tests/specs/bad/path_with_scheme.yaml");

fn main() {}
