timctl_macros::api!("../../../../core/tests/specs/bad/not_an_identifier.yaml");

fn main() {}
