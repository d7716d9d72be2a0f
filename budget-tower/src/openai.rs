//! The async-openai adapter: a tower [`Service`] over [`async_openai::Client`], and the LLM
//! traits for its chat-completion types.
//!
//! # Retries
//!
//! async-openai's default client retries 429 and 5xx responses by itself, inside one call. A
//! budget layer around such a client sees one call where the provider may have seen several.
//! [`OpenAiService::new`] therefore builds its client **without** internal retries: put
//! `tower::retry` *around* the budget layer instead, so that every attempt is reserved and
//! accounted on its own. [`OpenAiService::from_client`] keeps a client as the caller built it
//! (retries included, if any) — errors are not billed by OpenAI, so this only risks
//! double-billing for attempts that timed out after the provider had already answered.

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::task::{Context, Poll};

use async_openai::Client;
use async_openai::config::{Config, OpenAIConfig};
use async_openai::error::OpenAIError;
use async_openai::middleware::ReqwestService;
use async_openai::types::chat::{
    ChatCompletionMessageToolCalls, ChatCompletionRequestAssistantMessage,
    ChatCompletionRequestAssistantMessageContent, ChatCompletionRequestAssistantMessageContentPart,
    ChatCompletionRequestDeveloperMessageContent, ChatCompletionRequestDeveloperMessageContentPart,
    ChatCompletionRequestMessage, ChatCompletionRequestSystemMessage,
    ChatCompletionRequestSystemMessageContent, ChatCompletionRequestSystemMessageContentPart,
    ChatCompletionRequestToolMessageContent, ChatCompletionRequestToolMessageContentPart,
    ChatCompletionRequestUserMessage, ChatCompletionRequestUserMessageContent,
    ChatCompletionRequestUserMessageContentPart, ChatCompletionStreamOptions, CompletionUsage,
    CreateChatCompletionRequest, CreateChatCompletionResponse, CreateChatCompletionStreamResponse,
    InputAudioFormat,
};
use budget_core::conversation::{Role, Turn};
use budget_core::tokens::count_prompt_bound;
use budget_core::tokens::media::{
    AudioFormat, ImageDetail, MediaPart, audio_part, file_part, image_size_from_data_url,
};
use budget_core::{ChatMessage, TokenCount, Usage};
use futures::StreamExt;
use tower::Service;

use crate::enforce::{Billed, Cutoff};
use crate::llm::{Attributed, ChatRequest, ChunkStream, LlmChunk, LlmRequest, LlmResponse};

/// The response of a chat completion: complete, or a stream of chunks.
pub enum ChatReply {
    /// A complete response (`"stream": false`), boxed: it is ten times the size of a stream.
    Complete(Box<CreateChatCompletionResponse>),
    /// A stream of chunks (`"stream": true`).
    Stream(ChatStream),
}

impl std::fmt::Debug for ChatReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChatReply::Complete(r) => f.debug_tuple("Complete").field(r).finish(),
            ChatReply::Stream(_) => f.write_str("Stream(..)"),
        }
    }
}

impl ChatReply {
    /// The complete response, or `None` for a stream.
    pub fn into_complete(self) -> Option<CreateChatCompletionResponse> {
        match self {
            ChatReply::Complete(r) => Some(*r),
            ChatReply::Stream(_) => None,
        }
    }

    /// The stream, or `None` for a complete response.
    pub fn into_stream(self) -> Option<ChatStream> {
        match self {
            ChatReply::Complete(_) => None,
            ChatReply::Stream(s) => Some(s),
        }
    }
}

/// A stream of chat-completion chunks.
pub type ChatStream = ChunkStream<CreateChatCompletionStreamResponse, ChatStreamError>;

/// Why a chat stream ended with an error.
#[derive(Debug, thiserror::Error)]
pub enum ChatStreamError {
    /// The provider (or the connection) failed.
    #[error(transparent)]
    Provider(#[from] OpenAIError),
    /// The budget layer cut the stream.
    #[error(transparent)]
    Cutoff(#[from] Cutoff),
}

/// A tower service that sends chat completions with an async-openai client.
#[derive(Clone)]
pub struct OpenAiService<C: Config = OpenAIConfig> {
    client: Arc<Client<C>>,
}

impl<C: Config> std::fmt::Debug for OpenAiService<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiService").finish_non_exhaustive()
    }
}

impl<C: Config> OpenAiService<C> {
    /// A service over a client built from `config`, with async-openai's internal retries off
    /// (see the module docs).
    pub fn new(config: C) -> OpenAiService<C> {
        let client =
            Client::with_config(config).with_http_service(ReqwestService::new(reqwest_client()));
        OpenAiService {
            client: Arc::new(client),
        }
    }

    /// A service over a client the caller built (its retry behaviour is kept).
    pub fn from_client(client: Client<C>) -> OpenAiService<C> {
        OpenAiService {
            client: Arc::new(client),
        }
    }

    /// The client.
    pub fn client(&self) -> &Client<C> {
        &self.client
    }
}

response_future! {
    /// The future [`OpenAiService`] returns: the provider's reply, whole or streamed.
    ResponseFuture<> => Result<ChatReply, OpenAIError>
}

fn reqwest_client() -> reqwest::Client {
    reqwest::Client::new()
}

impl<C: Config + Send + Sync + 'static> Service<CreateChatCompletionRequest> for OpenAiService<C> {
    type Response = ChatReply;
    type Error = OpenAIError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), OpenAIError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: CreateChatCompletionRequest) -> Self::Future {
        let client = self.client.clone();
        ResponseFuture::new(async move {
            if request.stream == Some(true) {
                let stream = client.chat().create_stream(request).await?;
                let stream: ChatStream =
                    Box::pin(stream.map(|item| item.map_err(ChatStreamError::Provider)));
                Ok(ChatReply::Stream(stream))
            } else {
                Ok(ChatReply::Complete(Box::new(
                    client.chat().create(request).await?,
                )))
            }
        })
    }
}

impl<C: Config + Send + Sync + 'static> Service<Attributed<CreateChatCompletionRequest>>
    for OpenAiService<C>
{
    type Response = ChatReply;
    type Error = OpenAIError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), OpenAIError>> {
        Service::<CreateChatCompletionRequest>::poll_ready(self, cx)
    }

    fn call(&mut self, request: Attributed<CreateChatCompletionRequest>) -> Self::Future {
        self.call(request.request)
    }
}

/// Which async-openai failures were billed: an answer that arrived but could not be read
/// (`JSONDeserialize`) was. When its raw body still holds a readable `usage` object, that is
/// what it cost; otherwise the worst case is committed. So may have been a request that was
/// sent and then lost — an HTTP timeout, a connection that broke while the body or the answer
/// was in flight, a stream that failed to open after sending: those are charged the worst
/// case too. A connection that was never made, an API error answer (4xx/5xx: OpenAI does not
/// bill those) and a request refused before sending were not billed. Use with
/// [`BudgetLayer::billed_failures`](crate::BudgetLayer::billed_failures).
pub fn billed_failure(error: &OpenAIError) -> Billed {
    match error {
        OpenAIError::JSONDeserialize(_, body) => serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|v| Usage::from_openai_value(v.get("usage")?).ok())
            .map_or(Billed::Unknown, Billed::Reported),
        OpenAIError::Reqwest(e) if e.is_connect() || e.is_builder() => Billed::No,
        OpenAIError::Reqwest(_) | OpenAIError::StreamError(_) | OpenAIError::Boxed(_) => {
            Billed::Unknown
        }
        _ => Billed::No,
    }
}

impl<C: Config> OpenAiService<C> {
    /// Readiness, as `tower::ServiceExt::ready` gives it, without naming the request type.
    ///
    /// This service takes two request types (a plain chat request and an
    /// [`Attributed`] one), so `ServiceExt::ready(&mut svc)` cannot infer which `Service`
    /// impl is meant (E0283). This inherent method is found first and needs no annotation:
    /// the service is always ready. Through a layer stack, name the request instead:
    /// `ServiceExt::<CreateChatCompletionRequest>::ready(&mut stack)`.
    ///
    /// ```
    /// use async_openai::config::OpenAIConfig;
    /// use budget_tower::openai::OpenAiService;
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let mut service = OpenAiService::new(OpenAIConfig::new().with_api_base("http://127.0.0.1:9"));
    /// let ready: &mut OpenAiService = service.ready().await.unwrap();
    /// # let _ = ready;
    /// # });
    /// ```
    pub fn ready(&mut self) -> std::future::Ready<Result<&mut Self, OpenAIError>> {
        std::future::ready(Ok(self))
    }
}

/// Converts async-openai's usage into ours (cached inside input, reasoning inside output).
pub fn usage_of(u: &CompletionUsage) -> Usage {
    let cached = u
        .prompt_tokens_details
        .as_ref()
        .and_then(|d| d.cached_tokens)
        .unwrap_or(0);
    let reasoning = u
        .completion_tokens_details
        .as_ref()
        .and_then(|d| d.reasoning_tokens)
        .unwrap_or(0);
    Usage {
        input: u64::from(u.prompt_tokens),
        cached_input: u64::from(cached.min(u.prompt_tokens)),
        cache_write: 0,
        output: u64::from(u.completion_tokens),
        reasoning: u64::from(reasoning.min(u.completion_tokens)),
    }
}

/// A request message flattened for counting.
struct PlainMessage<'a> {
    role: &'static str,
    text: String,
    name: Option<&'a str>,
    tool_calls: Option<String>,
    tool_call_id: Option<&'a str>,
}

impl<'a> PlainMessage<'a> {
    fn new(role: &'static str, text: String, name: Option<&'a str>) -> PlainMessage<'a> {
        PlainMessage {
            role,
            text,
            name,
            tool_calls: None,
            tool_call_id: None,
        }
    }
}

/// A message's role, name and text, parts concatenated (images, audio and files are not text).
fn plain(message: &ChatCompletionRequestMessage) -> PlainMessage<'_> {
    fn join<'a>(parts: impl Iterator<Item = Option<&'a str>>) -> String {
        parts.flatten().collect::<Vec<_>>().join("")
    }
    match message {
        ChatCompletionRequestMessage::Developer(m) => {
            let text = match &m.content {
                ChatCompletionRequestDeveloperMessageContent::Text(t) => t.clone(),
                ChatCompletionRequestDeveloperMessageContent::Array(parts) => {
                    join(parts.iter().map(|p| match p {
                        ChatCompletionRequestDeveloperMessageContentPart::Text(t) => {
                            Some(t.text.as_str())
                        }
                    }))
                }
            };
            PlainMessage::new("developer", text, m.name.as_deref())
        }
        ChatCompletionRequestMessage::System(m) => {
            let text = match &m.content {
                ChatCompletionRequestSystemMessageContent::Text(t) => t.clone(),
                ChatCompletionRequestSystemMessageContent::Array(parts) => {
                    join(parts.iter().map(|p| match p {
                        ChatCompletionRequestSystemMessageContentPart::Text(t) => {
                            Some(t.text.as_str())
                        }
                    }))
                }
            };
            PlainMessage::new("system", text, m.name.as_deref())
        }
        ChatCompletionRequestMessage::User(m) => {
            let text = match &m.content {
                ChatCompletionRequestUserMessageContent::Text(t) => t.clone(),
                ChatCompletionRequestUserMessageContent::Array(parts) => {
                    join(parts.iter().map(|p| match p {
                        ChatCompletionRequestUserMessageContentPart::Text(t) => {
                            Some(t.text.as_str())
                        }
                        _ => None,
                    }))
                }
            };
            PlainMessage::new("user", text, m.name.as_deref())
        }
        ChatCompletionRequestMessage::Assistant(m) => {
            let text = match &m.content {
                None => String::new(),
                Some(ChatCompletionRequestAssistantMessageContent::Text(t)) => t.clone(),
                Some(ChatCompletionRequestAssistantMessageContent::Array(parts)) => {
                    join(parts.iter().map(|p| match p {
                        ChatCompletionRequestAssistantMessageContentPart::Text(t) => {
                            Some(t.text.as_str())
                        }
                        ChatCompletionRequestAssistantMessageContentPart::Refusal(r) => {
                            Some(r.refusal.as_str())
                        }
                    }))
                }
            };
            let tool_calls = m
                .tool_calls
                .as_ref()
                .filter(|calls| !calls.is_empty())
                .and_then(|calls: &Vec<ChatCompletionMessageToolCalls>| {
                    serde_json::to_string(calls).ok()
                });
            PlainMessage {
                tool_calls,
                ..PlainMessage::new("assistant", text, m.name.as_deref())
            }
        }
        ChatCompletionRequestMessage::Tool(m) => {
            let text = match &m.content {
                ChatCompletionRequestToolMessageContent::Text(t) => t.clone(),
                ChatCompletionRequestToolMessageContent::Array(parts) => {
                    join(parts.iter().map(|p| match p {
                        ChatCompletionRequestToolMessageContentPart::Text(t) => {
                            Some(t.text.as_str())
                        }
                    }))
                }
            };
            PlainMessage {
                tool_call_id: Some(m.tool_call_id.as_str()),
                ..PlainMessage::new("tool", text, None)
            }
        }
        ChatCompletionRequestMessage::Function(m) => PlainMessage::new(
            "function",
            m.content.clone().unwrap_or_default(),
            Some(m.name.as_str()),
        ),
    }
}

/// The parts of a message that are not text (images, audio, files), for counting: only user
/// messages carry them.
fn media_parts(message: &ChatCompletionRequestMessage) -> impl Iterator<Item = MediaPart> + '_ {
    let parts = match message {
        ChatCompletionRequestMessage::User(m) => match &m.content {
            ChatCompletionRequestUserMessageContent::Array(parts) => parts.as_slice(),
            ChatCompletionRequestUserMessageContent::Text(_) => &[],
        },
        _ => &[],
    };
    parts.iter().filter_map(|part| match part {
        ChatCompletionRequestUserMessageContentPart::Text(_) => None,
        ChatCompletionRequestUserMessageContentPart::ImageUrl(p) => {
            use async_openai::types::chat::ImageDetail as Detail;
            let detail = match p.image_url.detail {
                Some(Detail::Low) => ImageDetail::Low,
                Some(Detail::High) => ImageDetail::High,
                Some(Detail::Auto) | None => ImageDetail::Auto,
                Some(Detail::Original) => ImageDetail::Original,
            };
            Some(MediaPart::Image {
                detail,
                size: image_size_from_data_url(&p.image_url.url),
            })
        }
        ChatCompletionRequestUserMessageContentPart::InputAudio(p) => {
            let format = match p.input_audio.format {
                InputAudioFormat::Wav => AudioFormat::Wav,
                InputAudioFormat::Mp3 => AudioFormat::Mp3,
            };
            Some(audio_part(format, &p.input_audio.data))
        }
        ChatCompletionRequestUserMessageContentPart::File(p) => {
            Some(file_part(p.file.file_data.as_deref()))
        }
    })
}

#[allow(deprecated)] // `max_tokens` is deprecated upstream but still what older models read
impl LlmRequest for CreateChatCompletionRequest {
    fn model(&self) -> &str {
        &self.model
    }

    fn count_prompt(&self) -> TokenCount {
        let parts: Vec<_> = self.messages.iter().map(plain).collect();
        let messages: Vec<ChatMessage<'_>> = parts
            .iter()
            .map(|m| ChatMessage {
                role: m.role,
                content: &m.text,
                name: m.name,
                tool_calls: m.tool_calls.as_deref(),
                tool_call_id: m.tool_call_id,
            })
            .collect();
        let tools = self
            .tools
            .as_ref()
            .filter(|t| !t.is_empty())
            .and_then(|t| serde_json::to_string(t).ok());
        // What the reservation needs: images, audio and files are prompt tokens too, and an
        // o200k count for another vendor's model runs low. Left out, the call overshoots.
        let media: Vec<MediaPart> = self.messages.iter().flat_map(media_parts).collect();
        count_prompt_bound(&self.model, &messages, tools.as_deref(), &media)
    }

    fn max_output_tokens(&self) -> Option<u64> {
        self.max_completion_tokens
            .or(self.max_tokens)
            .map(u64::from)
    }

    fn set_max_output_tokens(&mut self, cap: u64) {
        let cap = u32::try_from(cap).unwrap_or(u32::MAX);
        // Keep the field the caller used; new requests get the current one.
        if self.max_tokens.is_some() && self.max_completion_tokens.is_none() {
            self.max_tokens = Some(cap);
        } else {
            self.max_completion_tokens = Some(cap);
        }
    }

    fn choices(&self) -> u32 {
        u32::from(self.n.unwrap_or(1).max(1))
    }

    fn is_stream(&self) -> bool {
        self.stream == Some(true)
    }

    fn latest_input(&self) -> Option<String> {
        self.messages.last().map(|m| plain(m).text)
    }

    fn request_stream_usage(&mut self) {
        let options = self
            .stream_options
            .get_or_insert(ChatCompletionStreamOptions {
                include_usage: None,
                include_obfuscation: None,
            });
        options.include_usage = Some(true);
    }
}

/// The turn standing for message `index`.
fn turn_of(index: usize, message: &ChatCompletionRequestMessage) -> Turn {
    let plain = plain(message);
    let role = match message {
        ChatCompletionRequestMessage::Developer(_) => Role::Developer,
        ChatCompletionRequestMessage::System(_) => Role::System,
        ChatCompletionRequestMessage::User(_) | ChatCompletionRequestMessage::Function(_) => {
            Role::User
        }
        ChatCompletionRequestMessage::Assistant(_) => Role::Assistant,
        ChatCompletionRequestMessage::Tool(_) => Role::Tool,
    };
    let tool_call_ids = match message {
        ChatCompletionRequestMessage::Assistant(m) => m
            .tool_calls
            .iter()
            .flatten()
            .map(|call| match call {
                ChatCompletionMessageToolCalls::Function(f) => f.id.clone(),
                ChatCompletionMessageToolCalls::Custom(c) => c.id.clone(),
            })
            .collect(),
        _ => Vec::new(),
    };
    Turn {
        role,
        text: plain.text,
        name: plain.name.map(str::to_owned),
        tool_call_ids,
        tool_calls_json: plain.tool_calls,
        tool_call_id: plain.tool_call_id.map(str::to_owned),
        origin: Some(index),
    }
}

/// `message` with its text replaced by `text` (parts collapse into one text).
fn with_text(message: &ChatCompletionRequestMessage, text: &str) -> ChatCompletionRequestMessage {
    let mut message = message.clone();
    match &mut message {
        ChatCompletionRequestMessage::Developer(m) => {
            m.content = ChatCompletionRequestDeveloperMessageContent::Text(text.to_owned());
        }
        ChatCompletionRequestMessage::System(m) => {
            m.content = ChatCompletionRequestSystemMessageContent::Text(text.to_owned());
        }
        ChatCompletionRequestMessage::User(m) => {
            m.content = ChatCompletionRequestUserMessageContent::Text(text.to_owned());
        }
        ChatCompletionRequestMessage::Assistant(m) => {
            m.content = Some(ChatCompletionRequestAssistantMessageContent::Text(
                text.to_owned(),
            ));
        }
        ChatCompletionRequestMessage::Tool(m) => {
            m.content = ChatCompletionRequestToolMessageContent::Text(text.to_owned());
        }
        ChatCompletionRequestMessage::Function(m) => m.content = Some(text.to_owned()),
    }
    message
}

/// A new message for a turn that stands for none (a summary).
fn new_message(turn: &Turn) -> ChatCompletionRequestMessage {
    let text = turn.text.clone();
    match turn.role {
        Role::System | Role::Developer | Role::Tool => {
            ChatCompletionRequestMessage::System(ChatCompletionRequestSystemMessage {
                content: ChatCompletionRequestSystemMessageContent::Text(text),
                name: None,
            })
        }
        Role::User => ChatCompletionRequestMessage::User(ChatCompletionRequestUserMessage {
            content: ChatCompletionRequestUserMessageContent::Text(text),
            name: None,
        }),
        Role::Assistant => {
            ChatCompletionRequestMessage::Assistant(ChatCompletionRequestAssistantMessage {
                content: Some(ChatCompletionRequestAssistantMessageContent::Text(text)),
                ..Default::default()
            })
        }
    }
}

impl ChatRequest for CreateChatCompletionRequest {
    fn turns(&self) -> Vec<Turn> {
        self.messages
            .iter()
            .enumerate()
            .map(|(i, m)| turn_of(i, m))
            .collect()
    }

    fn set_turns(&mut self, turns: &[Turn]) {
        let messages = turns
            .iter()
            .map(
                |turn| match turn.origin.and_then(|i| self.messages.get(i)) {
                    Some(original) if plain(original).text == turn.text => original.clone(),
                    Some(original) => with_text(original, &turn.text),
                    None => new_message(turn),
                },
            )
            .collect();
        self.messages = messages;
    }

    fn set_model(&mut self, model: &str) {
        model.clone_into(&mut self.model);
    }

    fn set_stream(&mut self, stream: bool) {
        self.stream = stream.then_some(true);
        if !stream {
            self.stream_options = None;
        }
    }

    /// A 128-bit hash (two independently seeded foldhash quality hashes, seeds random per
    /// process: keys are not forgeable from outside, and collide with odds of 2⁻¹²⁸) of the
    /// request's JSON without the fields that do not change
    /// the answer (`stream`, `stream_options`, `user`, `metadata`, `store`, `service_tier`,
    /// `safety_identifier`, `prompt_cache_key`); `None` unless the temperature is 0 or a seed
    /// is set. Fields serialize in declaration order, so equal requests hash equal (a
    /// `logit_bias` map may serialize in another order: at worst a missed hit, never a wrong
    /// one).
    #[allow(deprecated)] // `seed` and `user` are deprecated upstream but still in the request
    fn cache_key(&self) -> Option<u128> {
        let deterministic = self.seed.is_some() || self.temperature.is_some_and(|t| t <= 0.0);
        if !deterministic {
            return None;
        }
        let mut keyed = self.clone();
        keyed.stream = None;
        keyed.stream_options = None;
        keyed.user = None;
        keyed.metadata = None;
        keyed.store = None;
        keyed.service_tier = None;
        keyed.safety_identifier = None;
        keyed.prompt_cache_key = None;
        let (high, low) = &*KEY_SEEDS;
        let mut writer = HashWriter(high.build_hasher(), low.build_hasher());
        serde_json::to_writer(&mut writer, &keyed).ok()?;
        Some(u128::from(writer.0.finish()) << 64 | u128::from(writer.1.finish()))
    }
}

/// The two hash seeds of cache keys, drawn once per process.
static KEY_SEEDS: std::sync::LazyLock<(
    foldhash::quality::RandomState,
    foldhash::quality::RandomState,
)> = std::sync::LazyLock::new(Default::default);

/// Feeds serialized JSON straight into two hashers, without building the text.
struct HashWriter<H>(H, H);

impl<H: std::hash::Hasher> std::io::Write for HashWriter<H> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.write(bytes);
        self.1.write(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LlmResponse for ChatReply {
    type Chunk = CreateChatCompletionStreamResponse;
    type StreamError = ChatStreamError;

    fn is_stream(&self) -> bool {
        matches!(self, ChatReply::Stream(_))
    }

    fn usage(&self) -> Option<Usage> {
        match self {
            ChatReply::Complete(r) => r.usage.as_ref().map(usage_of),
            ChatReply::Stream(_) => None,
        }
    }

    fn served_model(&self) -> Option<&str> {
        match self {
            ChatReply::Complete(r) => Some(&r.model),
            ChatReply::Stream(_) => None,
        }
    }

    fn output_text(&self) -> String {
        let ChatReply::Complete(r) = self else {
            return String::new();
        };
        let mut text = String::new();
        for choice in &r.choices {
            let m = &choice.message;
            text.push_str(m.content.as_deref().unwrap_or_default());
            text.push_str(m.refusal.as_deref().unwrap_or_default());
            if let Some(calls) = m.tool_calls.as_ref().filter(|c| !c.is_empty())
                && let Ok(json) = serde_json::to_string(calls)
            {
                text.push_str(&json);
            }
        }
        text
    }

    fn map_stream<F>(self, wrap: F) -> Self
    where
        F: FnOnce(ChatStream) -> ChatStream,
    {
        match self {
            ChatReply::Stream(s) => ChatReply::Stream(wrap(s)),
            complete => complete,
        }
    }
}

impl LlmChunk for CreateChatCompletionStreamResponse {
    fn usage(&self) -> Option<Usage> {
        self.usage.as_ref().map(usage_of)
    }

    fn output_text(&self) -> String {
        let mut text = String::new();
        for choice in &self.choices {
            let d = &choice.delta;
            text.push_str(d.content.as_deref().unwrap_or_default());
            text.push_str(d.refusal.as_deref().unwrap_or_default());
            for call in d.tool_calls.iter().flatten() {
                if let Some(f) = &call.function {
                    text.push_str(f.name.as_deref().unwrap_or_default());
                    text.push_str(f.arguments.as_deref().unwrap_or_default());
                }
            }
        }
        text
    }

    fn served_model(&self) -> Option<&str> {
        Some(&self.model)
    }
}
