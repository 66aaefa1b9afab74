//! The `besterd` binary.
fn main() {}
