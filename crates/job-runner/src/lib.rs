//! Job runner (being written).
