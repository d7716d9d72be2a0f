//! Support shared by the integration tests (each includes it with `mod support;`): a user's own
//! request and response types (any LLM client works, not only async-openai), budgets and task
//! scopes, and async-openai pointed at the local server.

#![allow(dead_code, unreachable_pub)]

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use budget_core::conversation::{Role, Turn};
use budget_core::scope::TaskScope;
use budget_core::{
    Attribution, Budget, CommitDetails, Limit, Period, Selector, TaskId, TokenCount, Usage, Window,
    count_text,
};
use budget_tower::cache::CacheableResponse;
use budget_tower::enforce::Cutoff;
use budget_tower::llm::ChatRequest;
use budget_tower::{ChunkStream, LlmChunk, LlmRequest, LlmResponse};
use futures::StreamExt;
use tower::{Service, ServiceExt};

// ---------------------------------------------------------------------------------------------
// A user's own request type.

#[derive(Debug, Clone)]
pub struct Ask {
    pub model: &'static str,
    pub prompt: String,
    pub cap: Option<u64>,
    pub stream: bool,
    /// `cache_key` is `None` unless set (like temperature > 0 without a seed).
    pub deterministic: bool,
}

impl Ask {
    /// A deterministic, complete (not streamed) request to gpt-4o-mini, capped at 200 tokens.
    pub fn new(prompt: &str) -> Ask {
        Ask {
            model: "gpt-4o-mini",
            prompt: prompt.into(),
            cap: Some(200),
            stream: false,
            deterministic: true,
        }
    }

    pub fn with_cap(self, cap: Option<u64>) -> Ask {
        Ask { cap, ..self }
    }

    pub fn streamed(self) -> Ask {
        Ask {
            stream: true,
            ..self
        }
    }

    pub fn sampled(self) -> Ask {
        Ask {
            deterministic: false,
            ..self
        }
    }

    pub fn on(self, model: &'static str) -> Ask {
        Ask { model, ..self }
    }

    /// What changes the answer: model, prompt, cap (not `stream`).
    pub fn content_key(&self) -> u128 {
        let mut h = DefaultHasher::new();
        (self.model, &self.prompt, self.cap).hash(&mut h);
        u128::from(h.finish())
    }
}

impl LlmRequest for Ask {
    fn model(&self) -> &str {
        self.model
    }
    fn count_prompt(&self) -> TokenCount {
        count_text(self.model, &self.prompt)
    }
    fn max_output_tokens(&self) -> Option<u64> {
        self.cap
    }
    fn set_max_output_tokens(&mut self, cap: u64) {
        self.cap = Some(cap);
    }
    fn is_stream(&self) -> bool {
        self.stream
    }
    fn latest_input(&self) -> Option<String> {
        Some(self.prompt.clone())
    }
}

impl ChatRequest for Ask {
    fn turns(&self) -> Vec<Turn> {
        vec![Turn::new(Role::User, self.prompt.clone())]
    }
    fn set_turns(&mut self, turns: &[Turn]) {
        self.prompt = turns.iter().map(|t| t.text.as_str()).collect();
    }
    fn set_model(&mut self, _: &str) {}
    fn cache_key(&self) -> Option<u128> {
        self.deterministic.then(|| self.content_key())
    }
}

// ---------------------------------------------------------------------------------------------
// A user's own response type.

#[derive(Debug, Clone, PartialEq)]
pub struct Piece {
    pub text: String,
    pub usage: Option<Usage>,
}

impl LlmChunk for Piece {
    fn usage(&self) -> Option<Usage> {
        self.usage
    }
    fn output_text(&self) -> String {
        self.text.clone()
    }
    fn served_model(&self) -> Option<&str> {
        None
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PieceError {
    #[error("provider broke")]
    Broken,
    #[error(transparent)]
    Cutoff(#[from] Cutoff),
}

pub enum Answer {
    Complete { text: String, usage: Option<Usage> },
    Stream(ChunkStream<Piece, PieceError>),
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Answer::Complete { text, usage } => f
                .debug_struct("Complete")
                .field("text", text)
                .field("usage", usage)
                .finish(),
            Answer::Stream(_) => f.write_str("Stream(..)"),
        }
    }
}

impl Answer {
    /// A stream of `pieces`.
    pub fn stream_of<I>(pieces: I) -> Answer
    where
        I: IntoIterator<Item = Result<Piece, PieceError>>,
        I::IntoIter: Send + 'static,
    {
        Answer::Stream(Box::pin(futures::stream::iter(pieces)))
    }

    pub fn text(&self) -> &str {
        match self {
            Answer::Complete { text, .. } => text,
            Answer::Stream(_) => panic!("a stream, not a complete answer"),
        }
    }

    pub async fn pieces(self) -> Vec<Piece> {
        match self {
            Answer::Stream(s) => s.map(|p| p.unwrap()).collect().await,
            Answer::Complete { .. } => panic!("a complete answer, not a stream"),
        }
    }
}

impl LlmResponse for Answer {
    type Chunk = Piece;
    type StreamError = PieceError;

    fn is_stream(&self) -> bool {
        matches!(self, Answer::Stream(_))
    }
    fn usage(&self) -> Option<Usage> {
        match self {
            Answer::Complete { usage, .. } => *usage,
            Answer::Stream(_) => None,
        }
    }
    fn served_model(&self) -> Option<&str> {
        None
    }
    fn output_text(&self) -> String {
        match self {
            Answer::Complete { text, .. } => text.clone(),
            Answer::Stream(_) => String::new(),
        }
    }
    fn map_stream<F>(self, wrap: F) -> Self
    where
        F: FnOnce(ChunkStream<Piece, PieceError>) -> ChunkStream<Piece, PieceError>,
    {
        match self {
            Answer::Stream(s) => Answer::Stream(wrap(s)),
            complete => complete,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The response type, as a cache stores it.

/// The stored form: the text and the usage it cost.
#[derive(Debug, Clone)]
pub struct Stored {
    text: String,
    usage: Usage,
}

impl CacheableResponse for Answer {
    type Cached = Stored;

    fn to_cached(&self) -> Option<Stored> {
        match self {
            Answer::Complete {
                text,
                usage: Some(usage),
            } => Some(Stored {
                text: text.clone(),
                usage: *usage,
            }),
            _ => None,
        }
    }

    fn from_cached(cached: &Stored, as_stream: bool) -> Answer {
        if !as_stream {
            return Answer::Complete {
                text: cached.text.clone(),
                usage: Some(cached.usage),
            };
        }
        let pieces = [
            Piece {
                text: cached.text.clone(),
                usage: None,
            },
            Piece {
                text: String::new(),
                usage: Some(cached.usage),
            },
        ];
        Answer::stream_of(pieces.into_iter().map(Ok))
    }
}

// ---------------------------------------------------------------------------------------------
// Calls, scopes and budgets.

/// One call through `service`, once it is ready.
pub async fn send<S, R>(service: &mut S, request: R) -> Result<S::Response, S::Error>
where
    S: Service<R>,
{
    service.ready().await?.call(request).await
}

/// A scope for task `task` of `agent`.
pub fn task_scope(agent: &str, task: &str) -> TaskScope {
    TaskScope::new(Attribution::agent(agent).with_task(TaskId::new(task)))
}

/// A scope for task `task` of the agent "agent".
pub fn scope(task: &str) -> TaskScope {
    task_scope("agent", task)
}

/// `tokens` for each task of the agent "agent".
pub fn per_task(tokens: u64) -> Limit {
    Limit::new("task", Selector::agent("agent"), Window::PerTask).tokens(tokens)
}

/// `tokens` a day, for everyone together.
pub fn global_day(tokens: u64) -> Limit {
    Limit::new("day", Selector::Global, Window::Calendar(Period::Day)).tokens(tokens)
}

/// `tokens` a day for `agent`, named "`agent`/day".
pub fn agent_day(agent: &str, tokens: u64) -> Limit {
    Limit::new(
        format!("{agent}/day"),
        Selector::agent(agent),
        Window::Calendar(Period::Day),
    )
    .tokens(tokens)
}

/// A budget without limits (it still records every call).
pub fn no_limits() -> Budget {
    budget_of([])
}

/// A budget that enforces `limits`.
pub fn budget_of(limits: impl IntoIterator<Item = Limit>) -> Budget {
    Budget::builder().limits(limits).build().unwrap()
}

/// A budget with a 100,000-token daily limit for `agent`, `used` of it already spent on gpt-4o.
pub async fn agent_day_at(agent: &str, used: u64) -> Budget {
    let budget = budget_of([agent_day(agent, 100_000)]);
    if used > 0 {
        budget
            .record(
                &Attribution::agent(agent),
                "gpt-4o",
                Usage::new(used, 0),
                CommitDetails::default(),
            )
            .await
            .unwrap();
    }
    budget
}

/// Asserts that nothing is left reserved in `budget`.
pub async fn no_reservations_left(budget: &Budget) {
    let status = budget.status().await.unwrap();
    assert!(
        status.iter().all(|s| s.usage.reserved.is_zero()),
        "{status:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// async-openai's chat request, and the local server.

/// async-openai's chat messages and requests.
#[cfg(feature = "openai")]
pub mod chat {
    use async_openai::types::chat::{
        ChatCompletionRequestAssistantMessageArgs, ChatCompletionRequestMessage,
        ChatCompletionRequestSystemMessageArgs, ChatCompletionRequestUserMessageArgs,
        CreateChatCompletionRequestArgs,
    };

    pub fn system_message(text: &str) -> ChatCompletionRequestMessage {
        ChatCompletionRequestSystemMessageArgs::default()
            .content(text)
            .build()
            .unwrap()
            .into()
    }

    pub fn user_message(text: &str) -> ChatCompletionRequestMessage {
        ChatCompletionRequestUserMessageArgs::default()
            .content(text)
            .build()
            .unwrap()
            .into()
    }

    pub fn assistant_message(text: &str) -> ChatCompletionRequestMessage {
        ChatCompletionRequestAssistantMessageArgs::default()
            .content(text)
            .build()
            .unwrap()
            .into()
    }

    /// A request to `model` of the one user message `text`, to finish and build.
    pub fn user_request(model: &str, text: &str) -> CreateChatCompletionRequestArgs {
        let mut args = CreateChatCompletionRequestArgs::default();
        args.model(model).messages([user_message(text)]);
        args
    }
}

/// The local server, and async-openai's client talking to it.
#[cfg(all(feature = "openai", feature = "local-server"))]
pub mod server {
    use async_openai::config::OpenAIConfig;
    use budget_tower::local_server::{LocalServer, RunningServer};
    use budget_tower::openai::OpenAiService;

    /// The local server, replying with `reply_tokens` tokens.
    pub async fn start_server(reply_tokens: u64) -> RunningServer {
        LocalServer::builder()
            .reply_tokens(reply_tokens)
            .start()
            .await
            .unwrap()
    }

    /// async-openai's client as a service, talking to `server`.
    pub fn openai_service(server: &RunningServer) -> OpenAiService {
        OpenAiService::new(
            OpenAIConfig::new()
                .with_api_base(server.base_url())
                .with_api_key("test"),
        )
    }
}
