//! What the server does with one chat request: reply normally, or fail in a scripted way.

/// How the server answers one chat request.
///
/// The server picks a behaviour per request: the one scripted for the request's index with
/// [`LocalServer::on_request`](super::LocalServer::on_request), else the default set with
/// [`LocalServer::always`](super::LocalServer::always) ([`Behavior::Normal`] unless changed).
/// Nothing depends on the model name or the prompt: failures are configured, never guessed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Behavior {
    /// A normal, deterministic reply (JSON, or SSE when the request asks to stream).
    #[default]
    Normal,
    /// An OpenAI error response with the HTTP status and error JSON of `FailureKind`. Sent
    /// before the request body is even validated, as a provider's front door would.
    Fail(FailureKind),
    /// HTTP 200 whose body is not valid JSON. For a non-streaming request the whole body is a
    /// truncated JSON document; for a streaming one, the first (role) chunk is valid, the next
    /// `data:` line is truncated JSON, then `data: [DONE]` follows.
    MalformedBody,
    /// A normal reply without any usage: the `usage` key is left out of JSON responses, and no
    /// usage chunk is streamed even when `stream_options.include_usage` asks for one.
    UsageMissing,
    /// The connection is cut mid-response. A streaming reply sends the role chunk and the first
    /// `after_chunks` content chunks (one token each), then the connection closes abruptly:
    /// no finish chunk, no usage chunk, no `data: [DONE]`. A non-streaming reply sends the first
    /// half of its JSON body, then closes the same way.
    CutStream {
        /// How many content chunks (tokens) arrive before the cut.
        after_chunks: u64,
    },
    /// The request's output cap (`max_completion_tokens` / `max_tokens`) is ignored: the reply
    /// has the configured length even when that is more than the cap, and `finish_reason` is
    /// `stop`. Simulates a provider overrunning the cap, to test cutoffs on our side.
    IgnoreCap,
}

/// An error response the server can be told to send (see [`Behavior::Fail`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// HTTP 429 with error `type` `requests` and `code` `rate_limit_exceeded`, a `retry-after`
    /// header (whole seconds, see [`LocalServer::retry_after`](super::LocalServer::retry_after))
    /// and OpenAI's `x-ratelimit-*` headers. A retry may succeed.
    RateLimited,
    /// HTTP 429 with error `type` and `code` `insufficient_quota`, no `retry-after`. Permanent:
    /// retrying does not help.
    InsufficientQuota,
    /// HTTP 500 with error `type` `server_error`.
    ServerError,
}
