//! Token counting: exact for OpenAI's encodings, clearly labelled estimates for everything else.
//!
//! # Exact vs estimated
//!
//! Every count comes back as a [`TokenCount`] whose `estimated` flag says which kind it is:
//!
//! - **Exact** (`estimated: false`): text counted with the encoding the model really uses
//!   ([`Encoding::O200kBase`] or [`Encoding::Cl100kBase`], resolved by [`Encoding::for_model`]),
//!   and chat conversations of the model families whose chat framing OpenAI has published and
//!   verified against the API (gpt-3.5-turbo, gpt-4, gpt-4o / chatgpt-4o): per message
//!   `3 + tokens(role) + tokens(content) + tokens(name) + 1 if a name is present`, plus
//!   [`REPLY_PRIMING_TOKENS`] for the reply. The token ids are identical to `tiktoken`'s
//!   (tested on a 1 MiB prose + code corpus and on random unicode).
//! - **Estimated** (`estimated: true`):
//!   - models that are not OpenAI's (Claude, Gemini, Llama, anything unknown): the text is
//!     counted with `o200k_base` as an approximation and `encoding` is `None`, so no one can
//!     mistake the number for the provider's own. Such a count runs **low**: other
//!     tokenizers split the same text into more pieces than `o200k_base`'s 200k vocabulary.
//!     It stays additive (message by message, as context compression needs); what is
//!     *reserved* for it is [`TokenCount::with_estimate_margin`], raised by
//!     [`ESTIMATE_MARGIN_PERCENT`] (see there for why 180 %), which [`count_prompt_bound`]
//!     applies;
//!   - tool definitions and assistant `tool_calls`: OpenAI renders them by an undocumented
//!     formula, so we count their JSON text with the model's encoding and add
//!     [`TOOL_DEFINITIONS_OVERHEAD`] / [`TOOL_CALLS_OVERHEAD`] (JSON text is more verbose than
//!     OpenAI's internal rendering, so on the cookbook's example this errs high, which is the
//!     safe side for a budget);
//!   - chat conversations of OpenAI models whose framing has not been published (gpt-4.1,
//!     gpt-4.5, gpt-5, the o-series, gpt-oss's harmony format, embedding models): the same
//!     formula is applied, but a third-party measurement found gpt-5 one token off, so the
//!     count is labelled. Text counts for these models stay exact.
//!
//! Special-token text such as `<|endoftext|>` inside a message is counted as ordinary text,
//! as `tiktoken`'s `encode_ordinary` does. Images, audio and files are not text: count them
//! with [`media::count_media`] (or pass them to [`count_prompt_bound`]), which bounds them by
//! the providers' documented formulas.
//!
//! # Loading
//!
//! Each vocabulary is embedded in the binary (bpe-openai) and decoded **once, lazily**, on the
//! first count with that encoding (tens of milliseconds for `o200k_base`); later counts, on any
//! thread, reuse it. Concurrent first callers wait for the one initialisation. Call
//! [`Encoding::warm_up`] at start-up to pay that cost before the first request instead of
//! during it.
//!
//! # Example
//!
//! ```
//! use budget_core::tokens::{count_chat, ChatMessage, Encoding};
//!
//! let messages = [
//!     ChatMessage::system("You are terse."),
//!     ChatMessage::user("Say hi."),
//! ];
//! let count = count_chat("gpt-4o", &messages, None);
//! assert!(!count.estimated);
//! assert_eq!(count.encoding, Some(Encoding::O200kBase));
//! assert_eq!(count.tokens, Encoding::O200kBase.count("You are terse.") + 1 + 3
//!     + Encoding::O200kBase.count("Say hi.") + 1 + 3 + 3);
//!
//! let claude = count_chat("claude-sonnet-4", &messages, None);
//! assert!(claude.estimated);
//! assert_eq!(claude.encoding, None);
//! ```

use std::fmt;

use bpe_openai::Tokenizer;

#[doc(hidden)]
pub mod corpus;
pub mod media;

use media::{MediaPart, count_media};

/// Tokens that frame every chat message (`<|start|>{role}<|message|>…<|end|>`), per OpenAI's
/// cookbook for gpt-3.5-turbo (0613 and later), gpt-4 and gpt-4o.
pub const TOKENS_PER_MESSAGE: u64 = 3;

/// Extra token when a message carries a `name`, per OpenAI's cookbook.
pub const TOKENS_PER_NAME: u64 = 1;

/// Tokens that prime the reply (`<|start|>assistant<|message|>`), added once per conversation.
pub const REPLY_PRIMING_TOKENS: u64 = 3;

/// Added once, on top of the tokens of the tools' JSON text, when tool definitions are sent.
///
/// This is the closing constant (`func_end`) of OpenAI's cookbook estimate for tools
/// (gpt-3.5-turbo, gpt-4, gpt-4o). The cookbook's per-function and per-property constants are
/// not added: the JSON text's own punctuation and keys (`"type":"function"`, `"parameters"`,
/// quotes, braces) already outweigh them. Any count that includes it is an estimate.
pub const TOOL_DEFINITIONS_OVERHEAD: u64 = 12;

/// Added per message that carries `tool_calls`, on top of the tokens of their JSON text.
///
/// Our own choice, not OpenAI's: the rendering of tool calls is undocumented (tiktoken-rs adds
/// 1 per call to the name and arguments; we count the whole JSON text, ids included, and add
/// one message framing's worth). Any count that includes it is an estimate.
pub const TOOL_CALLS_OVERHEAD: u64 = 3;

/// How much a reservation for a model that is not OpenAI's exceeds the `o200k_base` count of
/// the same text, in percent (`⌈o200k × 180 / 100⌉`; [`TokenCount::with_estimate_margin`]).
///
/// `o200k_base` runs low for other vendors' tokenizers. Published measurements put Claude 3.5's
/// tokenizer 16 % above GPT-4o's on English prose, 21 % on maths and 30 % on Python code, and
/// Anthropic states that the tokenizer of Claude Opus 4.7 and later uses up to 1.35 times the
/// tokens of its predecessors: 1.30 × 1.35 ≈ 1.76 on code, rounded up to 1.8. Llama 3's
/// tokenizer extends `cl100k_base`, which counts 6 % more than `o200k_base` on the 1 MiB mixed
/// corpus of the tests (285,129 against 268,452 tokens); Gemini's SentencePiece vocabulary
/// (256k pieces) is larger than `o200k_base`'s. No tokenizer of these vendors is available
/// offline, so the margin is a bound on published ratios, not a measurement of ours: counts
/// that use it stay labelled estimates.
pub const ESTIMATE_MARGIN_PERCENT: u64 = 180;

/// `tokens` raised by [`ESTIMATE_MARGIN_PERCENT`], rounded up, saturating.
const fn with_margin(tokens: u64) -> u64 {
    match tokens.checked_mul(ESTIMATE_MARGIN_PERCENT) {
        Some(scaled) => scaled.div_ceil(100),
        None => u64::MAX,
    }
}

/// A byte-pair encoding used by OpenAI models, counted exactly.
///
/// The tokenizers are built once, lazily, on first use (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// `o200k_base`: gpt-4o, gpt-4.1, gpt-4.5, gpt-5, the o-series, gpt-oss (whose
    /// `o200k_harmony` only adds special tokens, which ordinary text never produces).
    O200kBase,
    /// `cl100k_base`: gpt-4, gpt-3.5-turbo, text-embedding-3-*, text-embedding-ada-002.
    Cl100kBase,
}

/// What we know about an OpenAI model's tokenisation.
#[derive(Debug, Clone, Copy)]
struct ModelInfo {
    encoding: Encoding,
    /// Whether OpenAI published and verified the chat framing for this family.
    chat_verified: bool,
}

impl Encoding {
    /// Every encoding, for warm-up loops and tests.
    pub const ALL: [Encoding; 2] = [Encoding::O200kBase, Encoding::Cl100kBase];

    /// The encoding an OpenAI model uses, or `None` for models that are not OpenAI's (or that
    /// we do not know).
    ///
    /// Case-insensitive. Provider prefixes are ignored (`openai/gpt-4o`, `azure/gpt-4o`,
    /// `openrouter/openai/gpt-4o`: everything up to the last `/`), as are fine-tuning ids
    /// (`ft:gpt-4o-mini-2024-07-18:org::id`) and Bedrock's `openai.` prefix. Dated and sized
    /// variants follow their family (`gpt-4o-2024-08-06`, `gpt-4.1-mini`, `o3-pro`).
    ///
    /// ```
    /// use budget_core::tokens::Encoding;
    ///
    /// assert_eq!(Encoding::for_model("openai/GPT-4o-mini"), Some(Encoding::O200kBase));
    /// assert_eq!(Encoding::for_model("gpt-4-turbo"), Some(Encoding::Cl100kBase));
    /// assert_eq!(Encoding::for_model("claude-sonnet-4"), None);
    /// ```
    pub fn for_model(model: &str) -> Option<Encoding> {
        model_info(model).map(|info| info.encoding)
    }

    /// The encoding's name as `tiktoken` spells it (`"o200k_base"`, `"cl100k_base"`).
    pub const fn name(self) -> &'static str {
        match self {
            Encoding::O200kBase => "o200k_base",
            Encoding::Cl100kBase => "cl100k_base",
        }
    }

    /// Loads every encoding's tokenizer now, so that no request pays for it later.
    ///
    /// Idempotent and cheap after the first call. Without it, each tokenizer loads on its first
    /// use.
    pub fn warm_up() {
        for encoding in Encoding::ALL {
            encoding.load();
        }
    }

    /// Loads this encoding's tokenizer now (see [`Encoding::warm_up`] for all of them).
    pub fn load(self) {
        let _ = self.tokenizer();
    }

    /// The number of tokens of `text`, exactly as `tiktoken`'s `encode_ordinary` would produce.
    ///
    /// Linear in the length of the text. Never panics.
    pub fn count(self, text: &str) -> u64 {
        let tokenizer = self.tokenizer();
        let text = tokenizer.normalize(text);
        PIECE_COUNTS.with_borrow_mut(|caches| {
            let cache = &mut caches[self as usize];
            tokenizer
                .split(text.as_str())
                .map(|piece| to_u64(cache.count(tokenizer, piece)))
                .sum()
        })
    }

    /// The number of tokens of `text` if it is at most `limit`, otherwise `None`.
    ///
    /// A cheap pre-flight check: the work stops soon after the limit is passed, so its cost
    /// grows with `limit` rather than with the text. `Some(n)` always equals
    /// [`count`](Encoding::count).
    ///
    /// ```
    /// use budget_core::tokens::Encoding;
    ///
    /// let n = Encoding::O200kBase.count("hello world");
    /// assert_eq!(Encoding::O200kBase.count_till_limit("hello world", n), Some(n));
    /// assert_eq!(Encoding::O200kBase.count_till_limit("hello world", n - 1), None);
    /// ```
    pub fn count_till_limit(self, text: &str, limit: u64) -> Option<u64> {
        let tokenizer = self.tokenizer();
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        tokenizer
            .count_till_limit(&tokenizer.normalize(text), limit)
            .map(to_u64)
    }

    /// The lazily built, process-wide tokenizer.
    fn tokenizer(self) -> &'static Tokenizer {
        match self {
            Encoding::O200kBase => bpe_openai::o200k_base(),
            Encoding::Cl100kBase => bpe_openai::cl100k_base(),
        }
    }

    /// The tokens one chat message adds (framing included), and whether it needed an
    /// undocumented formula.
    fn message_tokens(self, message: &ChatMessage<'_>) -> (u64, bool) {
        let mut tokens = TOKENS_PER_MESSAGE
            .saturating_add(self.count(message.role))
            .saturating_add(self.count(message.content));
        if let Some(name) = message.name {
            tokens = tokens
                .saturating_add(self.count(name))
                .saturating_add(TOKENS_PER_NAME);
        }
        let mut estimated = false;
        if let Some(tool_calls) = message.tool_calls {
            tokens = tokens
                .saturating_add(self.count(tool_calls))
                .saturating_add(TOOL_CALLS_OVERHEAD);
            estimated = true;
        }
        if let Some(id) = message.tool_call_id {
            tokens = tokens.saturating_add(self.count(id));
            estimated = true;
        }
        (tokens, estimated)
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A token count, and how much to trust it (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenCount {
    /// The number of tokens.
    pub tokens: u64,
    /// `true` when the number is an approximation: a model that is not OpenAI's, tools or
    /// tool calls, or a chat format OpenAI has not published.
    pub estimated: bool,
    /// The encoding the model really uses, when known. `None` for models that are not
    /// OpenAI's, whose counts are `o200k_base` approximations.
    pub encoding: Option<Encoding>,
}

impl TokenCount {
    /// `true` when the count is exact (the opposite of `estimated`).
    pub const fn is_exact(&self) -> bool {
        !self.estimated
    }

    /// The count to reserve for a text count: an `o200k_base` approximation for a model that
    /// is not OpenAI's (`encoding: None`) raised by [`ESTIMATE_MARGIN_PERCENT`], rounded up;
    /// any other count unchanged. Apply it once, to text counts only: media bounds
    /// ([`media::count_media`]) need no margin.
    pub const fn with_estimate_margin(self) -> TokenCount {
        match self.encoding {
            Some(_) => self,
            None => TokenCount {
                tokens: with_margin(self.tokens),
                estimated: true,
                encoding: None,
            },
        }
    }
}

/// One chat message, borrowed from the caller's request.
///
/// `content` is the message's text (concatenate text parts; images, audio and files are not
/// counted). Build one with the constructors, or as a struct literal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChatMessage<'a> {
    /// `system`, `developer`, `user`, `assistant` or `tool`.
    pub role: &'a str,
    /// The message's text.
    pub content: &'a str,
    /// The optional participant name.
    pub name: Option<&'a str>,
    /// The JSON text of an assistant message's `tool_calls` array, if any. Counting it makes
    /// the result an estimate.
    pub tool_calls: Option<&'a str>,
    /// The `tool_call_id` a `tool` message answers, if any. Counting it makes the result an
    /// estimate.
    pub tool_call_id: Option<&'a str>,
}

impl<'a> ChatMessage<'a> {
    /// A message with the given role and content, and nothing else.
    pub const fn new(role: &'a str, content: &'a str) -> Self {
        ChatMessage {
            role,
            content,
            name: None,
            tool_calls: None,
            tool_call_id: None,
        }
    }

    /// A `system` message.
    pub const fn system(content: &'a str) -> Self {
        Self::new("system", content)
    }

    /// A `developer` message (the o-series' name for system instructions).
    pub const fn developer(content: &'a str) -> Self {
        Self::new("developer", content)
    }

    /// A `user` message.
    pub const fn user(content: &'a str) -> Self {
        Self::new("user", content)
    }

    /// An `assistant` message.
    pub const fn assistant(content: &'a str) -> Self {
        Self::new("assistant", content)
    }

    /// A `tool` message: the result of the tool call `tool_call_id`.
    pub const fn tool(tool_call_id: &'a str, content: &'a str) -> Self {
        ChatMessage {
            tool_call_id: Some(tool_call_id),
            ..Self::new("tool", content)
        }
    }

    /// The same message with a participant `name`.
    pub const fn with_name(self, name: &'a str) -> Self {
        ChatMessage {
            name: Some(name),
            ..self
        }
    }

    /// The same message with `tool_calls` (the JSON text of the array).
    pub const fn with_tool_calls(self, tool_calls_json: &'a str) -> Self {
        ChatMessage {
            tool_calls: Some(tool_calls_json),
            ..self
        }
    }
}

/// Counts the tokens of `text` for `model`.
///
/// Exact for OpenAI models; for any other model an `o200k_base` approximation with
/// `estimated: true` and `encoding: None`, which runs low: reserve
/// [`TokenCount::with_estimate_margin`] of it.
///
/// ```
/// use budget_core::tokens::{count_text, Encoding};
///
/// let exact = count_text("gpt-4o", "Hello, world!");
/// assert_eq!((exact.tokens, exact.estimated, exact.encoding), (4, false, Some(Encoding::O200kBase)));
/// let guess = count_text("gemini-2.5-pro", "Hello, world!");
/// assert_eq!((guess.tokens, guess.estimated, guess.encoding), (4, true, None));
/// assert_eq!(guess.with_estimate_margin().tokens, 8); // ⌈4 × 1.8⌉
/// ```
pub fn count_text(model: &str, text: &str) -> TokenCount {
    match Encoding::for_model(model) {
        Some(encoding) => TokenCount {
            tokens: encoding.count(text),
            estimated: false,
            encoding: Some(encoding),
        },
        None => TokenCount {
            tokens: Encoding::O200kBase.count(text),
            estimated: true,
            encoding: None,
        },
    }
}

/// Counts the prompt tokens of a chat request: `messages`, plus `tools` (the JSON text of the
/// request's `tools` array, if any).
///
/// Uses OpenAI's cookbook formula: per message `3 + tokens(role) + tokens(content) +
/// tokens(name) + 1 if a name is present`, plus 3 to prime the reply. Tools, `tool_calls` and
/// `tool_call_id` are added as described in the [module docs](self), and make the count an
/// estimate, as do models outside the verified families and models that are not OpenAI's
/// (counted with `o200k_base`, `encoding: None`; see [`TokenCount::with_estimate_margin`]).
/// `tools` that are empty or `[]` count as no tools. The count is additive: the conversation's
/// count is [`REPLY_PRIMING_TOKENS`] plus each message's. Images, audio and files are not
/// counted here: see [`count_prompt_bound`].
pub fn count_chat(model: &str, messages: &[ChatMessage<'_>], tools: Option<&str>) -> TokenCount {
    let info = model_info(model);
    let encoding = info.map_or(Encoding::O200kBase, |info| info.encoding);
    let mut estimated = info.is_none_or(|info| !info.chat_verified);

    let mut tokens = REPLY_PRIMING_TOKENS;
    for message in messages {
        let (message_tokens, message_estimated) = encoding.message_tokens(message);
        tokens = tokens.saturating_add(message_tokens);
        estimated |= message_estimated;
    }
    if let Some(tools) = tools {
        let trimmed = tools.trim();
        if !trimmed.is_empty() && trimmed != "[]" {
            tokens = tokens
                .saturating_add(encoding.count(tools))
                .saturating_add(TOOL_DEFINITIONS_OVERHEAD);
            estimated = true;
        }
    }
    TokenCount {
        tokens,
        estimated,
        encoding: info.map(|info| info.encoding),
    }
}

/// The prompt tokens to reserve for a chat request: [`count_chat`] of its text, raised by
/// [`ESTIMATE_MARGIN_PERCENT`] for a model that is not OpenAI's
/// ([`TokenCount::with_estimate_margin`]), plus the bound of each image, audio clip and file
/// ([`media::count_media`]). Any media part makes the count an estimate.
///
/// ```
/// use budget_core::tokens::media::{ImageDetail, MediaPart};
/// use budget_core::tokens::{count_chat, count_prompt_bound, ChatMessage};
///
/// let messages = [ChatMessage::user("What is in this picture?")];
/// let picture = MediaPart::Image { detail: ImageDetail::High, size: Some((1024, 1024)) };
/// let count = count_prompt_bound("gpt-4o", &messages, None, &[picture]);
/// assert_eq!(count.tokens, count_chat("gpt-4o", &messages, None).tokens + 765);
/// assert!(count.estimated);
/// // Another vendor's model: the text's o200k count raised by 80 %.
/// let claude = count_prompt_bound("claude-sonnet-4-5", &messages, None, &[]);
/// assert_eq!(claude.tokens, (count_chat("claude-sonnet-4-5", &messages, None).tokens * 18).div_ceil(10));
/// ```
pub fn count_prompt_bound(
    model: &str,
    messages: &[ChatMessage<'_>],
    tools: Option<&str>,
    media: &[MediaPart],
) -> TokenCount {
    let mut count = count_chat(model, messages, tools).with_estimate_margin();
    for part in media {
        count.tokens = count.tokens.saturating_add(count_media(model, part).tokens);
        count.estimated = true;
    }
    count
}

/// Token counts of short pre-tokenized pieces (words, mostly), per thread and encoding.
///
/// Prompts repeat the same words over and over, and counting a piece with the byte-pair
/// encoder allocates; a lookup does not. The result is the encoder's own count, so counts stay
/// exact. The cache is bounded: it is emptied when full.
struct PieceCache {
    counts: foldhash::HashMap<Box<str>, u32>,
}

/// Pieces longer than this are counted directly (they rarely repeat).
const MAX_CACHED_PIECE: usize = 24;
/// Entries per thread and encoding before the cache is emptied.
const PIECE_CACHE_CAPACITY: usize = 32_768;

impl PieceCache {
    fn new() -> PieceCache {
        PieceCache {
            counts: foldhash::HashMap::default(),
        }
    }

    fn count(&mut self, tokenizer: &Tokenizer, piece: &str) -> usize {
        if piece.len() > MAX_CACHED_PIECE {
            return tokenizer.bpe.count(piece.as_bytes());
        }
        if let Some(&n) = self.counts.get(piece) {
            return n as usize;
        }
        let n = tokenizer.bpe.count(piece.as_bytes());
        if self.counts.len() >= PIECE_CACHE_CAPACITY {
            self.counts.clear();
        }
        // A piece of at most 24 bytes has at most 24 tokens: the cast cannot truncate.
        self.counts.insert(piece.into(), n as u32);
        n
    }
}

thread_local! {
    static PIECE_COUNTS: std::cell::RefCell<[PieceCache; 2]> =
        std::cell::RefCell::new([PieceCache::new(), PieceCache::new()]);
}

fn to_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// Families on `o200k_base`, and whether their chat framing is published and verified.
const O200K_FAMILIES: &[(&str, bool)] = &[
    ("gpt-4o", true),
    ("chatgpt-4o", true),
    ("gpt-4.1", false),
    ("gpt-4.5", false),
    ("gpt-5", false),
    ("gpt-oss", false),
    ("codex-mini", false),
    ("o1", false),
    ("o3", false),
    ("o4", false),
];

/// Families on `cl100k_base` (other than gpt-4 itself, handled apart because `gpt-4` is a
/// prefix of o200k families), and whether their chat framing is verified.
const CL100K_FAMILIES: &[(&str, bool)] = &[
    ("gpt-3.5-turbo", true),
    ("gpt-35-turbo", true), // Azure's spelling
    ("text-embedding-3", false),
    ("text-embedding-ada-002", false),
];

fn model_info(model: &str) -> Option<ModelInfo> {
    let name = strip_model_prefixes(model);
    let o200k = |chat_verified| ModelInfo {
        encoding: Encoding::O200kBase,
        chat_verified,
    };
    let cl100k = |chat_verified| ModelInfo {
        encoding: Encoding::Cl100kBase,
        chat_verified,
    };
    if let Some(&(_, verified)) = O200K_FAMILIES
        .iter()
        .find(|(family, _)| in_family(name, family))
    {
        return Some(o200k(verified));
    }
    // gpt-4 proper: `gpt-4`, `gpt-4-0613`, `gpt-4-turbo`, `gpt-4-32k`, but not `gpt-4o` or a
    // future `gpt-4.x` (unknown, so estimated).
    if strip_prefix_ignore_case(name, "gpt-4")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('-'))
    {
        return Some(cl100k(true));
    }
    CL100K_FAMILIES
        .iter()
        .find(|(family, _)| in_family(name, family))
        .map(|&(_, verified)| cl100k(verified))
}

/// Drops provider routing (`openai/`, `azure/`, …), the fine-tuning marker `ft:` and Bedrock's
/// `openai.` prefix.
fn strip_model_prefixes(model: &str) -> &str {
    let mut name = model.trim();
    if let Some(slash) = name.rfind('/') {
        name = name.get(slash + 1..).unwrap_or_default();
    }
    for prefix in ["ft:", "openai."] {
        if let Some(rest) = strip_prefix_ignore_case(name, prefix) {
            name = rest;
        }
    }
    name
}

/// `name` is `family` or `family` followed by a non-alphanumeric separator (`gpt-4o-mini`,
/// `gpt-5.1`, `o3-pro`, `gpt-oss:20b`), ignoring ASCII case.
fn in_family(name: &str, family: &str) -> bool {
    strip_prefix_ignore_case(name, family)
        .is_some_and(|rest| !rest.starts_with(|c: char| c.is_ascii_alphanumeric()))
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        s.get(prefix.len()..)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_model_mapping() {
        use Encoding::{Cl100kBase as C, O200kBase as O};
        let cases: &[(&str, Option<Encoding>)] = &[
            ("gpt-4o", Some(O)),
            ("gpt-4o-mini", Some(O)),
            ("gpt-4o-2024-08-06", Some(O)),
            ("GPT-4O", Some(O)),
            ("openai/gpt-4o", Some(O)),
            ("azure/gpt-4o-mini", Some(O)),
            ("openrouter/openai/gpt-4.1-mini", Some(O)),
            ("ft:gpt-4o-mini-2024-07-18:acme::abc123", Some(O)),
            ("chatgpt-4o-latest", Some(O)),
            ("gpt-4.1", Some(O)),
            ("gpt-4.1-nano", Some(O)),
            ("gpt-4.5-preview", Some(O)),
            ("gpt-5", Some(O)),
            ("gpt-5-mini", Some(O)),
            ("gpt-5.1-codex", Some(O)),
            ("o1", Some(O)),
            ("o1-mini", Some(O)),
            ("o3", Some(O)),
            ("o3-pro", Some(O)),
            ("o4-mini", Some(O)),
            ("gpt-oss-120b", Some(O)),
            ("bedrock/openai.gpt-oss-20b-1:0", Some(O)),
            ("  gpt-4o  ", Some(O)),
            ("gpt-4", Some(C)),
            ("gpt-4-0613", Some(C)),
            ("gpt-4-turbo", Some(C)),
            ("gpt-4-32k", Some(C)),
            ("azure/gpt-4", Some(C)),
            ("gpt-3.5-turbo", Some(C)),
            ("gpt-3.5-turbo-0125", Some(C)),
            ("gpt-35-turbo", Some(C)),
            ("text-embedding-3-small", Some(C)),
            ("text-embedding-3-large", Some(C)),
            ("text-embedding-ada-002", Some(C)),
            ("claude-sonnet-4-5", None),
            ("anthropic/claude-3-5-haiku", None),
            ("gemini-2.5-pro", None),
            ("llama-3.1-70b", None),
            ("gpt-4.2", None),
            ("gpt-40", None),
            ("o10", None),
            ("", None),
            ("/", None),
            ("openai/", None),
            ("gpt-4é", None),
            ("ĝpt-4o", None),
        ];
        for &(model, expected) in cases {
            assert_eq!(Encoding::for_model(model), expected, "model {model:?}");
        }
    }

    #[test]
    fn tokens_chat_verification_labels() {
        let messages = [ChatMessage::user("hi")];
        for model in ["gpt-4o", "gpt-4", "gpt-3.5-turbo", "chatgpt-4o-latest"] {
            assert!(!count_chat(model, &messages, None).estimated, "{model}");
        }
        for model in [
            "gpt-5",
            "o3",
            "gpt-4.1",
            "gpt-oss-20b",
            "text-embedding-3-small",
        ] {
            let count = count_chat(model, &messages, None);
            assert!(count.estimated, "{model}");
            assert!(count.encoding.is_some(), "{model}");
            assert!(!count_text(model, "hi").estimated, "{model}");
        }
    }

    #[test]
    fn tokens_empty_inputs() {
        for encoding in Encoding::ALL {
            assert_eq!(encoding.count(""), 0);
            assert_eq!(encoding.count_till_limit("", 0), Some(0));
        }
        let empty = count_chat("gpt-4o", &[], None);
        assert_eq!(empty.tokens, REPLY_PRIMING_TOKENS);
        assert!(!empty.estimated);
        assert_eq!(count_chat("gpt-4o", &[], Some(" [] ")), empty);
    }

    #[test]
    fn tokens_display_and_names() {
        assert_eq!(Encoding::O200kBase.to_string(), "o200k_base");
        assert_eq!(Encoding::Cl100kBase.name(), "cl100k_base");
        Encoding::warm_up();
    }
}
