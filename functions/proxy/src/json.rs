//! Extractors with plantd's error body (shared with every HTTP API).

pub use plantd_shared::http::{Body, Params, too_large};
