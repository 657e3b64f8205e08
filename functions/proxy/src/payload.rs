//! Payloads in JSON answers: a JSON value when the content type says JSON
//! and it parses, UTF-8 text as a string, anything else as base64.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// Whether a content type is JSON (`application/json`, `…+json`).
pub fn is_json(content_type: &str) -> bool {
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || mime.ends_with("+json")
}

/// `(value, value_base64)`: exactly one is `Some`.
pub fn render(content_type: &str, bytes: &[u8]) -> (Option<serde_json::Value>, Option<String>) {
    if is_json(content_type)
        && let Ok(v) = serde_json::from_slice(bytes)
    {
        return (Some(v), None);
    }
    match std::str::from_utf8(bytes) {
        Ok(text) if !content_type.starts_with("application/octet-stream") => {
            (Some(serde_json::Value::String(text.to_owned())), None)
        }
        _ => (None, Some(STANDARD.encode(bytes))),
    }
}

/// Base64 (standard alphabet, padded) of `bytes`.
pub fn encode(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Decodes base64 (standard alphabet, padded).
///
/// # Errors
/// The decoder's message.
pub fn decode(text: &str) -> Result<Vec<u8>, String> {
    STANDARD.decode(text).map_err(|e| e.to_string())
}
