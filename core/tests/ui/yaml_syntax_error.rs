timctl_macros::api!("../../../../core/tests/specs/bad/yaml_syntax_error.yaml");

fn main() {}
