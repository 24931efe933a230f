timctl_macros::api!("../../../../core/tests/specs/bad/array_without_items.yaml");

fn main() {}
