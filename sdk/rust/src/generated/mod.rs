//! The REST layer, generated from the OpenAPI documents by
//! `plantd-client-codegen` (sdk/rust/codegen): do not edit these files;
//! `cargo run -p plantd-client-codegen` rewrites them and `scripts/test`
//! fails when they differ from what it would write.

pub mod identity;
pub mod proxy;
