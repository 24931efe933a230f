timctl_macros::api!("../../../../core/tests/specs/bad/does_not_exist.yaml");

fn main() {}
