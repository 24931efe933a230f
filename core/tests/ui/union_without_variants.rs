timctl_macros::api!("../../../../core/tests/specs/bad/union_without_variants.yaml");

fn main() {}
