//! What the budget layers need to know about an LLM request and its response.
//!
//! The layers are generic: any request type that can tell its model, its prompt (to count) and
//! its output cap (to read and clamp), and any response type that can tell its usage, works.
//! async-openai's chat types implement these traits in [`crate::openai`]; a test implements them
//! for a request type of its own.

use std::pin::Pin;

use budget_core::conversation::{Difficulty, Turn};
use budget_core::scope::TaskScope;
use budget_core::{Attribution, TokenCount, Usage};
use futures::Stream;

use crate::enforce::Cutoff;

/// A stream of response chunks, boxed so that a layer can wrap it without changing its type.
pub type ChunkStream<C, E> = Pin<Box<dyn Stream<Item = Result<C, E>> + Send>>;

/// A request to an LLM.
pub trait LlmRequest {
    /// The model asked for.
    fn model(&self) -> &str;

    /// The prompt's tokens: exact for OpenAI encodings, a labelled estimate otherwise.
    fn count_prompt(&self) -> TokenCount;

    /// The output cap the request carries (`max_completion_tokens` or `max_tokens`), if any.
    fn max_output_tokens(&self) -> Option<u64>;

    /// Sets the output cap (the layer clamps it to what the budget allows).
    fn set_max_output_tokens(&mut self, cap: u64);

    /// How many choices (`n`) the provider is asked to generate; each may use the whole output
    /// cap, so the budget reserves for all of them. Default 1.
    fn choices(&self) -> u32 {
        1
    }

    /// Whether the response will be streamed.
    fn is_stream(&self) -> bool;

    /// Asks a streaming provider to end the stream with a usage report (OpenAI's
    /// `stream_options.include_usage`). Requests that cannot ask do nothing.
    fn request_stream_usage(&mut self) {}

    /// Attribution carried by the request itself (used when no task scope is active).
    fn attribution(&self) -> Option<&Attribution> {
        None
    }

    /// The newest input of the request (the last message's text), which runaway detection
    /// compares across steps. `None` opts the request out of repetition detection.
    fn latest_input(&self) -> Option<String> {
        None
    }
}

/// A chat request the optimisation layers can read and rewrite.
pub trait ChatRequest: LlmRequest {
    /// The conversation, one [`Turn`] per message, each with its `origin` set.
    fn turns(&self) -> Vec<Turn>;

    /// Rebuilds the messages from `turns` (see [`budget_core::conversation`]): turns with an
    /// origin keep their original message (text replaced when it changed), others are new.
    fn set_turns(&mut self, turns: &[Turn]);

    /// Switches the model (routing).
    fn set_model(&mut self, model: &str);

    /// Asks for a complete (not streamed) response. Used for side calls a layer makes with a
    /// copy of the request (a summary); requests that cannot stream ignore it.
    fn set_stream(&mut self, _stream: bool) {}

    /// A key for everything that changes the answer (model, messages, tools, sampling
    /// settings, response format...), or `None` when the request is not deterministic
    /// (temperature above 0 without a seed) and must not be served from a cache.
    fn cache_key(&self) -> Option<u128>;

    /// The caller's own difficulty hint, if the request carries one.
    fn difficulty_hint(&self) -> Option<Difficulty> {
        None
    }
}

/// The response of an LLM call: complete, or a stream of chunks.
pub trait LlmResponse: Sized + Send + 'static {
    /// A streamed chunk.
    type Chunk: LlmChunk + Send + 'static;
    /// The error a stream yields; a budget cutoff must be expressible in it.
    type StreamError: From<Cutoff> + Send + 'static;

    /// Whether this response is a stream.
    fn is_stream(&self) -> bool;

    /// Usage the provider reported on a complete response.
    fn usage(&self) -> Option<Usage>;

    /// The model the provider says it served.
    fn served_model(&self) -> Option<&str>;

    /// The generated text (content, refusals, tool-call arguments), for counting when the
    /// provider reported no usage.
    fn output_text(&self) -> String;

    /// Replaces the stream of a streaming response with `wrap(stream)`. Complete responses are
    /// returned unchanged.
    fn map_stream<F>(self, wrap: F) -> Self
    where
        F: FnOnce(
            ChunkStream<Self::Chunk, Self::StreamError>,
        ) -> ChunkStream<Self::Chunk, Self::StreamError>;
}

/// One chunk of a streamed response.
pub trait LlmChunk {
    /// Usage, if this chunk reports it (OpenAI: the final chunk; cumulative counts).
    fn usage(&self) -> Option<Usage>;

    /// The text this chunk adds (content, refusal, tool-call argument fragments).
    fn output_text(&self) -> String;

    /// The model the provider says it serves.
    fn served_model(&self) -> Option<&str>;
}

/// A request with attribution attached, for callers that do not run inside a task scope.
///
/// The budget layer unwraps it: the inner service receives the plain request.
#[derive(Debug, Clone)]
pub struct Attributed<R> {
    /// The request.
    pub request: R,
    /// Whose call it is.
    pub attribution: Attribution,
}

impl<R> Attributed<R> {
    /// Attaches `attribution` to `request`.
    pub fn new(request: R, attribution: Attribution) -> Attributed<R> {
        Attributed {
            request,
            attribution,
        }
    }
}

/// Who a call belongs to: the task scope, else the request's own attribution, else nobody
/// ([`budget_core::UNATTRIBUTED`]) — never dropped.
pub fn attribution_of<R: LlmRequest>(scope: Option<&TaskScope>, request: &R) -> Attribution {
    match scope {
        Some(scope) => scope.attribution(),
        None => request.attribution().cloned().unwrap_or_default(),
    }
}

impl<R: ChatRequest> ChatRequest for Attributed<R> {
    fn turns(&self) -> Vec<Turn> {
        self.request.turns()
    }
    fn set_turns(&mut self, turns: &[Turn]) {
        self.request.set_turns(turns);
    }
    fn set_model(&mut self, model: &str) {
        self.request.set_model(model);
    }
    fn set_stream(&mut self, stream: bool) {
        self.request.set_stream(stream);
    }
    fn cache_key(&self) -> Option<u128> {
        self.request.cache_key()
    }
    fn difficulty_hint(&self) -> Option<Difficulty> {
        self.request.difficulty_hint()
    }
}

impl<R: LlmRequest> LlmRequest for Attributed<R> {
    fn model(&self) -> &str {
        self.request.model()
    }
    fn count_prompt(&self) -> TokenCount {
        self.request.count_prompt()
    }
    fn max_output_tokens(&self) -> Option<u64> {
        self.request.max_output_tokens()
    }
    fn set_max_output_tokens(&mut self, cap: u64) {
        self.request.set_max_output_tokens(cap);
    }
    fn choices(&self) -> u32 {
        self.request.choices()
    }
    fn is_stream(&self) -> bool {
        self.request.is_stream()
    }
    fn request_stream_usage(&mut self) {
        self.request.request_stream_usage();
    }
    fn attribution(&self) -> Option<&Attribution> {
        Some(&self.attribution)
    }
    fn latest_input(&self) -> Option<String> {
        self.request.latest_input()
    }
}

/// Takes the service that `poll_ready` made ready, leaving a fresh clone in its place: tower's
/// convention for services whose response future owns the inner service (a clone starts
/// without readiness; the readied one goes into the future).
pub(crate) fn take_readied<S: Clone>(service: &mut S) -> S {
    let fresh = service.clone();
    std::mem::replace(service, fresh)
}
