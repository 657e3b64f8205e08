//! What every plantd HTTP API shares (feature `http`): the JSON error
//! type, the extractors that answer with it, and the authenticated caller.

pub mod caller;
pub mod denials;
pub mod error;
pub mod extract;
pub mod request_id;
pub mod source;

pub use caller::{Caller, bearer, required_bearer};
pub use error::AppError;
pub use extract::{Body, Params, too_large};
