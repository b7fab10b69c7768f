//! The `strom` binary.
fn main() {}
