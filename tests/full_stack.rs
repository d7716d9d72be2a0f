//! The whole layer stack in the architecture's order — cache -> route -> compress -> budget ->
//! rate limit -> provider — with the real async-openai client against the local server.

use async_openai::config::OpenAIConfig;
use async_openai::types::chat::{
    ChatCompletionRequestAssistantMessageArgs, ChatCompletionRequestMessage,
    ChatCompletionRequestUserMessageArgs, CreateChatCompletionRequest,
    CreateChatCompletionRequestArgs,
};
use token_budget::layers::local_server::LocalServer;
use token_budget::layers::openai::OpenAiService;
use token_budget::scope::TaskScope;
use token_budget::{
    Attribution, Budget, BudgetLayer, CacheLayer, CommitDetails, CompressLayer, EventKind, Limit,
    Money, Period, RateLimitLayer, RouteLayer, Selector, TaskId, Usage, Window,
};
use tower::{Service, ServiceBuilder, ServiceExt};

fn request(messages: Vec<ChatCompletionRequestMessage>) -> CreateChatCompletionRequest {
    CreateChatCompletionRequestArgs::default()
        .model("gpt-4o")
        .messages(messages)
        .max_completion_tokens(50u32)
        .temperature(0.0)
        .build()
        .unwrap()
}

/// One request through `service` (naming the request type: `OpenAiService` takes two).
async fn send<S>(service: &mut S, req: CreateChatCompletionRequest) -> Result<S::Response, S::Error>
where
    S: Service<CreateChatCompletionRequest>,
{
    service.ready().await?.call(req).await
}

fn user(text: &str) -> ChatCompletionRequestMessage {
    ChatCompletionRequestUserMessageArgs::default()
        .content(text)
        .build()
        .unwrap()
        .into()
}

fn assistant(text: &str) -> ChatCompletionRequestMessage {
    ChatCompletionRequestAssistantMessageArgs::default()
        .content(text)
        .build()
        .unwrap()
        .into()
}

#[tokio::test]
async fn every_layer_does_its_part_and_the_ledger_tells_it() {
    let server = LocalServer::builder()
        .reply_tokens(20)
        .start()
        .await
        .unwrap();
    let budget = Budget::builder()
        .limit(
            Limit::new(
                "agent/day",
                Selector::agent("agent"),
                Window::Calendar(Period::Day),
            )
            .tokens(100_000),
        )
        .build()
        .unwrap();
    let provider = OpenAiService::new(
        OpenAIConfig::new()
            .with_api_base(server.base_url())
            .with_api_key("test"),
    );
    let mut stack = ServiceBuilder::new()
        .layer(CacheLayer::new(budget.clone()))
        .layer(RouteLayer::new(budget.clone()))
        .layer(CompressLayer::new(budget.clone()))
        .layer(BudgetLayer::new(budget.clone()))
        .layer(RateLimitLayer::new().default_agent_rpm(600))
        .service(provider);
    let scope = TaskScope::new(Attribution::agent("agent").with_task(TaskId::new("t")));

    // 1. An easy question asked of gpt-4o goes to gpt-4o-mini (route).
    let easy = request(vec![user("What time is it in Paris?")]);
    scope
        .clone()
        .run(async { send(&mut stack, easy.clone()).await })
        .await
        .unwrap();
    assert_eq!(server.last_request().unwrap()["model"], "gpt-4o-mini");

    // 2. The same deterministic question again never reaches the server (cache).
    scope
        .clone()
        .run(async { send(&mut stack, easy).await })
        .await
        .unwrap();
    assert_eq!(server.requests_received(), 1);

    // 3. Under budget pressure a long conversation is shrunk before it leaves (compress).
    budget
        .record(
            &Attribution::agent("agent"),
            "gpt-4o",
            Usage::new(92_000, 0),
            CommitDetails::default(),
        )
        .await
        .unwrap();
    let mut long = Vec::new();
    for i in 0..30 {
        let text =
            format!("Turn {i}: ") + &"the agents keep re-reading the whole context ".repeat(10);
        long.push(user(&text));
        long.push(assistant(&text));
    }
    long.push(user("Analyse step by step what to cut."));
    let long = request(long);
    scope
        .clone()
        .run(async { send(&mut stack, long).await })
        .await
        .unwrap();
    assert_eq!(server.requests_received(), 2);
    let sent = server.last_request().unwrap();
    assert_eq!(
        sent["model"], "gpt-4o-mini",
        "92% used: the hard question is downgraded too"
    );

    let events = budget.ledger().events();
    let kinds: Vec<_> = events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::Call,
            EventKind::CacheHit,
            EventKind::Call,
            EventKind::Call
        ],
        "the routed call, the hit, the pre-spend, the compressed call"
    );
    let routed = &events[0];
    assert_eq!(
        (routed.model.as_ref(), routed.requested_model.as_deref()),
        ("gpt-4o-mini", Some("gpt-4o"))
    );
    assert!(events[1].cost == Money::ZERO && !events[1].saved.is_zero());
    let compressed = &events[3];
    assert!(
        compressed.usage.input <= 2_000,
        "{}",
        compressed.usage.input
    );
    assert!(compressed.saved.tokens > 2_000, "{:?}", compressed.saved);
    assert_eq!(compressed.requested_model.as_deref(), Some("gpt-4o"));
}
