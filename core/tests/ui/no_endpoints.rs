timctl_macros::api!("../../../../core/tests/specs/bad/no_endpoints.yaml");

fn main() {}
