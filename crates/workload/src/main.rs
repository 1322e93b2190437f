//! `ringrift-job`: the embedded workload CLI.
fn main() {}
