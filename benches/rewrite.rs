//! Response rewriting benchmarks (filled in below).

fn main() {}
