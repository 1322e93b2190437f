//! Files moved between nodes: planned from manifests, fetched by ranges, verified, installed atomically.
