//! The `calmflow` command-line program.
fn main() {}
