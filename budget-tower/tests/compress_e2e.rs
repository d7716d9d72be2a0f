//! Context compression end to end: async-openai request -> CompressLayer -> BudgetLayer ->
//! OpenAiService -> the local server.

use async_openai::types::chat::{
    ChatCompletionRequestMessage, CreateChatCompletionRequest, CreateChatCompletionRequestArgs,
};
use budget_core::{Attribution, Budget, EventKind, MemoryBudgetStore, MemoryLedger};
use budget_tower::local_server::RunningServer;
use budget_tower::openai::OpenAiService;
use budget_tower::{
    Attributed, BudgetLayer, BudgetService, CompressLayer, CompressLayerError, CompressService,
    LlmRequest,
};
use tower::ServiceBuilder;

mod support;
use support::chat::{assistant_message, system_message, user_message};
use support::server::{openai_service, start_server};
use support::{agent_day_at, send};

const SYSTEM: &str = "You are the analytics agent. Answer with numbers.";

/// A long conversation: a system prompt, a greeting exchange, `rounds` long question/answer
/// pairs, and a final question.
fn conversation(rounds: usize) -> Vec<ChatCompletionRequestMessage> {
    let mut messages = vec![
        system_message(SYSTEM),
        user_message("Hi!"),
        assistant_message("Hello!"),
    ];
    for i in 0..rounds {
        let long = format!("Round {i}: ")
            + &"the spend per agent rose again because the context grew ".repeat(12);
        messages.push(user_message(&long));
        messages.push(assistant_message(&long));
    }
    messages.push(user_message("So what should we cut first?"));
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

type Stack = CompressService<
    BudgetService<OpenAiService, MemoryBudgetStore, MemoryLedger>,
    MemoryBudgetStore,
    MemoryLedger,
>;

/// The local server replying with `reply_tokens` tokens, a budget with the analyst at `used` of
/// 100,000 tokens today, and async-openai behind the compress layer `compress` makes from the
/// budget and the budget layer.
async fn start(
    reply_tokens: u64,
    used: u64,
    compress: fn(Budget) -> CompressLayer,
) -> (RunningServer, Budget, Stack) {
    let server = start_server(reply_tokens).await;
    let budget = agent_day_at("analyst", used).await;
    let service = ServiceBuilder::new()
        .layer(compress(budget.clone()))
        .layer(BudgetLayer::new(budget.clone()))
        .service(openai_service(&server));
    (server, budget, service)
}

#[tokio::test]
async fn without_pressure_the_conversation_goes_as_it_is() {
    let (server, budget, mut service) = start(5, 0, CompressLayer::new).await;
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
    // 91% used: target 2,000 prompt tokens
    let (server, budget, mut service) = start(5, 91_000, CompressLayer::new).await;
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
    // 75% used: target 4,000 prompt tokens
    let summarising = |budget: Budget| CompressLayer::new(budget).summarise_with("gpt-4o-mini");
    let (server, budget, mut service) = start(60, 75_000, summarising).await;
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
    let (server, _, mut service) = start(5, 91_000, CompressLayer::new).await;
    // A system prompt alone larger than the 2,000-token target.
    let huge = "Policy clause that must never be dropped. ".repeat(400);
    let messages = vec![system_message(&huge), user_message("Go.")];
    let err = send(&mut service, request(messages)).await.unwrap_err();
    assert!(
        matches!(err, CompressLayerError::CannotFit { target: 2_000, .. }),
        "{err}"
    );
    assert_eq!(server.requests_received(), 0);
}
