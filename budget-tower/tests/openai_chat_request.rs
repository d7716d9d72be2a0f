//! The optimisation view of async-openai's chat request: turns out and back, cache keys.

use async_openai::types::chat::{CreateChatCompletionRequest, CreateChatCompletionRequestArgs};
use budget_core::conversation::{Role, Turn};
use budget_tower::LlmRequest;
use budget_tower::llm::ChatRequest;

mod support;
use support::chat::{assistant_message, system_message, user_message};

fn request(temperature: Option<f32>) -> CreateChatCompletionRequest {
    let mut args = CreateChatCompletionRequestArgs::default();
    args.model("gpt-4o").messages([
        system_message("Be brief."),
        user_message("Hello there!"),
        assistant_message("Hi! How can I help?"),
        user_message("What is our token spend today?"),
    ]);
    if let Some(t) = temperature {
        args.temperature(t);
    }
    args.build().unwrap()
}

#[test]
fn turns_round_trip_and_rewrite() {
    let mut req = request(None);
    let turns = req.turns();
    assert_eq!(turns.len(), 4);
    assert_eq!(turns[0].role, Role::System);
    assert_eq!(turns[3].text, "What is our token spend today?");
    assert!(turns.iter().enumerate().all(|(i, t)| t.origin == Some(i)));

    let untouched = req.clone();
    req.set_turns(&turns);
    assert_eq!(req, untouched, "setting the same turns changes nothing");

    // Drop the greeting pair, shorten a message, add a summary.
    let mut rewritten = vec![
        turns[0].clone(),
        Turn::new(Role::System, "Summary: they greeted."),
    ];
    let mut last = turns[3].clone();
    last.text = "What is our spend?".into();
    rewritten.push(last);
    req.set_turns(&rewritten);
    let after = req.turns();
    assert_eq!(after.len(), 3);
    assert_eq!(after[1].text, "Summary: they greeted.");
    assert_eq!(after[2].text, "What is our spend?");
    assert!(req.count_prompt().tokens < untouched.count_prompt().tokens);
    assert_eq!(req.latest_input().as_deref(), Some("What is our spend?"));
}

#[test]
fn cache_keys_cover_what_changes_the_answer_only() {
    assert_eq!(
        request(None).cache_key(),
        None,
        "default temperature samples: not cacheable"
    );
    assert_eq!(request(Some(0.7)).cache_key(), None);
    let key = request(Some(0.0)).cache_key().unwrap();
    let mut streaming = request(Some(0.0));
    streaming.stream = Some(true);
    streaming.safety_identifier = Some("alice".into());
    assert_eq!(
        streaming.cache_key(),
        Some(key),
        "stream and the end-user id do not change the answer"
    );
    let mut other_model = request(Some(0.0));
    other_model.set_model("gpt-4o-mini");
    assert_ne!(other_model.cache_key(), Some(key));
    let mut capped = request(Some(0.0));
    capped.set_max_output_tokens(10);
    assert_ne!(
        capped.cache_key(),
        Some(key),
        "a different cap is a different answer"
    );
}

/// A request as a client sends it (OpenAI's documented JSON), with `parts` after a text part.
fn multimodal(model: &str, parts: serde_json::Value) -> CreateChatCompletionRequest {
    let mut content = vec![serde_json::json!({"type": "text", "text": "What is in this?"})];
    content.extend(parts.as_array().unwrap().iter().cloned());
    serde_json::from_value(serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": content}],
    }))
    .unwrap()
}

/// Images, audio and files were left out of the prompt count, so the reservation was too small
/// and the call overshot it. Each is now counted (as an estimate) by its documented bound.
#[test]
fn prompt_count_includes_images_audio_and_files() {
    let text_only = multimodal("gpt-4o", serde_json::json!([])).count_prompt();
    assert!(!text_only.estimated);

    // An image by URL: its size is unknown, so the worst case for its detail.
    let url = |detail: &str| {
        serde_json::json!([{"type": "image_url",
            "image_url": {"url": "https://example.com/cat.png", "detail": detail}}])
    };
    let high = multimodal("gpt-4o", url("high")).count_prompt();
    assert_eq!(high.tokens, text_only.tokens + 85 + 8 * 170);
    assert!(high.estimated);
    let low = multimodal("gpt-4o", url("low")).count_prompt();
    assert_eq!(low.tokens, text_only.tokens + 85);

    // A data URL: the PNG header says 1 × 1, one tile.
    let png = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==";
    let inline = multimodal(
        "gpt-4o",
        serde_json::json!([{"type": "image_url", "image_url": {"url": png}}]),
    )
    .count_prompt();
    assert_eq!(inline.tokens, text_only.tokens + 85 + 170);

    // 3,999 bytes of MP3 (5,332 base64 characters): at most 4 s at 32 tokens a second.
    let audio = multimodal(
        "gpt-4o-audio-preview",
        serde_json::json!([{"type": "input_audio",
            "input_audio": {"data": "A".repeat(5332), "format": "mp3"}}]),
    )
    .count_prompt();
    let audio_text = multimodal("gpt-4o-audio-preview", serde_json::json!([])).count_prompt();
    assert_eq!(audio.tokens, audio_text.tokens + 4 * 32);

    // A PDF sent by id: pages unknown, so 100 pages of image and text.
    let file = multimodal(
        "gpt-4o",
        serde_json::json!([{"type": "file", "file": {"file_id": "file-abc123"}}]),
    )
    .count_prompt();
    assert_eq!(file.tokens, text_only.tokens + 100 * (85 + 8 * 170 + 3000));
    assert!(file.estimated);
}

/// Another vendor's model behind an OpenAI-compatible gateway: its o200k count runs low, so
/// the prompt is reserved with the documented margin.
#[test]
fn prompt_count_of_other_vendors_models_carries_the_margin() {
    let request = multimodal("anthropic/claude-sonnet-4-5", serde_json::json!([]));
    let messages = [budget_core::ChatMessage::user("What is in this?")];
    let o200k = budget_core::count_chat("claude-sonnet-4-5", &messages, None);
    let count = request.count_prompt();
    assert_eq!(count.tokens, (o200k.tokens * 180).div_ceil(100));
    assert!(count.estimated && count.encoding.is_none());
}
