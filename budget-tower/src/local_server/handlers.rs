//! The HTTP routes: `POST /v1/chat/completions`, `GET /v1/models`, and OpenAI-shaped errors.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::reply::Completion;
use super::request::{ChatRequest, RequestError};
use super::sse::{StreamEnd, cut_json_response, first_half, stream_response};
use super::{Behavior, FailureKind, LocalServer};

/// The largest request body accepted.
const BODY_LIMIT: usize = 64 * 1024 * 1024;

/// What the routes share: the configuration and what has been received.
#[derive(Debug)]
pub(super) struct ServerState {
    pub(super) config: LocalServer,
    received: AtomicU64,
    requests: Mutex<Vec<Value>>,
}

impl ServerState {
    pub(super) fn new(config: LocalServer) -> ServerState {
        ServerState {
            config,
            received: AtomicU64::new(0),
            requests: Mutex::new(Vec::new()),
        }
    }

    /// Chat requests received so far.
    pub(super) fn requests_received(&self) -> u64 {
        self.received.load(Ordering::SeqCst)
    }

    /// The bodies of the chat requests received so far, in arrival order.
    pub(super) fn requests(&self) -> Vec<Value> {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The body of the last chat request received.
    pub(super) fn last_request(&self) -> Option<Value> {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .last()
            .cloned()
    }

    /// Counts a request and keeps its body; returns its 0-based index.
    fn record(&self, body: Value) -> u64 {
        let mut requests = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        // Counted under the lock so that index `i` is always `requests()[i]`.
        let index = self.received.fetch_add(1, Ordering::SeqCst);
        requests.push(body);
        index
    }
}

/// The router serving the OpenAI-compatible API.
pub(super) fn router(state: Arc<ServerState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(list_models))
        .fallback(unknown_url)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

async fn chat_completions(State(state): State<Arc<ServerState>>, body: Bytes) -> Response {
    let parsed = serde_json::from_slice::<Value>(&body);
    let recorded = match &parsed {
        Ok(value) => value.clone(),
        Err(_) => Value::String(String::from_utf8_lossy(&body).into_owned()),
    };
    let index = state.record(recorded);
    let config = &state.config;
    let behavior = config.behavior_for(index);

    if !config.latency.is_zero() {
        tokio::time::sleep(config.latency).await;
    }
    if let Behavior::Fail(kind) = behavior {
        return failure_response(kind, config.retry_after);
    }
    let request = match parsed
        .map_err(|error| RequestError::InvalidJson(error.to_string()))
        .and_then(|value| ChatRequest::parse(&body, &value))
    {
        Ok(request) => request,
        Err(error) => return invalid_request(&error),
    };

    let completion = Completion::generate(config, &request, behavior, index);
    if request.stream {
        let end = match behavior {
            Behavior::MalformedBody => StreamEnd::Malformed,
            Behavior::CutStream { after_chunks } => StreamEnd::CutAfter(after_chunks),
            Behavior::UsageMissing => StreamEnd::Complete { with_usage: false },
            Behavior::Normal | Behavior::IgnoreCap | Behavior::Fail(_) => {
                StreamEnd::Complete { with_usage: true }
            }
        };
        return stream_response(&completion, request.include_usage, end, config.chunk_delay);
    }
    match behavior {
        Behavior::MalformedBody => {
            let text = completion.to_json(true).to_string();
            json_text_response(StatusCode::OK, first_half(&text).to_owned())
        }
        Behavior::CutStream { .. } => cut_json_response(&completion.to_json(true)),
        Behavior::UsageMissing => {
            json_text_response(StatusCode::OK, completion.to_json(false).to_string())
        }
        Behavior::Normal | Behavior::IgnoreCap | Behavior::Fail(_) => {
            json_text_response(StatusCode::OK, completion.to_json(true).to_string())
        }
    }
}

async fn list_models(State(state): State<Arc<ServerState>>) -> Response {
    let data: Vec<Value> = state
        .config
        .models
        .iter()
        .map(|id| json!({"id": id, "object": "model", "created": 0, "owned_by": OWNED_BY}))
        .collect();
    json_text_response(
        StatusCode::OK,
        json!({"object": "list", "data": data}).to_string(),
    )
}

/// The `owned_by` of every listed model.
const OWNED_BY: &str = "token-budget-local";

async fn unknown_url(method: Method, uri: Uri) -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        HeaderMap::new(),
        &format!("Unknown request URL: {method} {}.", uri.path()),
        "invalid_request_error",
        None,
        Some("unknown_url"),
    )
}

fn invalid_request(error: &RequestError) -> Response {
    error_response(
        StatusCode::BAD_REQUEST,
        HeaderMap::new(),
        &error.to_string(),
        "invalid_request_error",
        error.param().as_deref(),
        None,
    )
}

fn failure_response(kind: FailureKind, retry_after: Duration) -> Response {
    match kind {
        FailureKind::RateLimited => {
            let seconds = ceil_seconds(retry_after);
            let reset = reset_text(retry_after);
            let mut headers = HeaderMap::new();
            headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
            let numbers = [
                ("x-ratelimit-limit-requests", 500_u64),
                ("x-ratelimit-limit-tokens", 30_000),
                ("x-ratelimit-remaining-requests", 0),
                ("x-ratelimit-remaining-tokens", 0),
            ];
            for (name, value) in numbers {
                headers.insert(HeaderName::from_static(name), HeaderValue::from(value));
            }
            for name in ["x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"] {
                if let Ok(value) = HeaderValue::from_str(&reset) {
                    headers.insert(HeaderName::from_static(name), value);
                }
            }
            error_response(
                StatusCode::TOO_MANY_REQUESTS,
                headers,
                &format!(
                    "Rate limit reached for requests on the local test server. Please try again in {reset}."
                ),
                "requests",
                None,
                Some("rate_limit_exceeded"),
            )
        }
        FailureKind::InsufficientQuota => error_response(
            StatusCode::TOO_MANY_REQUESTS,
            HeaderMap::new(),
            "You exceeded your current quota, please check your plan and billing details.",
            "insufficient_quota",
            None,
            Some("insufficient_quota"),
        ),
        FailureKind::ServerError => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            HeaderMap::new(),
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
            None,
            None,
        ),
    }
}

/// OpenAI's error JSON: `{"error":{"message","type","param","code"}}`.
fn error_response(
    status: StatusCode,
    headers: HeaderMap,
    message: &str,
    kind: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> Response {
    let body = json!({"error": {"message": message, "type": kind, "param": param, "code": code}});
    let mut response = json_text_response(status, body.to_string());
    response.headers_mut().extend(headers);
    response
}

fn json_text_response(status: StatusCode, text: String) -> Response {
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        text,
    )
        .into_response()
}

/// Whole seconds, rounded up, as `retry-after` needs.
fn ceil_seconds(duration: Duration) -> u64 {
    duration
        .as_secs()
        .saturating_add(u64::from(duration.subsec_nanos() > 0))
}

/// OpenAI's reset format: `20ms` below a second, `6s` otherwise.
fn reset_text(duration: Duration) -> String {
    if duration < Duration::from_secs(1) {
        format!("{}ms", duration.as_millis())
    } else {
        format!("{}s", ceil_seconds(duration))
    }
}
