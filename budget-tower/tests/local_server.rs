//! End-to-end tests of the local OpenAI-compatible server, driven by the real async-openai client
//! (and by reqwest where the wire itself is under test).

use std::time::{Duration, Instant};

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::middleware::ReqwestService;
use async_openai::types::chat::{
    ChatCompletionRequestMessage, ChatCompletionStreamOptions, ChatCompletionTool,
    ChatCompletionTools, CreateChatCompletionRequest, CreateChatCompletionRequestArgs,
    CreateChatCompletionResponse, CreateChatCompletionStreamResponse, FinishReason,
    FunctionObjectArgs, Role,
};
use budget_core::{ChatMessage, count_chat, count_text};
use budget_tower::local_server::{Behavior, FailureKind, LocalServer, RunningServer};
use futures::StreamExt;
use serde_json::{Value, json};

mod support;
use support::chat::{system_message, user_message};
use support::server::start_server;

const SYSTEM: &str = "You are a terse assistant.";
const USER: &str = "Summarise the plan in three bullet points.";

/// A client that does not retry, so each call is exactly one HTTP request.
fn client(server: &RunningServer) -> Client<OpenAIConfig> {
    let config = OpenAIConfig::new()
        .with_api_base(server.base_url())
        .with_api_key("test");
    Client::with_config(config).with_http_service(ReqwestService::new(reqwest::Client::new()))
}

fn messages(user: &str) -> Vec<ChatCompletionRequestMessage> {
    vec![system_message(SYSTEM), user_message(user)]
}

fn request(model: &str, max_tokens: Option<u32>) -> CreateChatCompletionRequest {
    let mut args = CreateChatCompletionRequestArgs::default();
    args.model(model).messages(messages(USER));
    if let Some(max_tokens) = max_tokens {
        args.max_tokens(max_tokens);
    }
    args.build().unwrap()
}

fn streaming(
    model: &str,
    max_tokens: Option<u32>,
    include_usage: bool,
) -> CreateChatCompletionRequest {
    let mut request = request(model, max_tokens);
    request.stream = Some(true);
    if include_usage {
        request.stream_options = Some(ChatCompletionStreamOptions {
            include_usage: Some(true),
            include_obfuscation: None,
        });
    }
    request
}

fn expected_prompt_tokens(model: &str) -> u64 {
    count_chat(
        model,
        &[ChatMessage::system(SYSTEM), ChatMessage::user(USER)],
        None,
    )
    .tokens
}

fn content(response: &CreateChatCompletionResponse) -> String {
    response.choices[0]
        .message
        .content
        .clone()
        .unwrap_or_default()
}

/// Everything a stream yielded, split into chunks and errors (in order).
struct Collected {
    chunks: Vec<CreateChatCompletionStreamResponse>,
    errors: Vec<OpenAIError>,
}

impl Collected {
    fn content_pieces(&self) -> Vec<String> {
        self.chunks
            .iter()
            .flat_map(|chunk| &chunk.choices)
            .filter_map(|choice| choice.delta.content.clone())
            .filter(|piece| !piece.is_empty())
            .collect()
    }

    fn finish_reasons(&self) -> Vec<FinishReason> {
        self.chunks
            .iter()
            .flat_map(|chunk| &chunk.choices)
            .filter_map(|choice| choice.finish_reason)
            .collect()
    }

    fn usage_chunks(&self) -> Vec<&CreateChatCompletionStreamResponse> {
        self.chunks
            .iter()
            .filter(|chunk| chunk.usage.is_some())
            .collect()
    }
}

async fn collect(client: &Client<OpenAIConfig>, request: CreateChatCompletionRequest) -> Collected {
    let mut stream = client.chat().create_stream(request).await.unwrap();
    let mut collected = Collected {
        chunks: Vec::new(),
        errors: Vec::new(),
    };
    while let Some(item) = stream.next().await {
        match item {
            Ok(chunk) => collected.chunks.push(chunk),
            Err(error) => collected.errors.push(error),
        }
    }
    collected
}

fn api_error(error: OpenAIError) -> async_openai::error::ApiErrorResponse {
    match error {
        OpenAIError::ApiError(response) => response,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// The API error the server answers `request` with.
async fn api_error_of(
    client: &Client<OpenAIConfig>,
    request: CreateChatCompletionRequest,
) -> async_openai::error::ApiErrorResponse {
    api_error(client.chat().create(request).await.unwrap_err())
}

#[tokio::test]
async fn non_streaming_usage_equals_independent_counts() {
    let server = LocalServer::builder().start().await.unwrap();
    let client = client(&server);
    // o200k and cl100k with verified chat framing, and a non-OpenAI model (o200k estimate).
    for model in ["gpt-4o", "gpt-4", "claude-sonnet-4"] {
        let response = client.chat().create(request(model, None)).await.unwrap();
        let usage = response.usage.clone().unwrap();
        let text = content(&response);
        assert_eq!(
            u64::from(usage.prompt_tokens),
            expected_prompt_tokens(model),
            "{model}"
        );
        assert_eq!(
            u64::from(usage.completion_tokens),
            count_text(model, &text).tokens
        );
        assert_eq!(usage.completion_tokens, 60, "default reply length");
        assert_eq!(
            usage.total_tokens,
            usage.prompt_tokens + usage.completion_tokens
        );
        assert_eq!(response.model, model);
        assert_eq!(response.object, "chat.completion");
        assert_eq!(response.choices[0].message.role, Role::Assistant);
        assert_eq!(response.choices[0].finish_reason, Some(FinishReason::Stop));
        let details = usage.prompt_tokens_details.unwrap();
        assert_eq!(details.cached_tokens, Some(0));
        let details = usage.completion_tokens_details.unwrap();
        assert_eq!(details.reasoning_tokens, Some(0));
    }
    assert_eq!(server.requests_received(), 3);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn replies_are_deterministic_per_conversation() {
    let server = start_server(25).await;
    let client = client(&server);
    let first = content(&client.chat().create(request("gpt-4o", None)).await.unwrap());
    let again = content(&client.chat().create(request("gpt-4o", None)).await.unwrap());
    assert_eq!(first, again);

    let mut other = request("gpt-4o", None);
    other.messages = messages("Something else entirely.");
    let other = content(&client.chat().create(other).await.unwrap());
    assert_ne!(first, other);

    // A capped reply is a prefix of the uncapped one.
    let capped = content(
        &client
            .chat()
            .create(request("gpt-4o", Some(10)))
            .await
            .unwrap(),
    );
    assert!(
        first.starts_with(&capped),
        "{capped:?} is not a prefix of {first:?}"
    );
}

#[tokio::test]
async fn max_tokens_are_honoured_and_visible_in_requests() {
    let server = LocalServer::builder().start().await.unwrap();
    let client = client(&server);

    let response = client
        .chat()
        .create(request("gpt-4o", Some(7)))
        .await
        .unwrap();
    let usage = response.usage.clone().unwrap();
    assert_eq!(usage.completion_tokens, 7);
    assert_eq!(count_text("gpt-4o", &content(&response)).tokens, 7);
    assert_eq!(
        response.choices[0].finish_reason,
        Some(FinishReason::Length)
    );
    assert_eq!(server.last_request().unwrap()["max_tokens"], 7);

    let mut newer = request("gpt-4o", None);
    newer.max_completion_tokens = Some(9);
    let response = client.chat().create(newer).await.unwrap();
    assert_eq!(response.usage.unwrap().completion_tokens, 9);

    // A cap above the reply length changes nothing.
    let response = client
        .chat()
        .create(request("gpt-4o", Some(500)))
        .await
        .unwrap();
    assert_eq!(response.usage.unwrap().completion_tokens, 60);
    assert_eq!(response.choices[0].finish_reason, Some(FinishReason::Stop));

    let requests = server.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[0]["max_tokens"], 7);
    assert_eq!(requests[1]["max_completion_tokens"], 9);
    assert_eq!(requests[0]["messages"][1]["content"], USER);
}

#[tokio::test]
async fn streaming_sends_one_token_per_chunk_and_a_final_usage_chunk() {
    let server = start_server(30).await;
    let client = client(&server);
    let collected = collect(&client, streaming("gpt-4o", None, true)).await;
    assert!(collected.errors.is_empty(), "{:?}", collected.errors);

    let first = &collected.chunks[0];
    assert_eq!(first.choices[0].delta.role, Some(Role::Assistant));
    assert_eq!(first.choices[0].delta.content.as_deref(), Some(""));

    let pieces = collected.content_pieces();
    assert_eq!(pieces.len(), 30);
    for piece in &pieces {
        assert_eq!(count_text("gpt-4o", piece).tokens, 1, "{piece:?}");
    }
    assert_eq!(collected.finish_reasons(), [FinishReason::Stop]);

    let usage_chunks = collected.usage_chunks();
    assert_eq!(usage_chunks.len(), 1);
    let last = collected.chunks.last().unwrap();
    assert!(last.choices.is_empty());
    let usage = last.usage.clone().unwrap();
    let text = pieces.concat();
    assert_eq!(
        u64::from(usage.completion_tokens),
        count_text("gpt-4o", &text).tokens
    );
    assert_eq!(usage.completion_tokens, 30);
    assert_eq!(
        u64::from(usage.prompt_tokens),
        expected_prompt_tokens("gpt-4o")
    );

    // Streaming and non-streaming give the same reply for the same conversation.
    let whole = client.chat().create(request("gpt-4o", None)).await.unwrap();
    assert_eq!(content(&whole), text);
}

#[tokio::test]
async fn streaming_without_include_usage_has_no_usage_chunk() {
    let server = start_server(12).await;
    let client = client(&server);
    let collected = collect(&client, streaming("gpt-4", None, false)).await;
    assert!(collected.errors.is_empty());
    assert!(collected.usage_chunks().is_empty());
    assert!(
        collected
            .chunks
            .iter()
            .all(|chunk| !chunk.choices.is_empty())
    );
    let pieces = collected.content_pieces();
    assert_eq!(pieces.len(), 12);
    for piece in &pieces {
        assert_eq!(count_text("gpt-4", piece).tokens, 1, "cl100k: {piece:?}");
    }
    assert_eq!(collected.finish_reasons(), [FinishReason::Stop]);
}

#[tokio::test]
async fn streaming_stops_at_the_cap_with_finish_reason_length() {
    let server = LocalServer::builder().start().await.unwrap();
    let client = client(&server);
    let collected = collect(&client, streaming("gpt-4o", Some(5), true)).await;
    assert_eq!(collected.content_pieces().len(), 5);
    assert_eq!(collected.finish_reasons(), [FinishReason::Length]);
    let usage = collected.chunks.last().unwrap().usage.clone().unwrap();
    assert_eq!(usage.completion_tokens, 5);
}

#[tokio::test]
async fn the_sse_wire_format_matches_openai() {
    let server = start_server(3).await;
    let body = json!({
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    let response = reqwest::Client::new()
        .post(format!("{}/chat/completions", server.base_url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let text = response.text().await.unwrap();
    let data: Vec<&str> = text
        .split("\n\n")
        .filter(|event| !event.is_empty())
        .map(|event| event.strip_prefix("data: ").expect(event))
        .collect();
    // role, 3 tokens, finish, usage, [DONE]
    assert_eq!(data.len(), 7, "{text}");
    assert_eq!(data[6], "[DONE]");
    let chunks: Vec<Value> = data[..6]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    for chunk in &chunks[..5] {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["usage"], Value::Null);
        assert!(chunk.as_object().unwrap().contains_key("usage"));
        assert_eq!(chunk["id"], chunks[0]["id"]);
    }
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    assert_eq!(chunks[4]["choices"][0]["delta"], json!({}));
    assert_eq!(chunks[4]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[5]["choices"], json!([]));
    assert_eq!(chunks[5]["usage"]["completion_tokens"], 3);
}

#[tokio::test]
async fn the_served_model_can_be_rewritten() {
    let server = LocalServer::builder()
        .served_model("gpt-4o", "gpt-4o-2024-08-06")
        .start()
        .await
        .unwrap();
    let client = client(&server);
    let response = client
        .chat()
        .create(request("gpt-4o", Some(3)))
        .await
        .unwrap();
    assert_eq!(response.model, "gpt-4o-2024-08-06");
    let collected = collect(&client, streaming("gpt-4o", Some(3), true)).await;
    assert!(
        collected
            .chunks
            .iter()
            .all(|chunk| chunk.model == "gpt-4o-2024-08-06")
    );
    // Other models are reported as requested.
    let response = client
        .chat()
        .create(request("gpt-4o-mini", Some(3)))
        .await
        .unwrap();
    assert_eq!(response.model, "gpt-4o-mini");
}

#[tokio::test]
async fn cached_and_reasoning_tokens_are_reported_inside_the_totals() {
    let server = LocalServer::builder()
        .reply_tokens(6)
        .cached_tokens(10)
        .reasoning_tokens(4)
        .start()
        .await
        .unwrap();
    let client = client(&server);
    let response = client.chat().create(request("o3", None)).await.unwrap();
    let usage = response.usage.clone().unwrap();
    assert_eq!(usage.prompt_tokens_details.unwrap().cached_tokens, Some(10));
    assert_eq!(
        usage.completion_tokens_details.unwrap().reasoning_tokens,
        Some(4)
    );
    assert_eq!(usage.completion_tokens, 10, "6 visible + 4 reasoning");
    assert_eq!(count_text("o3", &content(&response)).tokens, 6);

    // Reasoning counts against the cap: 4 reasoning + 2 visible = 6.
    let response = client.chat().create(request("o3", Some(6))).await.unwrap();
    let usage = response.usage.clone().unwrap();
    assert_eq!(usage.completion_tokens, 6);
    assert_eq!(count_text("o3", &content(&response)).tokens, 2);
    assert_eq!(
        response.choices[0].finish_reason,
        Some(FinishReason::Length)
    );

    // The streamed usage chunk carries the same details.
    let collected = collect(&client, streaming("o3", None, true)).await;
    let usage = collected.chunks.last().unwrap().usage.clone().unwrap();
    assert_eq!(usage.completion_tokens, 10);
    assert_eq!(collected.content_pieces().len(), 6);

    // Cached tokens never exceed the prompt.
    let server = LocalServer::builder()
        .cached_tokens(1_000_000)
        .start()
        .await
        .unwrap();
    let response = self::client(&server)
        .chat()
        .create(request("gpt-4o", Some(1)))
        .await
        .unwrap();
    let usage = response.usage.unwrap();
    assert_eq!(
        usage.prompt_tokens_details.unwrap().cached_tokens,
        Some(usage.prompt_tokens)
    );
}

#[tokio::test]
async fn tools_and_text_parts_are_counted_like_the_client_side_does() {
    let server = start_server(2).await;
    let client = client(&server);
    let tool = ChatCompletionTools::Function(ChatCompletionTool {
        function: FunctionObjectArgs::default()
            .name("get_weather")
            .description("Weather in a city")
            .parameters(json!({"type": "object", "properties": {"city": {"type": "string"}}}))
            .build()
            .unwrap(),
    });
    let mut with_tools = request("gpt-4o", None);
    with_tools.tools = Some(vec![tool]);
    let tools_json = serde_json::to_string(with_tools.tools.as_ref().unwrap()).unwrap();
    let response = client.chat().create(with_tools).await.unwrap();
    let expected = count_chat(
        "gpt-4o",
        &[ChatMessage::system(SYSTEM), ChatMessage::user(USER)],
        Some(&tools_json),
    );
    assert!(expected.estimated);
    assert_eq!(
        u64::from(response.usage.unwrap().prompt_tokens),
        expected.tokens
    );

    // Text parts are concatenated; other parts carry no text.
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "Hello, "},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
        {"type": "text", "text": "world!"},
    ], "name": "alice"}]});
    let reply: Value = reqwest::Client::new()
        .post(format!("{}/chat/completions", server.base_url()))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let expected = count_chat(
        "gpt-4o",
        &[ChatMessage::user("Hello, world!").with_name("alice")],
        None,
    );
    assert_eq!(reply["usage"]["prompt_tokens"], expected.tokens);
}

#[tokio::test]
async fn rate_limits_and_quota_exhaustion_are_distinguishable() {
    let server = LocalServer::builder()
        .on_request(0, Behavior::Fail(FailureKind::RateLimited))
        .on_request(1, Behavior::Fail(FailureKind::InsufficientQuota))
        .on_request(2, Behavior::Fail(FailureKind::RateLimited))
        .retry_after(Duration::from_millis(1500))
        .start()
        .await
        .unwrap();
    let client = client(&server);

    let limited = api_error_of(&client, request("gpt-4o", None)).await;
    assert_eq!(limited.status_code.as_u16(), 429);
    assert_eq!(
        limited.api_error.code.as_deref(),
        Some("rate_limit_exceeded")
    );
    assert_ne!(
        limited.api_error.r#type.as_deref(),
        Some("insufficient_quota")
    );

    let quota = api_error_of(&client, request("gpt-4o", None)).await;
    assert_eq!(quota.status_code.as_u16(), 429);
    assert_eq!(
        quota.api_error.r#type.as_deref(),
        Some("insufficient_quota")
    );
    assert_eq!(quota.api_error.code.as_deref(), Some("insufficient_quota"));

    // The headers of a rate-limited response.
    let response = reqwest::Client::new()
        .post(format!("{}/chat/completions", server.base_url()))
        .json(&json!({"model": "gpt-4o", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let headers = response.headers();
    assert_eq!(headers["retry-after"], "2");
    assert_eq!(headers["x-ratelimit-remaining-requests"], "0");
    assert_eq!(headers["x-ratelimit-reset-requests"], "2s");
    for name in [
        "x-ratelimit-limit-requests",
        "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens",
    ] {
        assert!(headers.contains_key(name), "{name}");
    }
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert_eq!(body["error"]["param"], Value::Null);

    // Unscripted requests succeed.
    client.chat().create(request("gpt-4o", None)).await.unwrap();
    assert_eq!(server.requests_received(), 4);
}

#[tokio::test]
async fn server_errors_are_http_500() {
    let server = LocalServer::builder()
        .always(Behavior::Fail(FailureKind::ServerError))
        .start()
        .await
        .unwrap();
    let client = client(&server);
    let error = api_error_of(&client, request("gpt-4o", None)).await;
    assert_eq!(error.status_code.as_u16(), 500);
    // Failures arrive before streaming starts, as the status of the response.
    let Err(error) = client
        .chat()
        .create_stream(streaming("gpt-4o", None, true))
        .await
    else {
        panic!("a stream started despite the server error");
    };
    let error = api_error(error);
    assert_eq!(error.status_code.as_u16(), 500);
}

#[tokio::test]
async fn a_malformed_body_is_a_deserialization_error() {
    let server = LocalServer::builder()
        .always(Behavior::MalformedBody)
        .start()
        .await
        .unwrap();
    let client = client(&server);
    let error = client
        .chat()
        .create(request("gpt-4o", None))
        .await
        .unwrap_err();
    assert!(
        matches!(error, OpenAIError::JSONDeserialize(..)),
        "{error:?}"
    );

    let collected = collect(&client, streaming("gpt-4o", None, true)).await;
    assert_eq!(collected.chunks.len(), 1, "only the role chunk is valid");
    assert!(
        matches!(
            collected.errors.as_slice(),
            [OpenAIError::JSONDeserialize(..)]
        ),
        "{:?}",
        collected.errors
    );
}

#[tokio::test]
async fn usage_can_be_missing() {
    let server = LocalServer::builder()
        .reply_tokens(8)
        .always(Behavior::UsageMissing)
        .start()
        .await
        .unwrap();
    let client = client(&server);
    let response = client.chat().create(request("gpt-4o", None)).await.unwrap();
    assert!(response.usage.is_none());
    assert_eq!(count_text("gpt-4o", &content(&response)).tokens, 8);
    assert!(!server.requests().is_empty());

    let collected = collect(&client, streaming("gpt-4o", None, true)).await;
    assert!(collected.errors.is_empty());
    assert!(collected.usage_chunks().is_empty());
    assert_eq!(collected.content_pieces().len(), 8);
    assert_eq!(collected.finish_reasons(), [FinishReason::Stop]);
}

#[tokio::test]
async fn a_cut_stream_ends_without_finish_or_usage() {
    let server = LocalServer::builder()
        .reply_tokens(20)
        .always(Behavior::CutStream { after_chunks: 3 })
        .start()
        .await
        .unwrap();
    let client = client(&server);
    let collected = collect(&client, streaming("gpt-4o", None, true)).await;
    assert_eq!(collected.content_pieces().len(), 3);
    assert!(collected.finish_reasons().is_empty());
    assert!(collected.usage_chunks().is_empty());
    assert!(
        matches!(collected.errors.as_slice(), [OpenAIError::StreamError(..)]),
        "the connection closes abruptly: {:?}",
        collected.errors
    );

    // A non-streaming reply is cut halfway through its body.
    let error = client
        .chat()
        .create(request("gpt-4o", None))
        .await
        .unwrap_err();
    assert!(matches!(error, OpenAIError::Reqwest(_)), "{error:?}");
}

#[tokio::test]
async fn the_cap_can_be_ignored_to_simulate_an_overrunning_provider() {
    let server = LocalServer::builder()
        .reply_tokens(20)
        .always(Behavior::IgnoreCap)
        .start()
        .await
        .unwrap();
    let client = client(&server);
    let response = client
        .chat()
        .create(request("gpt-4o", Some(5)))
        .await
        .unwrap();
    assert_eq!(response.usage.unwrap().completion_tokens, 20);
    assert_eq!(response.choices[0].finish_reason, Some(FinishReason::Stop));

    let collected = collect(&client, streaming("gpt-4o", Some(5), true)).await;
    assert_eq!(collected.content_pieces().len(), 20);
    assert_eq!(server.last_request().unwrap()["max_tokens"], 5);
}

#[tokio::test]
async fn the_request_counter_counts_failed_and_invalid_requests() {
    let server = LocalServer::builder()
        .on_request(0, Behavior::Fail(FailureKind::ServerError))
        .on_request(1, Behavior::Fail(FailureKind::RateLimited))
        .start()
        .await
        .unwrap();
    let client = client(&server);
    assert_eq!(server.requests_received(), 0);
    assert!(server.last_request().is_none());
    client
        .chat()
        .create(request("gpt-4o", None))
        .await
        .unwrap_err();
    client
        .chat()
        .create(request("gpt-4o", None))
        .await
        .unwrap_err();
    reqwest::Client::new()
        .post(format!("{}/chat/completions", server.base_url()))
        .body("not json")
        .send()
        .await
        .unwrap();
    client.chat().create(request("gpt-4o", None)).await.unwrap();
    assert_eq!(server.requests_received(), 4);
    let requests = server.requests();
    assert_eq!(requests.len(), 4);
    assert_eq!(requests[0]["model"], "gpt-4o");
    assert_eq!(requests[2], Value::String("not json".into()));
    // Other routes are not chat requests.
    reqwest::get(format!("{}/models", server.base_url()))
        .await
        .unwrap();
    assert_eq!(server.requests_received(), 4);
}

#[tokio::test]
async fn invalid_requests_get_openai_400_errors() {
    let server = LocalServer::builder().start().await.unwrap();
    let http = reqwest::Client::new();
    let url = format!("{}/chat/completions", server.base_url());
    let cases: [(&str, Value); 5] = [
        ("{not json", Value::Null),
        (
            r#"{"messages":[{"role":"user","content":"hi"}]}"#,
            json!("model"),
        ),
        (r#"{"model":"gpt-4o"}"#, json!("messages")),
        (
            r#"{"model":"gpt-4o","messages":[{"role":"user","content":7}]}"#,
            json!("messages[0].content"),
        ),
        (
            r#"{"model":"gpt-4o","messages":[],"max_tokens":-3}"#,
            json!("max_tokens"),
        ),
    ];
    for (body, param) in cases {
        let response = http
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{body}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["type"], "invalid_request_error", "{body}");
        assert_eq!(error["error"]["param"], param, "{body}");
        assert_eq!(error["error"]["code"], Value::Null);
        assert!(
            error["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    assert_eq!(server.requests_received(), 5);

    // Unknown routes answer in OpenAI's shape too.
    let response = http
        .get(format!("{}/nope", server.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "unknown_url");

    // The server still serves valid requests.
    client(&server)
        .chat()
        .create(request("gpt-4o", None))
        .await
        .unwrap();
}

#[tokio::test]
async fn models_are_listed_in_openai_shape() {
    let server = LocalServer::builder()
        .models(["gpt-4o", "gpt-4.1-mini", "o3"])
        .start()
        .await
        .unwrap();
    let list: Value = reqwest::get(format!("{}/models", server.base_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["object"], "list");
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|model| {
            assert_eq!(model["object"], "model");
            assert!(model["owned_by"].is_string());
            model["id"].as_str().unwrap()
        })
        .collect();
    assert_eq!(ids, ["gpt-4o", "gpt-4.1-mini", "o3"]);
}

#[tokio::test]
async fn latency_and_chunk_delay_slow_the_reply() {
    let server = LocalServer::builder()
        .reply_tokens(4)
        .latency(Duration::from_millis(150))
        .chunk_delay(Duration::from_millis(30))
        .start()
        .await
        .unwrap();
    let client = client(&server);
    let started = Instant::now();
    client.chat().create(request("gpt-4o", None)).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(150));

    let started = Instant::now();
    let collected = collect(&client, streaming("gpt-4o", None, true)).await;
    assert_eq!(collected.content_pieces().len(), 4);
    // latency + 8 events (role, 4 tokens, finish, usage, [DONE]) × chunk delay
    assert!(started.elapsed() >= Duration::from_millis(150 + 8 * 30));
}

#[tokio::test]
async fn shutdown_and_drop_stop_the_server() {
    let server = LocalServer::builder().start().await.unwrap();
    let url = format!("{}/models", server.base_url());
    reqwest::get(&url).await.unwrap();
    server.shutdown().await.unwrap();
    assert!(reqwest::get(&url).await.is_err());

    let server = LocalServer::builder().start().await.unwrap();
    let url = format!("{}/models", server.base_url());
    reqwest::get(&url).await.unwrap();
    drop(server);
    let mut stopped = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if reqwest::get(&url).await.is_err() {
            stopped = true;
            break;
        }
    }
    assert!(
        stopped,
        "the server still answers after its handle was dropped"
    );
}
