timctl_macros::api!("../../../../core/tests/specs/bad/response_union_without_tag.yaml");

fn main() {}
