//! The API's error type: plantd's shared [`AppError`] (one JSON shape for
//! every HTTP API).

pub use plantd_shared::http::AppError;
