//! What every plantd HTTP API shares (feature `http`): the JSON error
//! type and the extractors that answer with it.

pub mod error;
pub mod extract;

pub use error::AppError;
pub use extract::{Body, Params, too_large};
