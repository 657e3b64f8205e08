//! The router without the OpenAPI machinery, for the Lambda bootstrap
//! (built without the `openapi` feature, decision 0047).
//!
//! [`crate::routes`] lists every route once, as groups of handlers applied
//! to a router. With the `openapi` feature the groups are
//! `utoipa_axum::routes!`: each adds its handlers to the router *and*
//! their operations to the document. Without it they are
//! `plain_routes!`, which takes each handler's path and methods from the
//! same `#[utoipa::path]` annotation (its `path()` and `methods()`, two
//! constants) and registers it on a plain axum router: the operations,
//! schemas and serialisers of the document are never called, and the
//! linker drops them. `/openapi.json` then serves the committed document
//! ([`crate::openapi`]).

use axum::Router;
use axum::routing::MethodRouter;
use utoipa::openapi::HttpMethod;

use crate::AppState;

/// A router built from `(path, methods, handlers)` groups, as
/// `utoipa_axum::router::OpenApiRouter::routes` takes its groups.
#[derive(Default)]
pub struct PlainRouter {
    router: Router<AppState>,
    operations: Vec<(HttpMethod, String)>,
}

impl PlainRouter {
    /// Adds one path's handlers.
    pub fn routes(
        mut self,
        (path, methods, handlers): (String, Vec<HttpMethod>, MethodRouter<AppState>),
    ) -> Self {
        self.operations
            .extend(methods.into_iter().map(|m| (m, path.clone())));
        self.router = self.router.route(&path, handlers);
        self
    }

    /// Every `(method, path)` registered, in order (axum's path syntax:
    /// `{*topic}` for a catch-all).
    pub fn operations(&self) -> &[(HttpMethod, String)] {
        &self.operations
    }

    /// The axum router.
    pub fn into_router(self) -> Router<AppState> {
        self.router
    }
}

/// `plain_routes!(handler, …)`: the handlers of one path (the first's;
/// `utoipa_axum::routes!` requires them to share it) under the methods
/// their `#[utoipa::path]` annotations name, without their documentation.
macro_rules! plain_routes {
    // Handlers as identifier paths (not `$handler:path`: a `path` fragment
    // cannot be taken apart again to find the annotation's `__path_<fn>`).
    ( $( $($seg:ident)::+ ),+ $(,)? ) => {{
        use utoipa_axum::PathItemExt as _;
        let paths: Vec<String> = vec![$( utoipa_axum::routes!(@path [path()] of $($seg)::+) ),+];
        let mut methods = Vec::new();
        let mut handlers = axum::routing::MethodRouter::new();
        $(
            for method in utoipa_axum::routes!(@path [methods()] of $($seg)::+) {
                handlers = handlers.on(method.to_method_filter(), $($seg)::+);
                methods.push(method);
            }
        )+
        (paths.into_iter().next().unwrap_or_default(), methods, handlers)
    }};
}
pub(crate) use plain_routes;
