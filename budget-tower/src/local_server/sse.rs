//! Streaming replies: Server-Sent Events in the shape of OpenAI's chat completion chunks.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::{self, StreamExt};
use serde_json::{Value, json};

use super::reply::{Completion, SYSTEM_FINGERPRINT};

/// The error that ends a response body early, which closes the connection abruptly.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the local server cut the response as scripted")]
pub(super) struct ResponseCut;

/// How long a response pauses before it is cut. hyper writes what is buffered (headers and
/// chunks) when the body stops being ready; without the pause, a cut that immediately follows
/// the last chunk would close the connection before anything was sent, and the client would
/// see a failed request instead of a stream that breaks off.
const FLUSH_BEFORE_CUT: Duration = Duration::from_millis(10);

/// How a stream ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StreamEnd {
    /// Finish chunk, the usage chunk if `include_usage` (and `with_usage`), then `[DONE]`.
    Complete {
        /// Whether the usage chunk is sent when the request asked for it.
        with_usage: bool,
    },
    /// The connection closes after this many content chunks.
    CutAfter(u64),
    /// The chunk after the role chunk is truncated JSON, then `[DONE]`.
    Malformed,
}

/// The SSE response for `completion`. `include_usage` is the request's
/// `stream_options.include_usage`; it also decides whether chunks carry `"usage": null`.
pub(super) fn stream_response(
    completion: &Completion,
    include_usage: bool,
    end: StreamEnd,
    chunk_delay: Duration,
) -> Response {
    let events = events(completion, include_usage, end);
    let stream = stream::iter(events).then(move |event| async move {
        let delay = match event {
            Ok(_) => chunk_delay,
            Err(_) => chunk_delay.max(FLUSH_BEFORE_CUT),
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        event
    });
    Sse::new(stream).into_response()
}

/// Every event of the stream, in order; an `Err` (always last) cuts the connection.
fn events(
    completion: &Completion,
    include_usage: bool,
    end: StreamEnd,
) -> Vec<Result<Event, ResponseCut>> {
    let chunk = |choices: Value, usage: Option<Value>| {
        let mut chunk = json!({
            "id": completion.id,
            "object": "chat.completion.chunk",
            "created": completion.created,
            "model": completion.model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": choices,
        });
        if include_usage && let Some(object) = chunk.as_object_mut() {
            object.insert("usage".to_owned(), usage.unwrap_or(Value::Null));
        }
        Ok(Event::default().data(chunk.to_string()))
    };
    let delta = |index: usize, delta: Value, finish_reason: Option<&str>| json!([{"index": index, "delta": delta, "logprobs": null, "finish_reason": finish_reason}]);
    let choices = completion.choices.len();

    let mut events: Vec<_> = (0..choices)
        .map(|index| {
            chunk(
                delta(index, json!({"role": "assistant", "content": ""}), None),
                None,
            )
        })
        .collect();
    if end == StreamEnd::Malformed {
        events.push(Ok(Event::default().data(format!(
            r#"{{"id":"{}","object":"chat.completion.chunk","choices":[{{"index":0,"delta":{{"content":"#,
            completion.id
        ))));
        events.push(Ok(Event::default().data("[DONE]")));
        return events;
    }
    let content_chunks = match end {
        StreamEnd::CutAfter(after) => usize::try_from(after).unwrap_or(usize::MAX),
        _ => usize::MAX,
    };
    // Choices take turns, one token each, as OpenAI interleaves them.
    let length = completion.choices.first().map_or(0, Vec::len);
    let pieces = (0..length).flat_map(|at| {
        completion
            .choices
            .iter()
            .enumerate()
            .map(move |(index, pieces)| (index, &pieces[at]))
    });
    for (index, piece) in pieces.take(content_chunks) {
        events.push(chunk(delta(index, json!({"content": piece}), None), None));
    }
    match end {
        StreamEnd::CutAfter(_) => events.push(Err(ResponseCut)),
        StreamEnd::Complete { with_usage } => {
            for index in 0..choices {
                events.push(chunk(
                    delta(index, json!({}), Some(completion.finish_reason.as_str())),
                    None,
                ));
            }
            if include_usage && with_usage {
                events.push(chunk(json!([]), Some(completion.usage.to_json())));
            }
            events.push(Ok(Event::default().data("[DONE]")));
        }
        StreamEnd::Malformed => {}
    }
    events
}

/// A `200 application/json` response whose body stops halfway through `body` and then closes
/// the connection abruptly.
pub(super) fn cut_json_response(body: &Value) -> Response {
    let text = body.to_string();
    let first_half = Bytes::copy_from_slice(first_half(&text).as_bytes());
    let parts: Vec<Result<Bytes, ResponseCut>> = vec![Ok(first_half), Err(ResponseCut)];
    let body = stream::iter(parts).then(|part| async move {
        if part.is_err() {
            tokio::time::sleep(FLUSH_BEFORE_CUT).await;
        }
        part
    });
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        Body::from_stream(body),
    )
        .into_response()
}

/// The first half of `text` (cut at a character boundary): never valid JSON when `text` is a
/// JSON object or array.
pub(super) fn first_half(text: &str) -> &str {
    let half = text.len() / 2;
    let cut = (0..=half)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    text.get(..cut).unwrap_or_default()
}
