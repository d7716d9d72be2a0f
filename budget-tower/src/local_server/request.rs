//! Lenient parsing of an OpenAI chat request, with OpenAI's 400 errors for what cannot be read.

use budget_core::ChatMessage;
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

/// A chat request, reduced to what the server needs.
#[derive(Debug, Clone)]
pub(super) struct ChatRequest {
    /// The requested model.
    pub(super) model: String,
    /// The messages' text, for token counting.
    pub(super) messages: Vec<Message>,
    /// The JSON text of the `tools` array, exactly as sent, if any.
    pub(super) tools: Option<String>,
    /// The output cap: the smaller of `max_completion_tokens` and `max_tokens` when both are set.
    pub(super) output_cap: Option<u64>,
    /// How many choices to generate (`n`, 1 to 128; 1 when absent).
    pub(super) choices: u32,
    /// `"stream": true`.
    pub(super) stream: bool,
    /// `"stream_options": {"include_usage": true}`.
    pub(super) include_usage: bool,
    /// A hash of the model and the messages: the same conversation gets the same reply.
    pub(super) seed: u64,
}

/// One message's countable parts, owned.
#[derive(Debug, Clone, Default)]
pub(super) struct Message {
    role: String,
    content: String,
    name: Option<String>,
    tool_calls: Option<String>,
    tool_call_id: Option<String>,
}

impl Message {
    /// The borrowed form `budget_core::count_chat` takes.
    pub(super) fn as_chat_message(&self) -> ChatMessage<'_> {
        ChatMessage {
            role: &self.role,
            content: &self.content,
            name: self.name.as_deref(),
            tool_calls: self.tool_calls.as_deref(),
            tool_call_id: self.tool_call_id.as_deref(),
        }
    }
}

/// Why a request body was refused: becomes an HTTP 400 `invalid_request_error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum RequestError {
    /// The body is not JSON.
    #[error(
        "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload.) Details: {0}"
    )]
    InvalidJson(String),
    /// The body is JSON but not an object.
    #[error("The request body must be a JSON object.")]
    NotAnObject,
    /// A required parameter is absent or null.
    #[error("Missing required parameter: '{0}'.")]
    Missing(&'static str),
    /// A parameter has the wrong type or an impossible value.
    #[error("Invalid value for '{param}': {expected}.")]
    Invalid {
        /// The parameter's path, e.g. `messages[0].content`.
        param: String,
        /// What was expected instead.
        expected: &'static str,
    },
}

impl RequestError {
    /// The `param` field of OpenAI's error JSON.
    pub(super) fn param(&self) -> Option<String> {
        match self {
            RequestError::InvalidJson(_) | RequestError::NotAnObject => None,
            RequestError::Missing(param) => Some((*param).to_owned()),
            RequestError::Invalid { param, .. } => Some(param.clone()),
        }
    }
}

/// The parts that are kept as raw JSON text (tool definitions and tool calls), so that they are
/// counted exactly as the client sent them.
#[derive(Deserialize)]
struct RawParts<'a> {
    #[serde(borrow, default)]
    tools: Option<&'a RawValue>,
    #[serde(borrow, default)]
    messages: Vec<RawMessage<'a>>,
}

#[derive(Deserialize)]
struct RawMessage<'a> {
    #[serde(borrow, default)]
    tool_calls: Option<&'a RawValue>,
}

impl ChatRequest {
    /// Reads a request from its body bytes and the same bytes already parsed as JSON.
    pub(super) fn parse(body: &[u8], value: &Value) -> Result<ChatRequest, RequestError> {
        let object = value.as_object().ok_or(RequestError::NotAnObject)?;

        let model = match object.get("model") {
            None | Some(Value::Null) => return Err(RequestError::Missing("model")),
            Some(Value::String(model)) => model.clone(),
            Some(_) => return Err(invalid("model", "expected a string")),
        };
        let raw_messages = match object.get("messages") {
            None | Some(Value::Null) => return Err(RequestError::Missing("messages")),
            Some(Value::Array(messages)) => messages,
            Some(_) => return Err(invalid("messages", "expected an array")),
        };
        let raw_parts: RawParts<'_> = serde_json::from_slice(body)
            .map_err(|error| RequestError::InvalidJson(error.to_string()))?;

        let mut messages = Vec::with_capacity(raw_messages.len());
        for (index, message) in raw_messages.iter().enumerate() {
            let tool_calls = raw_parts
                .messages
                .get(index)
                .and_then(|raw| raw.tool_calls)
                .and_then(raw_text);
            messages.push(parse_message(index, message, tool_calls)?);
        }

        let max_tokens = optional_count(object, "max_tokens")?;
        let max_completion_tokens = optional_count(object, "max_completion_tokens")?;
        let output_cap = match (max_tokens, max_completion_tokens) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let choices = match optional_count(object, "n")? {
            None => 1,
            Some(n @ 1..=128) => u32::try_from(n).unwrap_or(1),
            Some(_) => return Err(invalid("n", "expected an integer from 1 to 128")),
        };
        let stream = optional_bool(object.get("stream"), "stream")?;
        let include_usage = match object.get("stream_options") {
            None | Some(Value::Null) => false,
            Some(Value::Object(options)) => {
                optional_bool(options.get("include_usage"), "stream_options.include_usage")?
            }
            Some(_) => return Err(invalid("stream_options", "expected an object")),
        };

        let seed = seed(&model, value.get("messages"));
        Ok(ChatRequest {
            model,
            messages,
            tools: raw_parts.tools.and_then(raw_text),
            output_cap,
            choices,
            stream,
            include_usage,
            seed,
        })
    }

    /// The messages in the borrowed form `budget_core::count_chat` takes.
    pub(super) fn chat_messages(&self) -> Vec<ChatMessage<'_>> {
        self.messages.iter().map(Message::as_chat_message).collect()
    }
}

fn invalid(param: impl Into<String>, expected: &'static str) -> RequestError {
    RequestError::Invalid {
        param: param.into(),
        expected,
    }
}

/// The raw JSON text, or `None` for `null`.
fn raw_text(raw: &RawValue) -> Option<String> {
    let text = raw.get().trim();
    (text != "null").then(|| text.to_owned())
}

fn parse_message(
    index: usize,
    message: &Value,
    tool_calls: Option<String>,
) -> Result<Message, RequestError> {
    let param = |field: &str| format!("messages[{index}].{field}");
    let object = message
        .as_object()
        .ok_or_else(|| invalid(format!("messages[{index}]"), "expected an object"))?;
    let role = match object.get("role") {
        Some(Value::String(role)) => role.clone(),
        _ => return Err(invalid(param("role"), "expected a string")),
    };
    let content = match object.get("content") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => {
            // Text parts are concatenated; images, audio and files carry no countable text.
            let mut text = String::new();
            for part in parts {
                match part.get("text") {
                    Some(Value::String(part_text)) => text.push_str(part_text),
                    None | Some(Value::Null) => {}
                    Some(_) => return Err(invalid(param("content"), "text parts must be strings")),
                }
            }
            text
        }
        Some(_) => {
            return Err(invalid(
                param("content"),
                "expected a string or an array of content parts",
            ));
        }
    };
    let optional_string = |field: &str| match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err(invalid(param(field), "expected a string")),
    };
    Ok(Message {
        role,
        content,
        name: optional_string("name")?,
        tool_calls,
        tool_call_id: optional_string("tool_call_id")?,
    })
}

fn optional_count(
    object: &serde_json::Map<String, Value>,
    field: &'static str,
) -> Result<Option<u64>, RequestError> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value
            .as_u64()
            .map(Some)
            .ok_or_else(|| invalid(field, "expected a non-negative integer")),
    }
}

fn optional_bool(value: Option<&Value>, param: &'static str) -> Result<bool, RequestError> {
    match value {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(flag)) => Ok(*flag),
        Some(_) => Err(invalid(param, "expected a boolean")),
    }
}

/// FNV-1a over the model and the messages' JSON text: stable across runs and platforms.
fn seed(model: &str, messages: Option<&Value>) -> u64 {
    let messages = messages.map(Value::to_string).unwrap_or_default();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in model
        .as_bytes()
        .iter()
        .chain(&[0xff])
        .chain(messages.as_bytes())
    {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ChatRequest, RequestError> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| RequestError::InvalidJson(e.to_string()))?;
        ChatRequest::parse(text.as_bytes(), &value)
    }

    #[test]
    fn reads_string_and_part_contents_caps_and_stream_options() {
        let request = parse(
            r#"{"model":"gpt-4o","messages":[{"role":"system","content":"Be terse."},
            {"role":"user","content":[{"type":"text","text":"Hel"},{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"lo"}],"name":"bob"}],
            "max_tokens":50,"max_completion_tokens":20,"stream":true,"stream_options":{"include_usage":true},
            "tools":[{"type":"function","function":{"name":"f"}}]}"#,
        )
        .unwrap();
        assert_eq!(request.model, "gpt-4o");
        let messages = request.chat_messages();
        assert_eq!(messages[0], ChatMessage::system("Be terse."));
        assert_eq!(messages[1], ChatMessage::user("Hello").with_name("bob"));
        assert_eq!(request.output_cap, Some(20));
        assert!(request.stream && request.include_usage);
        assert_eq!(
            request.tools.as_deref(),
            Some(r#"[{"type":"function","function":{"name":"f"}}]"#)
        );
    }

    #[test]
    fn keeps_tool_calls_as_sent() {
        let request = parse(
            r#"{"model":"m","messages":[{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]},
            {"role":"tool","tool_call_id":"c1","content":"42"}]}"#,
        )
        .unwrap();
        let messages = request.chat_messages();
        assert_eq!(
            messages[0].tool_calls,
            Some(r#"[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]"#)
        );
        assert_eq!(messages[1], ChatMessage::tool("c1", "42"));
        assert_eq!(request.output_cap, None);
        assert!(!request.stream);
    }

    #[test]
    fn refuses_what_openai_refuses() {
        assert!(matches!(parse("{"), Err(RequestError::InvalidJson(_))));
        assert_eq!(parse("[]").unwrap_err(), RequestError::NotAnObject);
        assert_eq!(
            parse(r#"{"messages":[]}"#).unwrap_err(),
            RequestError::Missing("model")
        );
        assert_eq!(
            parse(r#"{"model":"m"}"#).unwrap_err(),
            RequestError::Missing("messages")
        );
        let error = parse(r#"{"model":"m","messages":[{"role":1}]}"#).unwrap_err();
        assert_eq!(error.param().as_deref(), Some("messages[0].role"));
        let error = parse(r#"{"model":"m","messages":[],"max_tokens":-1}"#).unwrap_err();
        assert_eq!(error.param().as_deref(), Some("max_tokens"));
        let error = parse(r#"{"model":"m","messages":[],"stream":"yes"}"#).unwrap_err();
        assert_eq!(error.param().as_deref(), Some("stream"));
    }

    #[test]
    fn the_seed_depends_on_model_and_messages_only() {
        let a = parse(r#"{"model":"m","messages":[{"role":"user","content":"a"}],"max_tokens":5}"#)
            .unwrap();
        let b = parse(r#"{"max_tokens":9,"messages":[{"role":"user","content":"a"}],"model":"m"}"#)
            .unwrap();
        let c = parse(r#"{"model":"n","messages":[{"role":"user","content":"a"}]}"#).unwrap();
        assert_eq!(a.seed, b.seed);
        assert_ne!(a.seed, c.seed);
    }
}
