//! The web app's files (`app/dist`, built by `npm run build` in `app/`),
//! served beside the API by the same server, so a site without internet
//! needs nothing else (docs/app.md, decision 0032).
//!
//! The contract:
//! * `GET`/`HEAD` of a file under the app directory → the file with a
//!   `Content-Type` from its extension. Files under `assets/` carry a
//!   content hash in their name (Vite's output) and are cached for a year
//!   (`Cache-Control: public, max-age=31536000, immutable`); everything
//!   else, `index.html` first, is `no-cache` (revalidated every load), so
//!   a new build is picked up at the next reload.
//! * An app route — a path that names no file and whose last segment has
//!   no extension (`/sites/local`, `/alarms`) — gets `index.html`: the app
//!   routes in the browser (SPA fallback).
//! * The API's own paths (`/v1/…`, `/healthz…`, `/metrics`,
//!   `/openapi.json`, `/.well-known/…`) never fall back to the app: an
//!   unknown one stays an empty 404, as without the app.
//! * A missing file with an extension (`/assets/gone.js`) is a 404, never
//!   `index.html` (a stale page must not run HTML as a script).
//! * Paths with `..`, `.`, empty segments, backslashes or NUL are refused
//!   (404) before the file system is asked; symlinks are not followed out
//!   of the directory (the resolved path must stay under it).
//! * Other methods → 405 with `Allow: GET, HEAD`.
//!
//! The files come from a directory ([`AppDir::open`]) or, in a binary
//! built with the `embed-app` feature, from the binary itself
//! ([`embedded`]; `build.rs` includes `app/dist`). Mounted as the fallback
//! of the `plantd up` server with [`router`]; the API routes keep
//! precedence because axum tries them first.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Path prefixes that belong to the API, never to the app.
const API_PREFIXES: [&str; 5] = [
    "/v1/",
    "/healthz",
    "/metrics",
    "/openapi.json",
    "/.well-known/",
];

/// `Cache-Control` of the content-hashed files under `assets/`.
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// `Cache-Control` of everything else (revalidate on every load).
pub const NO_CACHE: &str = "no-cache";

/// Why an app directory cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum StaticError {
    /// The directory has no `index.html` (not built, or the wrong path).
    #[error(
        "{dir} has no index.html: build the app (cd app && npm ci && npm run build) or point app_dir at its dist directory"
    )]
    NoIndex {
        /// The directory given.
        dir: PathBuf,
    },
    /// The directory cannot be resolved.
    #[error("app directory {dir}: {source}")]
    Io {
        /// The directory given.
        dir: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// The built app: on disk, or embedded in the binary.
#[derive(Debug, Clone)]
pub struct AppDir {
    source: Source,
}

/// Where the files are.
#[derive(Debug, Clone)]
enum Source {
    /// A directory (canonical path).
    Dir(PathBuf),
    /// A table of (path, bytes).
    Memory(&'static [(&'static str, &'static [u8])]),
}

mod embedded_files {
    include!(concat!(env!("OUT_DIR"), "/app_files.rs"));
}

/// The app embedded in this binary (built with the `embed-app` feature
/// from `app/dist`), or `None` when it was built without.
pub fn embedded() -> Option<AppDir> {
    AppDir::from_memory(embedded_files::FILES)
}

impl AppDir {
    /// An app held in memory: `(path relative to the app root, bytes)`;
    /// `None` without an `index.html`.
    pub fn from_memory(files: &'static [(&'static str, &'static [u8])]) -> Option<Self> {
        files
            .iter()
            .any(|(name, _)| *name == "index.html")
            .then_some(Self {
                source: Source::Memory(files),
            })
    }

    /// The app in `dir` (canonicalised).
    ///
    /// # Errors
    /// [`StaticError::NoIndex`] when `dir/index.html` is missing,
    /// [`StaticError::Io`] when `dir` cannot be resolved.
    pub fn open(dir: &Path) -> Result<Self, StaticError> {
        let root = dir.canonicalize().map_err(|source| StaticError::Io {
            dir: dir.to_owned(),
            source,
        })?;
        if !root.join("index.html").is_file() {
            return Err(StaticError::NoIndex { dir: root });
        }
        Ok(Self {
            source: Source::Dir(root),
        })
    }

    /// Where the files come from, for status lines: the directory, or
    /// `embedded in the binary`.
    pub fn describe(&self) -> String {
        match &self.source {
            Source::Dir(root) => root.display().to_string(),
            Source::Memory(files) => format!("embedded in the binary ({} files)", files.len()),
        }
    }
}

/// What a request path means for the app.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    /// A file (relative path, `/`-separated segments checked).
    File(String),
    /// An app route: serve `index.html`.
    Route,
    /// Not the app's: 404.
    NotFound,
}

/// Classifies a request path (the URI's path, not decoded).
fn target(path: &str) -> Target {
    if API_PREFIXES.iter().any(|p| path.starts_with(p)) {
        return Target::NotFound;
    }
    let rel = path.trim_start_matches('/');
    if rel.is_empty() {
        return Target::Route;
    }
    let bad_segment = |s: &str| {
        s.is_empty() || s == "." || s == ".." || s.contains(['\\', '\0']) || s.starts_with('.')
    };
    if rel.split('/').any(bad_segment) {
        return Target::NotFound;
    }
    Target::File(rel.to_owned())
}

/// Whether the last segment of `rel` has an extension (`app.js`).
fn has_extension(rel: &str) -> bool {
    rel.rsplit('/')
        .next()
        .is_some_and(|last| last.contains('.'))
}

/// The `Content-Type` of a file name by its extension.
pub fn content_type(name: &str) -> &'static str {
    let ext = name.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    match ext.to_ascii_lowercase().as_str() {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "webmanifest" => "application/manifest+json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        "txt" => "text/plain; charset=utf-8",
        "wasm" => "application/wasm",
        _ => "application/octet-stream",
    }
}

/// The app as an axum router whose fallback serves it; merge it into a
/// server whose other routes have no fallback of their own.
pub fn router(app: AppDir) -> Router {
    Router::new().fallback(serve).with_state(Arc::new(app))
}

fn empty(status: StatusCode) -> Response {
    status.into_response()
}

/// Reads `rel`: from memory, or under the root, refusing anything that
/// resolves outside it.
async fn read(app: &AppDir, rel: &str) -> Option<Vec<u8>> {
    let root = match &app.source {
        Source::Memory(files) => {
            return files
                .iter()
                .find(|(name, _)| *name == rel)
                .map(|(_, bytes)| bytes.to_vec());
        }
        Source::Dir(root) => root,
    };
    let path = tokio::fs::canonicalize(root.join(rel)).await.ok()?;
    if !path.starts_with(root) {
        return None;
    }
    let meta = tokio::fs::metadata(&path).await.ok()?;
    if !meta.is_file() {
        return None;
    }
    match tokio::fs::read(&path).await {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "app file unreadable");
            None
        }
    }
}

fn file_response(name: &str, bytes: Vec<u8>, head: bool, cache: &'static str) -> Response {
    let len = bytes.len();
    let body = if head {
        Body::empty()
    } else {
        Body::from(bytes)
    };
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(name)),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// The fallback handler: see the module's contract.
async fn serve(State(app): State<Arc<AppDir>>, request: Request) -> Response {
    let head = request.method() == Method::HEAD;
    if request.method() != Method::GET && !head {
        if target(request.uri().path()) == Target::NotFound {
            return empty(StatusCode::NOT_FOUND);
        }
        let mut r = empty(StatusCode::METHOD_NOT_ALLOWED);
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let rel = match target(request.uri().path()) {
        Target::NotFound => return empty(StatusCode::NOT_FOUND),
        Target::Route => None,
        Target::File(rel) => Some(rel),
    };
    if let Some(rel) = rel {
        if let Some(bytes) = read(&app, &rel).await {
            let cache = if rel.starts_with("assets/") {
                IMMUTABLE
            } else {
                NO_CACHE
            };
            return file_response(&rel, bytes, head, cache);
        }
        if has_extension(&rel) {
            return empty(StatusCode::NOT_FOUND);
        }
    }
    match read(&app, "index.html").await {
        Some(bytes) => file_response("index.html", bytes, head, NO_CACHE),
        None => empty(StatusCode::NOT_FOUND),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::to_bytes;
    use tower::ServiceExt as _;

    static FILES: &[(&str, &[u8])] = &[
        ("index.html", b"<html>app</html>"),
        ("assets/index-abc123.js", b"console.log(1)"),
        ("robots.txt", b"no"),
    ];

    async fn get(
        method: &str,
        path: &str,
    ) -> (StatusCode, Option<String>, Option<String>, Vec<u8>) {
        let app = AppDir::from_memory(FILES).expect("has index.html");
        let request = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .expect("request");
        let response = router(app).oneshot(request).await.expect("answer");
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
                .map(str::to_owned)
        };
        let (ct, cc) = (header(header::CONTENT_TYPE), header(header::CACHE_CONTROL));
        let status = response.status();
        let body = to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        (status, ct, cc, body.to_vec())
    }

    #[tokio::test]
    async fn serves_files_routes_and_refusals_from_memory() {
        let (s, ct, cc, body) = get("GET", "/").await;
        assert_eq!(
            (s, body.as_slice()),
            (StatusCode::OK, &b"<html>app</html>"[..])
        );
        assert_eq!(ct.as_deref(), Some("text/html; charset=utf-8"));
        assert_eq!(cc.as_deref(), Some(NO_CACHE));
        let (s, ct, cc, _) = get("GET", "/assets/index-abc123.js").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(ct.as_deref(), Some("text/javascript; charset=utf-8"));
        assert_eq!(cc.as_deref(), Some(IMMUTABLE));
        let (s, _, cc, _) = get("GET", "/robots.txt").await;
        assert_eq!((s, cc.as_deref()), (StatusCode::OK, Some(NO_CACHE)));
        // App routes get the page; missing files, API paths and traversal do not.
        let (s, _, _, body) = get("GET", "/sites/local").await;
        assert_eq!(
            (s, body.as_slice()),
            (StatusCode::OK, &b"<html>app</html>"[..])
        );
        for path in [
            "/assets/gone.js",
            "/v1/nope",
            "/healthz/x",
            "/../index.html",
            "/.env",
        ] {
            let (s, _, _, body) = get("GET", path).await;
            assert_eq!(s, StatusCode::NOT_FOUND, "{path}");
            assert!(body.is_empty(), "{path}");
        }
        let (s, _, _, body) = get("HEAD", "/").await;
        assert_eq!((s, body.len()), (StatusCode::OK, 0));
        assert_eq!(
            get("POST", "/sites").await.0,
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(get("POST", "/v1/nope").await.0, StatusCode::NOT_FOUND);
    }

    #[test]
    fn an_app_without_index_html_is_refused() {
        static NO_INDEX: &[(&str, &[u8])] = &[("app.js", b"")];
        assert!(AppDir::from_memory(NO_INDEX).is_none());
    }

    #[test]
    fn api_paths_never_reach_the_app() {
        for p in [
            "/v1/nope",
            "/v1/",
            "/healthz",
            "/healthz/trigger",
            "/metrics",
            "/openapi.json",
            "/.well-known/x",
        ] {
            assert_eq!(target(p), Target::NotFound, "{p}");
        }
    }

    #[test]
    fn traversal_and_hidden_segments_are_refused() {
        for p in [
            "/../etc/passwd",
            "/assets/../../x",
            "/a//b",
            "/.env",
            "/a/./b",
            "/a\\b",
        ] {
            assert_eq!(target(p), Target::NotFound, "{p}");
        }
    }

    #[test]
    fn routes_and_files() {
        assert_eq!(target("/"), Target::Route);
        assert_eq!(target("/sites/local"), Target::File("sites/local".into()));
        assert!(!has_extension("sites/local"));
        assert!(has_extension("assets/index-abc.js"));
        assert_eq!(
            content_type("assets/index-abc.js"),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("x.unknown"), "application/octet-stream");
    }
}
