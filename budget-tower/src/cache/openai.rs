//! [`CacheableResponse`] for async-openai's chat replies ([`ChatReply`]).
//!
//! - A **complete** response is stored as it is (a copy of the
//!   [`CreateChatCompletionResponse`]) and served as a copy.
//! - Served **as a stream** (the hitting request has `"stream": true`), the stored response
//!   becomes OpenAI's chunk sequence: per choice a role chunk, its content (refusal, audio,
//!   tool calls) in one chunk, a finish chunk; then a usage chunk with empty `choices`
//!   carrying the **original** usage, so the consumer sees what the answer would have cost
//!   (the ledger records the hit at $0 all the same). The usage chunk is sent even when the
//!   request did not ask for `include_usage`. Custom tool calls, which OpenAI's chunk type
//!   cannot express, are streamed as function calls (name, input as arguments).
//! - A **streamed** response is stored too: as it passes, its chunks are assembled into a
//!   complete response, stored once the stream has ended — only when it ended without an
//!   error and reported its usage (the budget layer asks for `include_usage`). A stream the
//!   consumer drops before its end, or that the budget layer cut, is not stored.

use async_openai::types::chat::{
    ChatChoice, ChatChoiceLogprobs, ChatChoiceStream, ChatCompletionMessageToolCall,
    ChatCompletionMessageToolCallChunk, ChatCompletionMessageToolCalls, ChatCompletionModeration,
    ChatCompletionResponseMessage, ChatCompletionResponseMessageAudio, ChatCompletionStreamAudio,
    ChatCompletionStreamResponseDelta, CompletionUsage, CreateChatCompletionResponse,
    CreateChatCompletionStreamResponse, FinishReason, FunctionCall, FunctionCallStream,
    FunctionType, Role, ServiceTier,
};
use futures::StreamExt;

use super::{CacheSink, CacheableResponse};
use crate::llm::LlmResponse;
use crate::openai::{ChatReply, ChatStream, usage_of};

impl CacheableResponse for ChatReply {
    type Cached = CreateChatCompletionResponse;

    fn to_cached(&self) -> Option<CreateChatCompletionResponse> {
        match self {
            ChatReply::Complete(response) => Some((**response).clone()),
            ChatReply::Stream(_) => None,
        }
    }

    fn from_cached(cached: &CreateChatCompletionResponse, as_stream: bool) -> ChatReply {
        if as_stream {
            let chunks = chunks_of(cached).into_iter().map(Ok);
            ChatReply::Stream(Box::pin(futures::stream::iter(chunks)))
        } else {
            ChatReply::Complete(Box::new(cached.clone()))
        }
    }

    fn cache_stream(self, sink: CacheSink<CreateChatCompletionResponse>) -> ChatReply {
        self.map_stream(|stream| Box::pin(assembled(stream, sink)))
    }
}

/// The chunk that every chunk of `response`'s stream starts from.
#[allow(deprecated)] // system_fingerprint: deprecated upstream, still sent by the provider
fn chunk_base(response: &CreateChatCompletionResponse) -> CreateChatCompletionStreamResponse {
    CreateChatCompletionStreamResponse {
        id: response.id.clone(),
        created: response.created,
        model: response.model.clone(),
        service_tier: response.service_tier.clone(),
        system_fingerprint: response.system_fingerprint.clone(),
        object: "chat.completion.chunk".to_owned(),
        ..CreateChatCompletionStreamResponse::default()
    }
}

/// The chunk sequence OpenAI would have streamed for `response` (see the module docs).
fn chunks_of(response: &CreateChatCompletionResponse) -> Vec<CreateChatCompletionStreamResponse> {
    let base = chunk_base(response);
    let with_choice = |choice: ChatChoiceStream| CreateChatCompletionStreamResponse {
        choices: vec![choice],
        ..base.clone()
    };
    let mut chunks = Vec::with_capacity(response.choices.len() * 3 + 1);
    for choice in &response.choices {
        let message = &choice.message;
        chunks.push(with_choice(ChatChoiceStream {
            index: choice.index,
            delta: ChatCompletionStreamResponseDelta {
                role: Some(Role::Assistant),
                content: Some(String::new()),
                ..ChatCompletionStreamResponseDelta::default()
            },
            finish_reason: None,
            logprobs: None,
        }));
        let tool_calls: Vec<_> = message
            .tool_calls
            .iter()
            .flatten()
            .zip(0..)
            .map(|(call, index)| tool_call_chunk(call, index))
            .collect();
        let has_content = message.content.as_deref().is_some_and(|c| !c.is_empty())
            || message.refusal.is_some()
            || message.audio.is_some()
            || !tool_calls.is_empty()
            || choice.logprobs.is_some();
        if has_content {
            chunks.push(with_choice(ChatChoiceStream {
                index: choice.index,
                delta: ChatCompletionStreamResponseDelta {
                    content: message.content.clone().filter(|c| !c.is_empty()),
                    refusal: message.refusal.clone(),
                    tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
                    audio: message.audio.as_ref().map(|a| ChatCompletionStreamAudio {
                        id: Some(a.id.clone()),
                        expires_at: Some(a.expires_at),
                        data: Some(a.data.clone()),
                        transcript: Some(a.transcript.clone()),
                    }),
                    ..ChatCompletionStreamResponseDelta::default()
                },
                finish_reason: None,
                logprobs: choice.logprobs.clone(),
            }));
        }
        chunks.push(with_choice(ChatChoiceStream {
            index: choice.index,
            delta: ChatCompletionStreamResponseDelta::default(),
            finish_reason: choice.finish_reason,
            logprobs: None,
        }));
    }
    chunks.push(CreateChatCompletionStreamResponse {
        usage: response.usage.clone(),
        moderation: response.moderation.clone(),
        ..base
    });
    chunks
}

fn tool_call_chunk(
    call: &ChatCompletionMessageToolCalls,
    index: u32,
) -> ChatCompletionMessageToolCallChunk {
    let (id, name, arguments) = match call {
        ChatCompletionMessageToolCalls::Function(f) => {
            (&f.id, &f.function.name, &f.function.arguments)
        }
        ChatCompletionMessageToolCalls::Custom(c) => {
            (&c.id, &c.custom_tool.name, &c.custom_tool.input)
        }
    };
    ChatCompletionMessageToolCallChunk {
        index,
        id: Some(id.clone()),
        r#type: Some(FunctionType::Function),
        function: Some(FunctionCallStream {
            name: Some(name.clone()),
            arguments: Some(arguments.clone()),
        }),
    }
}

/// `stream`, passed through unchanged, with its chunks assembled on the side and stored
/// through `sink` when it ends cleanly with a usage report.
fn assembled(
    stream: ChatStream,
    sink: CacheSink<CreateChatCompletionResponse>,
) -> impl futures::Stream<Item = <ChatStream as futures::Stream>::Item> + Send + 'static {
    futures::stream::unfold(
        Some((stream, Assembler::default(), sink)),
        |state| async move {
            let (mut stream, mut assembler, sink) = state?;
            match stream.next().await {
                Some(item) => {
                    match &item {
                        Ok(chunk) => assembler.add(chunk),
                        Err(_) => assembler.failed = true,
                    }
                    Some((item, Some((stream, assembler, sink))))
                }
                None => {
                    if let Some(response) = assembler.finish()
                        && let Some(usage) = response.usage.as_ref().map(usage_of)
                    {
                        let served = response.model.clone();
                        sink.store(response, usage, Some(&served)).await;
                    }
                    None
                }
            }
        },
    )
}

/// A streamed response put back together.
#[derive(Default)]
struct Assembler {
    failed: bool,
    started: bool,
    id: String,
    created: u32,
    model: String,
    service_tier: Option<ServiceTier>,
    system_fingerprint: Option<String>,
    usage: Option<CompletionUsage>,
    moderation: Option<ChatCompletionModeration>,
    choices: Vec<ChoiceParts>,
}

#[derive(Default)]
struct ChoiceParts {
    index: u32,
    content: Option<String>,
    refusal: Option<String>,
    tool_calls: Vec<ToolCallParts>,
    audio: Option<ChatCompletionResponseMessageAudio>,
    finish_reason: Option<FinishReason>,
    logprobs: Option<ChatChoiceLogprobs>,
}

#[derive(Default)]
struct ToolCallParts {
    index: u32,
    id: String,
    name: String,
    arguments: String,
}

fn append(to: &mut Option<String>, piece: Option<&str>) {
    if let Some(piece) = piece {
        to.get_or_insert_with(String::new).push_str(piece);
    }
}

impl Assembler {
    #[allow(deprecated)] // system_fingerprint
    fn add(&mut self, chunk: &CreateChatCompletionStreamResponse) {
        if !self.started {
            self.started = true;
            self.id.clone_from(&chunk.id);
            self.created = chunk.created;
            self.model.clone_from(&chunk.model);
        }
        if chunk.service_tier.is_some() {
            self.service_tier.clone_from(&chunk.service_tier);
        }
        if chunk.system_fingerprint.is_some() {
            self.system_fingerprint
                .clone_from(&chunk.system_fingerprint);
        }
        if chunk.usage.is_some() {
            self.usage.clone_from(&chunk.usage);
        }
        if chunk.moderation.is_some() {
            self.moderation.clone_from(&chunk.moderation);
        }
        for piece in &chunk.choices {
            let choice = self.choice(piece.index);
            let delta = &piece.delta;
            append(&mut choice.content, delta.content.as_deref());
            append(&mut choice.refusal, delta.refusal.as_deref());
            for call in delta.tool_calls.iter().flatten() {
                let parts = choice.tool_call(call.index);
                if let Some(id) = &call.id {
                    parts.id.clone_from(id);
                }
                if let Some(function) = &call.function {
                    if let Some(name) = &function.name {
                        parts.name.push_str(name);
                    }
                    if let Some(arguments) = &function.arguments {
                        parts.arguments.push_str(arguments);
                    }
                }
            }
            if let Some(audio) = &delta.audio {
                let whole = choice.audio.get_or_insert_with(Default::default);
                if let Some(id) = &audio.id {
                    whole.id.clone_from(id);
                }
                if let Some(expires_at) = audio.expires_at {
                    whole.expires_at = expires_at;
                }
                whole
                    .data
                    .push_str(audio.data.as_deref().unwrap_or_default());
                whole
                    .transcript
                    .push_str(audio.transcript.as_deref().unwrap_or_default());
            }
            if piece.finish_reason.is_some() {
                choice.finish_reason = piece.finish_reason;
            }
            if let Some(logprobs) = &piece.logprobs {
                let whole = choice.logprobs.get_or_insert_with(Default::default);
                for (to, from) in [
                    (&mut whole.content, &logprobs.content),
                    (&mut whole.refusal, &logprobs.refusal),
                ] {
                    if let Some(from) = from {
                        to.get_or_insert_with(Vec::new).extend(from.iter().cloned());
                    }
                }
            }
        }
    }

    fn choice(&mut self, index: u32) -> &mut ChoiceParts {
        let at = match self.choices.iter().position(|c| c.index == index) {
            Some(at) => at,
            None => {
                self.choices.push(ChoiceParts {
                    index,
                    ..ChoiceParts::default()
                });
                self.choices.len() - 1
            }
        };
        &mut self.choices[at]
    }

    /// The complete response, or `None` when the stream failed or never started.
    #[allow(deprecated)] // system_fingerprint, function_call
    fn finish(self) -> Option<CreateChatCompletionResponse> {
        if self.failed || !self.started {
            return None;
        }
        let mut choices: Vec<ChatChoice> = self
            .choices
            .into_iter()
            .map(|mut c| {
                c.tool_calls.sort_by_key(|t| t.index);
                let tool_calls: Vec<_> = c
                    .tool_calls
                    .into_iter()
                    .map(|t| {
                        ChatCompletionMessageToolCalls::Function(ChatCompletionMessageToolCall {
                            id: t.id,
                            function: FunctionCall {
                                name: t.name,
                                arguments: t.arguments,
                            },
                        })
                    })
                    .collect();
                ChatChoice {
                    index: c.index,
                    message: ChatCompletionResponseMessage {
                        content: c.content,
                        refusal: c.refusal,
                        tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
                        annotations: None,
                        role: Role::Assistant,
                        function_call: None,
                        audio: c.audio,
                    },
                    finish_reason: c.finish_reason,
                    logprobs: c.logprobs,
                }
            })
            .collect();
        choices.sort_by_key(|c| c.index);
        Some(CreateChatCompletionResponse {
            id: self.id,
            choices,
            created: self.created,
            model: self.model,
            service_tier: self.service_tier,
            system_fingerprint: self.system_fingerprint,
            object: "chat.completion".to_owned(),
            usage: self.usage,
            metadata: None,
            moderation: self.moderation,
        })
    }
}

impl ChoiceParts {
    fn tool_call(&mut self, index: u32) -> &mut ToolCallParts {
        let at = match self.tool_calls.iter().position(|t| t.index == index) {
            Some(at) => at,
            None => {
                self.tool_calls.push(ToolCallParts {
                    index,
                    ..ToolCallParts::default()
                });
                self.tool_calls.len() - 1
            }
        };
        &mut self.tool_calls[at]
    }
}
