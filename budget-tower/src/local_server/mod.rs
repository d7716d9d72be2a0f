//! A local OpenAI-compatible server: the stand-in for the LLM provider in demos and end-to-end
//! tests (real HTTP on loopback, so real clients such as async-openai talk to it unchanged).
//!
//! # Endpoints
//!
//! - `POST /v1/chat/completions`: chat requests, non-streaming (JSON) or streaming
//!   (`"stream": true`, Server-Sent Events). Requests are read leniently (string or text-part
//!   contents, `max_tokens` and/or `max_completion_tokens`, `stream_options.include_usage`,
//!   `tools`); a body that is not JSON, or lacks `model` or `messages`, gets HTTP 400 with
//!   OpenAI's `invalid_request_error` JSON. No input makes the server panic.
//! - `GET /v1/models`: the configured model ids ([`LocalServer::models`]) in OpenAI's list shape.
//! - anything else: HTTP 404 with OpenAI's `unknown_url` error.
//!
//! # Replies and their usage
//!
//! Replies are deterministic: the text is drawn from a seed hashed from the request's model and
//! messages, so the same conversation always gets the same reply. The reply is made of words
//! that are single tokens in every OpenAI encoding, so token counts are **exact**:
//!
//! - the reply has `min(reply_tokens, output cap)` tokens, where the output cap is the
//!   smaller of `max_completion_tokens` and `max_tokens` (minus any reasoning tokens, which
//!   count against the cap); `finish_reason` is `length` when the cap cut the reply;
//! - `prompt_tokens` is [`budget_core::count_chat`] of the request's messages and tools, the same
//!   formula the client side uses, and `completion_tokens` is [`budget_core::count_text`] of the
//!   text sent plus the configured [`reasoning_tokens`](LocalServer::reasoning_tokens) (reported
//!   in `completion_tokens_details`); [`cached_tokens`](LocalServer::cached_tokens) are reported
//!   in `prompt_tokens_details`, never more than `prompt_tokens`;
//! - the response's `model` is the requested model, or the one set with
//!   [`served_model`](LocalServer::served_model) (e.g. a dated id for an alias);
//! - `n` (1 to 128, else a 400 naming `n`) asks for that many choices: each is its own reply
//!   under the same output cap, and `completion_tokens` (reasoning included) is their sum.
//!
//! Streams follow OpenAI's chunk sequence: a role chunk with empty content, then **one content
//! chunk per token**, a finish chunk with an empty delta, the usage chunk (empty `choices`) only
//! when `stream_options.include_usage` is true, then `data: [DONE]`. When usage was requested,
//! every other chunk carries `"usage": null`. With `n` choices, each has its role and finish
//! chunk, and their content chunks take turns, one token each.
//!
//! # Scripted failures
//!
//! Each chat request gets a [`Behavior`]: the one scripted for its index with
//! [`on_request`](LocalServer::on_request) (0-based count of chat requests received, failed and
//! invalid ones included), else the default set with [`always`](LocalServer::always). Behaviours
//! are configured explicitly; no model name or prompt changes what the server does.
//!
//! # Introspection
//!
//! [`RunningServer`] tells how many chat requests arrived
//! ([`requests_received`](RunningServer::requests_received)) and what their bodies were
//! ([`requests`](RunningServer::requests)), so tests can check that a denied call never reached
//! the provider and which `max_tokens` a budget layer sent.
//!
//! # Example
//!
//! ```
//! use budget_tower::local_server::{Behavior, FailureKind, LocalServer};
//! use serde_json::{Value, json};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//! runtime.block_on(async {
//!     let server = LocalServer::builder()
//!         .reply_tokens(5)
//!         .served_model("gpt-4o", "gpt-4o-2024-08-06")
//!         .on_request(1, Behavior::Fail(FailureKind::RateLimited))
//!         .start()
//!         .await?;
//!
//!     let http = reqwest::Client::new();
//!     let url = format!("{}/chat/completions", server.base_url());
//!     let request = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi!"}]});
//!
//!     let reply: Value = http.post(&url).json(&request).send().await?.json().await?;
//!     assert_eq!(reply["model"], "gpt-4o-2024-08-06");
//!     assert_eq!(reply["usage"]["completion_tokens"], 5);
//!     let messages = [budget_core::ChatMessage::user("Hi!")];
//!     let prompt = budget_core::count_chat("gpt-4o", &messages, None).tokens;
//!     assert_eq!(reply["usage"]["prompt_tokens"], prompt);
//!
//!     let second = http.post(&url).json(&request).send().await?;
//!     assert_eq!(second.status(), 429);
//!     assert_eq!(server.requests_received(), 2);
//!
//!     server.shutdown().await?;
//!     Ok(())
//! })
//! # }
//! ```

mod behavior;
mod handlers;
mod reply;
mod request;
mod sse;

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use behavior::{Behavior, FailureKind};

use handlers::ServerState;

/// The reply length, in tokens, when [`LocalServer::reply_tokens`] is not set.
pub const DEFAULT_REPLY_TOKENS: u64 = 60;

/// The model ids listed by `GET /v1/models` when [`LocalServer::models`] is not set.
pub const DEFAULT_MODELS: [&str; 2] = ["gpt-4o", "gpt-4o-mini"];

/// The configuration of a local OpenAI-compatible server, built fluently and started with
/// [`start`](LocalServer::start). See the [module docs](self).
///
/// ```
/// use std::time::Duration;
/// use budget_tower::local_server::{Behavior, FailureKind, LocalServer};
///
/// let config = LocalServer::builder()
///     .reply_tokens(20)
///     .chunk_delay(Duration::from_millis(5))
///     .cached_tokens(64)
///     .reasoning_tokens(8)
///     .served_model("gpt-4o", "gpt-4o-2024-08-06")
///     .on_request(3, Behavior::Fail(FailureKind::RateLimited))
///     .always(Behavior::UsageMissing);
/// assert_eq!(config.behavior_for(3), Behavior::Fail(FailureKind::RateLimited));
/// assert_eq!(config.behavior_for(4), Behavior::UsageMissing);
/// ```
#[derive(Clone)]
pub struct LocalServer {
    bind: SocketAddr,
    reply_tokens: u64,
    latency: Duration,
    chunk_delay: Duration,
    cached_tokens: u64,
    reasoning_tokens: u64,
    retry_after: Duration,
    served_models: BTreeMap<String, String>,
    models: Vec<String>,
    default_behavior: Behavior,
    script: BTreeMap<u64, Behavior>,
}

impl fmt::Debug for LocalServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let LocalServer {
            bind,
            reply_tokens,
            latency,
            chunk_delay,
            cached_tokens,
            reasoning_tokens,
            retry_after,
            served_models,
            models,
            default_behavior,
            script,
        } = self;
        f.debug_struct("LocalServer")
            .field("bind", bind)
            .field("reply_tokens", reply_tokens)
            .field("latency", latency)
            .field("chunk_delay", chunk_delay)
            .field("cached_tokens", cached_tokens)
            .field("reasoning_tokens", reasoning_tokens)
            .field("retry_after", retry_after)
            .field("served_models", served_models)
            .field("models", models)
            .field("default_behavior", default_behavior)
            .field("script", script)
            .finish()
    }
}

impl Default for LocalServer {
    fn default() -> Self {
        LocalServer {
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            reply_tokens: DEFAULT_REPLY_TOKENS,
            latency: Duration::ZERO,
            chunk_delay: Duration::ZERO,
            cached_tokens: 0,
            reasoning_tokens: 0,
            retry_after: Duration::from_secs(1),
            served_models: BTreeMap::new(),
            models: DEFAULT_MODELS.iter().map(|&id| id.to_owned()).collect(),
            default_behavior: Behavior::Normal,
            script: BTreeMap::new(),
        }
    }
}

impl LocalServer {
    /// The default configuration: 127.0.0.1 on a free port, [`DEFAULT_REPLY_TOKENS`]-token
    /// replies, no latency, no cached or reasoning tokens, [`DEFAULT_MODELS`], every request
    /// [`Behavior::Normal`].
    pub fn builder() -> LocalServer {
        LocalServer::default()
    }

    /// Listens on `127.0.0.1:port` instead of a free port chosen by the system (`0`).
    pub fn port(mut self, port: u16) -> Self {
        self.bind = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        self
    }

    /// Listens on `addr` (any interface and port; loopback is the default).
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = addr;
        self
    }

    /// The length of replies, in tokens, before the request's output cap is applied.
    pub fn reply_tokens(mut self, tokens: u64) -> Self {
        self.reply_tokens = tokens;
        self
    }

    /// Waits this long before answering each chat request (failures included).
    pub fn latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// Waits this long before each chunk of a streamed reply.
    pub fn chunk_delay(mut self, delay: Duration) -> Self {
        self.chunk_delay = delay;
        self
    }

    /// Reports this many prompt tokens as read from the prompt cache
    /// (`prompt_tokens_details.cached_tokens`), capped at the request's `prompt_tokens`.
    pub fn cached_tokens(mut self, tokens: u64) -> Self {
        self.cached_tokens = tokens;
        self
    }

    /// Reports this many hidden reasoning tokens (`completion_tokens_details.reasoning_tokens`),
    /// counted inside `completion_tokens` and against the request's output cap, as OpenAI's
    /// reasoning models do. They produce no text.
    pub fn reasoning_tokens(mut self, tokens: u64) -> Self {
        self.reasoning_tokens = tokens;
        self
    }

    /// Reports `served` as the response's `model` when `requested` is asked for (e.g. a dated
    /// id such as `gpt-4o-2024-08-06` for the alias `gpt-4o`). Token counting still uses the
    /// requested model.
    pub fn served_model(mut self, requested: impl Into<String>, served: impl Into<String>) -> Self {
        self.served_models.insert(requested.into(), served.into());
        self
    }

    /// The model ids listed by `GET /v1/models`. Chat requests for other models are served too.
    pub fn models<I, S>(mut self, models: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.models = models.into_iter().map(Into::into).collect();
        self
    }

    /// The `retry-after` sent with [`FailureKind::RateLimited`] (rounded up to whole seconds;
    /// also the `x-ratelimit-reset-*` headers). One second unless set.
    pub fn retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// The behaviour of every chat request that has none scripted with
    /// [`on_request`](LocalServer::on_request).
    pub fn always(mut self, behavior: Behavior) -> Self {
        self.default_behavior = behavior;
        self
    }

    /// The behaviour of the `index`-th chat request (0-based, in order of arrival; failed and
    /// invalid requests count). Overrides [`always`](LocalServer::always) for that request.
    pub fn on_request(mut self, index: u64, behavior: Behavior) -> Self {
        self.script.insert(index, behavior);
        self
    }

    /// The behaviour the `index`-th chat request gets.
    pub fn behavior_for(&self, index: u64) -> Behavior {
        self.script
            .get(&index)
            .copied()
            .unwrap_or(self.default_behavior)
    }

    /// The model reported as served when `requested` is asked for.
    fn served_model_for<'a>(&'a self, requested: &'a str) -> &'a str {
        self.served_models
            .get(requested)
            .map_or(requested, String::as_str)
    }

    /// Binds the listening socket and serves in a background tokio task until
    /// [`RunningServer::shutdown`] is called or the [`RunningServer`] is dropped.
    ///
    /// Must be called inside a tokio runtime. Fails only if the address cannot be bound.
    pub async fn start(self) -> io::Result<RunningServer> {
        let listener = tokio::net::TcpListener::bind(self.bind).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(ServerState::new(self));
        let app = handlers::router(Arc::clone(&state));
        let (shutdown, stop) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    // Resolves on `shutdown()` and when the sender is dropped with the handle.
                    let _ = stop.await;
                })
                .await
        });
        Ok(RunningServer {
            addr,
            state,
            shutdown: Some(shutdown),
            task: Some(task),
        })
    }
}

/// A running local server. Dropping it stops the server (without waiting); call
/// [`shutdown`](RunningServer::shutdown) to wait until it has stopped.
pub struct RunningServer {
    addr: SocketAddr,
    state: Arc<ServerState>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<io::Result<()>>>,
}

impl fmt::Debug for RunningServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunningServer")
            .field("addr", &self.addr)
            .field("requests_received", &self.requests_received())
            .finish_non_exhaustive()
    }
}

impl RunningServer {
    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The API base URL, e.g. `http://127.0.0.1:41234/v1`, for
    /// `OpenAIConfig::new().with_api_base(..)`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The configuration the server runs with.
    pub fn config(&self) -> &LocalServer {
        &self.state.config
    }

    /// How many chat requests have arrived, failed and invalid ones included.
    pub fn requests_received(&self) -> u64 {
        self.state.requests_received()
    }

    /// The bodies of the chat requests received so far, in order of arrival (index `i` is the
    /// request [`on_request(i, ..)`](LocalServer::on_request) scripts). A body that is not
    /// JSON is kept as a JSON string of its (lossily decoded) text.
    pub fn requests(&self) -> Vec<Value> {
        self.state.requests()
    }

    /// The body of the last chat request received, if any (see
    /// [`requests`](RunningServer::requests)).
    pub fn last_request(&self) -> Option<Value> {
        self.state.last_request()
    }

    /// Stops accepting connections, lets the requests in flight finish, and waits until the
    /// server has stopped.
    pub async fn shutdown(mut self) -> io::Result<()> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        match self.task.take() {
            Some(task) => task.await.map_err(io::Error::other)?,
            None => Ok(()),
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}
