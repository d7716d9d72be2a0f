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
