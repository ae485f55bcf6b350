//! The routes of `/v1`, `/metrics` and `/healthz` (docs/api.md), and the
//! layers every request passes: `Host` and `Origin`, the bearer token and
//! the content type (`http_guard`), body limits and time limits; unknown
//! routes, wrong methods and bad path parameters answer JSON errors too.
//! Handlers only translate HTTP to `Pipelines` calls, on the
//! blocking pool: a swap or a checkpoint waits for the stream.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::{Value, json};

use super::error::{ApiError, ApiResult};
use super::http_guard::{self, Guard};
use super::metrics;
use super::pipelines::{Pipelines, registry_error};

/// Body limits (413 beyond).
pub const PLUGIN_BODY_LIMIT: usize = 64 << 20;
pub const EVENTS_BODY_LIMIT: usize = 16 << 20;
pub const DEFAULT_BODY_LIMIT: usize = 1 << 20;
/// Time limits: most requests answer at once; those that wait for the
/// stream (swap, checkpoint, savepoint, stop, start) or compile (upload)
/// get longer.
const QUICK: Duration = Duration::from_secs(30);
const PATIENT: Duration = Duration::from_secs(600);

const OPENAPI: &str = include_str!("openapi.json");

pub struct AppState {
    pub pipelines: Arc<Pipelines>,
    /// Who may ask: `Host`, `Origin`, the token.
    pub guard: Guard,
}

pub(super) type Shared = State<Arc<AppState>>;

/// `Path`, whose rejection (a segment that is not UTF-8 once decoded, say)
/// is Weir's JSON `400` rather than axum's plain text.
struct Param<T>(T);

impl<T, S> FromRequestParts<S> for Param<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(value) = Path::<T>::from_request_parts(parts, state).await?;
        Ok(Param(value))
    }
}

/// A command on one pipeline that takes a body: `op` runs on the blocking
/// pool, and `respond` shapes its answer.
async fn pipeline_command(
    state: Arc<AppState>,
    name: String,
    bytes: Result<Bytes, BytesRejection>,
    op: fn(&Pipelines, &str, &[u8]) -> ApiResult<Value>,
    respond: fn(Value) -> Response,
) -> ApiResult<Response> {
    let bytes = body(bytes)?;
    let p = state.pipelines.clone();
    blocking(move || op(&p, &name, &bytes).map(respond)).await
}

/// A route handler for `pipeline_command`.
macro_rules! command {
    ($op:path, $respond:expr) => {
        |State(state): Shared, Param(name): Param<String>, bytes: Result<Bytes, BytesRejection>| {
            pipeline_command(state, name, bytes, $op, $respond)
        }
    };
}

pub fn router(state: Arc<AppState>) -> Router {
    let quick = Router::new()
        .route("/v1/plugins", get(list_plugins))
        .route(
            "/v1/plugins/{digest}",
            get(get_plugin).delete(delete_plugin),
        )
        .route("/v1/pipelines", get(list_pipelines).post(create_pipeline))
        .route(
            "/v1/pipelines/{name}",
            get(pipeline_status).delete(delete_pipeline),
        )
        .route(
            "/v1/pipelines/{name}/events",
            post(command!(Pipelines::ingest, ok)).layer(DefaultBodyLimit::max(EVENTS_BODY_LIMIT)),
        )
        .route("/v1/pipelines/{name}/state/{key}", get(query_state))
        .route("/v1/pipelines/{name}/checkpoints", get(list_checkpoints))
        .route("/v1/openapi.json", get(openapi))
        .route("/metrics", get(metrics_text))
        .layer(middleware::from_fn(|req, next| {
            limit_time(QUICK, req, next)
        }));
    let patient = Router::new()
        // Compiling a component with an interpreter inside (a 36 MB Python
        // one) takes tens of seconds on a small machine.
        .route(
            "/v1/plugins",
            post(upload_plugin).layer(DefaultBodyLimit::max(PLUGIN_BODY_LIMIT)),
        )
        .route(
            "/v1/pipelines/{name}/plugin",
            put(command!(Pipelines::swap, ok)),
        )
        .route("/v1/pipelines/{name}/checkpoints", post(take_checkpoint))
        .route(
            "/v1/pipelines/{name}/savepoints",
            post(command!(Pipelines::savepoint, created)),
        )
        .route(
            "/v1/pipelines/{name}/stop",
            post(command!(Pipelines::stop, ok)),
        )
        .route(
            "/v1/pipelines/{name}/start",
            post(command!(Pipelines::start, ok)),
        )
        .layer(middleware::from_fn(|req, next| {
            limit_time(PATIENT, req, next)
        }));
    Router::new()
        .merge(quick)
        .merge(patient)
        .layer(DefaultBodyLimit::max(DEFAULT_BODY_LIMIT))
        .layer(middleware::from_fn(http_guard::require_content_type))
        .layer(middleware::from_fn(refuse_announced_oversize))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            http_guard::authorize,
        ))
        // Outside the token check: liveness probes carry no credentials.
        .route("/healthz", get(|| async { "ok" }))
        .fallback(|| async { ApiError::NotFound("no such route; see GET /v1/openapi.json".into()) })
        // After every route: it is set on the routes registered so far.
        .method_not_allowed_fallback(method_not_allowed)
        // Outermost, so that unknown routes and /healthz are checked too.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            http_guard::check_site,
        ))
        .with_state(state)
}

/// The body limit of a request (413 beyond).
fn body_limit_of(path: &str) -> usize {
    if path == "/v1/plugins" {
        PLUGIN_BODY_LIMIT
    } else if path.starts_with("/v1/pipelines/") && path.ends_with("/events") {
        EVENTS_BODY_LIMIT
    } else {
        DEFAULT_BODY_LIMIT
    }
}

/// Refuses a request that announces a body over its limit before reading
/// any of it, so a client learns at once instead of after sending it all.
/// (`DefaultBodyLimit` still cuts off a chunked body that grows too big.)
async fn refuse_announced_oversize(request: Request, next: Next) -> Response {
    let limit = body_limit_of(request.uri().path());
    let announced = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(length) = announced
        && length > limit as u64
    {
        return ApiError::PayloadTooLarge(format!(
            "the body is {length} bytes; this route takes at most {limit}"
        ))
        .into_response();
    }
    next.run(request).await
}

/// A known route asked with a method it does not take (axum keeps the
/// `Allow` header it sets).
async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::MethodNotAllowed(format!(
        "{} does not take {}; the Allow header lists the methods it takes",
        request.uri().path(),
        request.method()
    ))
}

async fn limit_time(limit: Duration, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout(format!(
            "the request took longer than {} s",
            limit.as_secs()
        ))
        .into_response(),
    }
}

/// Runs blocking pipeline work off the async executor.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::Internal(format!("a request handler failed: {e}")))?
}

fn body(bytes: Result<Bytes, BytesRejection>) -> ApiResult<Bytes> {
    Ok(bytes?)
}

fn created(value: Value) -> Response {
    (StatusCode::CREATED, ok(value)).into_response()
}

fn ok(value: Value) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

async fn upload_plugin(
    State(state): Shared,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    bytes: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let Query(params) = query?;
    let bytes = body(bytes)?;
    let pipelines = state.pipelines.clone();
    blocking(move || {
        let (info, new) = pipelines
            .registry
            .upload(
                pipelines.engine(),
                &bytes,
                params.get("name").map(String::as_str),
                params.get("version").map(String::as_str),
            )
            .map_err(registry_error)?;
        let value = pipelines.plugin_json(&info);
        Ok(if new { created(value) } else { ok(value) })
    })
    .await
}

async fn list_plugins(State(state): Shared) -> Response {
    let p = &state.pipelines;
    let list: Vec<Value> = p.registry.list().iter().map(|i| p.plugin_json(i)).collect();
    ok(json!({ "plugins": list }))
}

async fn get_plugin(State(state): Shared, Param(digest): Param<String>) -> ApiResult<Response> {
    let p = &state.pipelines;
    let info = p
        .registry
        .get(&digest)
        .ok_or_else(|| ApiError::NotFound(format!("no plugin {digest} in the registry")))?;
    Ok(ok(p.plugin_json(&info)))
}

async fn delete_plugin(State(state): Shared, Param(digest): Param<String>) -> ApiResult<Response> {
    let p = &state.pipelines;
    let users = p.users_of(&digest);
    if !users.is_empty() {
        return Err(ApiError::Conflict(format!(
            "plugin {digest} is used by pipeline(s) {}; delete them or swap them to another plugin first",
            users.join(", ")
        )));
    }
    p.registry
        .delete(p.engine(), &digest)
        .map_err(registry_error)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn create_pipeline(
    State(state): Shared,
    bytes: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let bytes = body(bytes)?;
    let p = state.pipelines.clone();
    blocking(move || p.create(&bytes).map(created)).await
}

async fn list_pipelines(State(state): Shared) -> Response {
    ok(state.pipelines.list())
}

async fn pipeline_status(State(state): Shared, Param(name): Param<String>) -> ApiResult<Response> {
    state.pipelines.status(&name).map(ok)
}

async fn delete_pipeline(State(state): Shared, Param(name): Param<String>) -> ApiResult<Response> {
    let p = state.pipelines.clone();
    blocking(move || p.delete(&name)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn take_checkpoint(State(state): Shared, Param(name): Param<String>) -> ApiResult<Response> {
    let p = state.pipelines.clone();
    blocking(move || p.checkpoint(&name).map(created)).await
}

async fn list_checkpoints(State(state): Shared, Param(name): Param<String>) -> ApiResult<Response> {
    let p = state.pipelines.clone();
    blocking(move || p.checkpoints(&name).map(ok)).await
}

async fn query_state(
    State(state): Shared,
    Param((name, key)): Param<(String, String)>,
) -> ApiResult<Response> {
    let p = state.pipelines.clone();
    blocking(move || p.query(&name, &key).map(ok)).await
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn metrics_text(State(state): Shared) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics::render(&state.pipelines.snapshot()),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_document_is_json_and_names_every_route() {
        let doc: Value = serde_json::from_str(OPENAPI).expect("valid JSON");
        let paths = doc["paths"].as_object().expect("paths");
        for route in [
            "/v1/plugins",
            "/v1/plugins/{digest}",
            "/v1/pipelines",
            "/v1/pipelines/{name}",
            "/v1/pipelines/{name}/plugin",
            "/v1/pipelines/{name}/checkpoints",
            "/v1/pipelines/{name}/savepoints",
            "/v1/pipelines/{name}/stop",
            "/v1/pipelines/{name}/start",
            "/v1/pipelines/{name}/events",
            "/v1/pipelines/{name}/state/{key}",
            "/metrics",
            "/healthz",
            "/v1/openapi.json",
        ] {
            assert!(paths.contains_key(route), "{route} is not documented");
        }
    }
}
