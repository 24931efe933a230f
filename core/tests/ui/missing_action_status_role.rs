timctl_macros::api!("../../../../core/tests/specs/bad/missing_action_status_role.yaml");

fn main() {}
