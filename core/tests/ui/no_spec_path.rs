timctl_macros::api!();

fn main() {}
