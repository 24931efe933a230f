timctl_macros::api!("../../../../core/tests/specs/bad/unknown_key.yaml");

fn main() {}
