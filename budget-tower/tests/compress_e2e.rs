//! Context compression end to end: async-openai request -> CompressLayer -> BudgetLayer ->
//! OpenAiService -> the local server.

use async_openai::config::OpenAIConfig;
use async_openai::types::chat::{
    ChatCompletionRequestAssistantMessageArgs, ChatCompletionRequestMessage,
    ChatCompletionRequestSystemMessageArgs, ChatCompletionRequestUserMessageArgs,
    CreateChatCompletionRequest, CreateChatCompletionRequestArgs,
};
use budget_core::{
    Attribution, Budget, CommitDetails, EventKind, Limit, Period, Selector, Usage, Window,
};
use budget_tower::local_server::{LocalServer, RunningServer};
use budget_tower::openai::OpenAiService;
use budget_tower::{Attributed, BudgetLayer, CompressLayer, CompressLayerError, LlmRequest};
use tower::{Service, ServiceBuilder, ServiceExt};

const SYSTEM: &str = "You are the analytics agent. Answer with numbers.";

/// A long conversation: a system prompt, a greeting exchange, `rounds` long question/answer
/// pairs, and a final question.
fn conversation(rounds: usize) -> Vec<ChatCompletionRequestMessage> {
    let mut messages: Vec<ChatCompletionRequestMessage> = vec![
        ChatCompletionRequestSystemMessageArgs::default()
            .content(SYSTEM)
            .build()
            .unwrap()
            .into(),
        ChatCompletionRequestUserMessageArgs::default()
            .content("Hi!")
            .build()
            .unwrap()
            .into(),
        ChatCompletionRequestAssistantMessageArgs::default()
            .content("Hello!")
            .build()
            .unwrap()
            .into(),
    ];
    for i in 0..rounds {
        let long = format!("Round {i}: ")
            + &"the spend per agent rose again because the context grew ".repeat(12);
        messages.push(
            ChatCompletionRequestUserMessageArgs::default()
                .content(long.clone())
                .build()
                .unwrap()
                .into(),
        );
        messages.push(
            ChatCompletionRequestAssistantMessageArgs::default()
                .content(long)
                .build()
                .unwrap()
                .into(),
        );
    }
    messages.push(
        ChatCompletionRequestUserMessageArgs::default()
            .content("So what should we cut first?")
            .build()
            .unwrap()
            .into(),
    );
    messages
}

fn request(messages: Vec<ChatCompletionRequestMessage>) -> Attributed<CreateChatCompletionRequest> {
    let request = CreateChatCompletionRequestArgs::default()
        .model("gpt-4o")
        .messages(messages)
        .max_completion_tokens(100u32)
        .build()
        .unwrap();
    Attributed::new(request, Attribution::agent("analyst"))
}

fn provider(server: &RunningServer) -> OpenAiService {
    OpenAiService::new(
        OpenAIConfig::new()
            .with_api_base(server.base_url())
            .with_api_key("test"),
    )
}

/// A budget with the analyst at `used` of 100,000 tokens today.
async fn budget_at(used: u64) -> Budget {
    let budget = Budget::builder()
        .limit(
            Limit::new(
                "analyst/day",
                Selector::agent("analyst"),
                Window::Calendar(Period::Day),
            )
            .tokens(100_000),
        )
        .build()
        .unwrap();
    if used > 0 {
        budget
            .record(
                &Attribution::agent("analyst"),
                "gpt-4o",
                Usage::new(used, 0),
                CommitDetails::default(),
            )
            .await
            .unwrap();
    }
    budget
}

async fn send<S>(
    service: &mut S,
    req: Attributed<CreateChatCompletionRequest>,
) -> Result<S::Response, S::Error>
where
    S: Service<Attributed<CreateChatCompletionRequest>>,
{
    service.ready().await?.call(req).await
}

#[tokio::test]
async fn without_pressure_the_conversation_goes_as_it_is() {
    let server = LocalServer::builder()
        .reply_tokens(5)
        .start()
        .await
        .unwrap();
    let budget = budget_at(0).await;
    let mut service = ServiceBuilder::new()
        .layer(CompressLayer::new(budget.clone()))
        .layer(BudgetLayer::new(budget.clone()))
        .service(provider(&server));
    let req = request(conversation(20));
    let before = req.count_prompt().tokens;
    send(&mut service, req).await.unwrap();
    let sent = server.last_request().unwrap();
    assert_eq!(sent["messages"].as_array().unwrap().len(), 44);
    let event = budget.ledger().events().pop().unwrap();
    assert_eq!(event.usage.input, before);
    assert!(event.saved.is_zero());
}

#[tokio::test]
async fn under_pressure_the_prompt_is_cut_to_the_target_and_the_saving_recorded() {
    let server = LocalServer::builder()
        .reply_tokens(5)
        .start()
        .await
        .unwrap();
    let budget = budget_at(91_000).await; // 91% used: target 2,000 prompt tokens
    let mut service = ServiceBuilder::new()
        .layer(CompressLayer::new(budget.clone()))
        .layer(BudgetLayer::new(budget.clone()))
        .service(provider(&server));
    let req = request(conversation(20));
    let before = req.count_prompt().tokens;
    assert!(before > 4_000, "{before}");
    send(&mut service, req).await.unwrap();

    let sent = server.last_request().unwrap();
    let messages = sent["messages"].as_array().unwrap();
    assert_eq!(messages[0]["content"], SYSTEM, "the system prompt is kept");
    assert_eq!(
        messages.last().unwrap()["content"],
        "So what should we cut first?",
        "the newest turn is kept verbatim"
    );
    assert!(
        !messages.iter().any(|m| m["content"] == "Hi!"),
        "greetings are dropped first"
    );
    let event = budget.ledger().events().pop().unwrap();
    assert!(
        event.usage.input <= 2_000,
        "sent {} prompt tokens",
        event.usage.input
    );
    assert_eq!(
        event.saved.tokens,
        before - event.usage.input,
        "the saving is in the ledger"
    );
    assert!(event.saved.money > budget_core::Money::ZERO);
}

#[tokio::test]
async fn a_summary_call_is_budgeted_and_recorded_as_a_summary() {
    let server = LocalServer::builder()
        .reply_tokens(60)
        .start()
        .await
        .unwrap();
    let budget = budget_at(75_000).await; // 75% used: target 4,000 prompt tokens
    let mut service = ServiceBuilder::new()
        .layer(CompressLayer::new(budget.clone()).summarise_with("gpt-4o-mini"))
        .layer(BudgetLayer::new(budget.clone()))
        .service(provider(&server));
    send(&mut service, request(conversation(30))).await.unwrap();

    assert_eq!(
        server.requests_received(),
        2,
        "the summary call, then the call itself"
    );
    let requests = server.requests();
    assert_eq!(requests[0]["model"], "gpt-4o-mini");
    let events = budget.ledger().events();
    let summary = events
        .iter()
        .find(|e| e.kind == EventKind::Summary)
        .expect("a summary event");
    assert_eq!(summary.attribution.agent_name(), "analyst");
    assert_eq!(summary.model.as_ref(), "gpt-4o-mini");
    let call = events.last().unwrap();
    assert_eq!(call.kind, EventKind::Call);
    assert!(call.usage.input <= 4_000, "{}", call.usage.input);
    let sent = requests[1]["messages"].as_array().unwrap();
    assert!(
        sent.iter()
            .any(|m| m["content"].as_str().is_some_and(|c| c.contains("Summary"))),
        "the summary replaced older turns"
    );
}

#[tokio::test]
async fn a_conversation_that_cannot_fit_is_not_sent() {
    let server = LocalServer::builder()
        .reply_tokens(5)
        .start()
        .await
        .unwrap();
    let budget = budget_at(91_000).await;
    let mut service = ServiceBuilder::new()
        .layer(CompressLayer::new(budget.clone()))
        .layer(BudgetLayer::new(budget.clone()))
        .service(provider(&server));
    // A system prompt alone larger than the 2,000-token target.
    let huge = "Policy clause that must never be dropped. ".repeat(400);
    let messages = vec![
        ChatCompletionRequestSystemMessageArgs::default()
            .content(huge)
            .build()
            .unwrap()
            .into(),
        ChatCompletionRequestUserMessageArgs::default()
            .content("Go.")
            .build()
            .unwrap()
            .into(),
    ];
    let err = send(&mut service, request(messages)).await.unwrap_err();
    assert!(
        matches!(err, CompressLayerError::CannotFit { target: 2_000, .. }),
        "{err}"
    );
    assert_eq!(server.requests_received(), 0);
}
