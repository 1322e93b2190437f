//! Embedded workload (being written).
