timctl_macros::api!("../../../../core/tests/specs/bad/array_of_structs_in_request.yaml");

fn main() {}
