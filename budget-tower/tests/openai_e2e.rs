//! End to end: the real async-openai client -> BudgetLayer -> our local OpenAI-compatible
//! server, over real HTTP on loopback.

use std::time::Duration;

use async_openai::error::OpenAIError;
use async_openai::types::chat::CreateChatCompletionRequest;
use budget_core::{Budget, BudgetError, Usage};
use budget_tower::enforce::Cutoff;
use budget_tower::local_server::{Behavior, FailureKind, LocalServer};
use budget_tower::openai::{ChatReply, ChatStreamError, billed_failure, usage_of};
use budget_tower::{BudgetLayer, BudgetLayerError, LlmRequest};
use futures::StreamExt;
use tower::{Layer, ServiceBuilder};

mod support;
use support::chat::user_request;
use support::server::{openai_service, start_server};
use support::{agent_day, budget_of, global_day, no_reservations_left, per_task, scope, send};

fn request(text: &str, cap: Option<u32>, stream: bool) -> CreateChatCompletionRequest {
    let mut args = user_request("gpt-4o", text);
    if let Some(cap) = cap {
        args.max_completion_tokens(cap);
    }
    if stream {
        args.stream(true);
    }
    args.build().unwrap()
}

fn budget(task_tokens: u64) -> Budget {
    budget_of([per_task(task_tokens), global_day(1_000_000)])
}

#[tokio::test]
async fn the_ledger_equals_what_the_server_reported() {
    let server = LocalServer::builder()
        .reply_tokens(40)
        .cached_tokens(8)
        .served_model("gpt-4o", "gpt-4o-2024-08-06")
        .start()
        .await
        .unwrap();
    let budget = budget(100_000);
    let mut service = BudgetLayer::new(budget.clone()).layer(openai_service(&server));
    let req = request("What did the fleet spend yesterday?", Some(100), false);
    let reply = scope("t1")
        .run(async { send(&mut service, req).await })
        .await
        .unwrap();
    let response = reply.into_complete().unwrap();
    let reported = usage_of(response.usage.as_ref().unwrap());
    assert_eq!(reported.cached_input, 8);
    let events = budget.ledger().events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].usage, reported, "ledger = server-reported usage");
    assert!(!events[0].estimated);
    assert_eq!(
        events[0].model.as_ref(),
        "gpt-4o",
        "the dated id is priced as its family"
    );
    let price = budget.prices().resolve("gpt-4o").unwrap().price.clone();
    assert_eq!(events[0].cost, price.cost(&reported));
    no_reservations_left(&budget).await;
}

#[tokio::test]
async fn the_prompt_count_matches_the_server_exactly() {
    let server = start_server(5).await;
    let budget = budget(100_000);
    let mut service = BudgetLayer::new(budget.clone()).layer(openai_service(&server));
    let req = request(
        "Count me exactly, please: ünïcödé, 数字, emoji 🚀.",
        Some(10),
        false,
    );
    let ours = req.count_prompt();
    let reply = send(&mut service, req).await.unwrap();
    let theirs = reply.into_complete().unwrap().usage.unwrap().prompt_tokens;
    assert!(!ours.estimated);
    assert_eq!(ours.tokens, u64::from(theirs));
}

#[tokio::test]
async fn denied_calls_never_leave_the_process() {
    let server = LocalServer::builder().start().await.unwrap();
    let budget = budget(30);
    let mut service = BudgetLayer::new(budget.clone()).layer(openai_service(&server));
    let long = "budget ".repeat(50);
    let err = scope("t")
        .run(async { send(&mut service, request(&long, Some(10), false)).await })
        .await
        .unwrap_err();
    assert!(
        matches!(err.as_budget(), Some(BudgetError::ExceedsLimit(_))),
        "{err}"
    );
    assert_eq!(server.requests_received(), 0, "the server saw nothing");
}

#[tokio::test]
async fn the_clamped_cap_is_what_the_server_receives() {
    let server = start_server(500).await;
    let budget = budget(200);
    let mut service = BudgetLayer::new(budget.clone()).layer(openai_service(&server));
    let req = request("Write as much as you can.", Some(4_000), false);
    let prompt = req.count_prompt().tokens;
    scope("t")
        .run(async { send(&mut service, req).await })
        .await
        .unwrap();
    let sent = server.last_request().unwrap();
    assert_eq!(sent["max_completion_tokens"], 200 - prompt);
    let spent: u64 = budget
        .ledger()
        .events()
        .iter()
        .map(|e| e.usage.total())
        .sum();
    assert_eq!(spent, 200, "the task used exactly its budget, no more");

    // A request without any cap gets one: what the budget allows.
    let server2 = start_server(5).await;
    let mut service2 = BudgetLayer::new(budget.clone()).layer(openai_service(&server2));
    let req = request("No cap here.", None, false);
    let prompt = req.count_prompt().tokens;
    scope("t2")
        .run(async { send(&mut service2, req).await })
        .await
        .unwrap();
    assert_eq!(
        server2.last_request().unwrap()["max_completion_tokens"],
        200 - prompt
    );
}

#[tokio::test]
async fn streams_are_metered_and_reconciled_with_the_usage_chunk() {
    let server = start_server(25).await;
    let budget = budget(100_000);
    let mut service = BudgetLayer::new(budget.clone()).layer(openai_service(&server));
    // The caller did not ask for usage; the layer does.
    let req = request("Stream me a story.", Some(100), true);
    let reply = scope("t")
        .run(async { send(&mut service, req).await })
        .await
        .unwrap();
    assert_eq!(
        server.last_request().unwrap()["stream_options"]["include_usage"],
        true
    );
    let chunks: Vec<_> = reply.into_stream().unwrap().collect().await;
    assert!(chunks.iter().all(Result::is_ok));
    let last = chunks.last().unwrap().as_ref().unwrap();
    let reported = usage_of(last.usage.as_ref().unwrap());
    let event = &budget.ledger().events()[0];
    assert_eq!(event.usage, reported);
    assert_eq!(event.usage.output, 25);
    assert!(!event.estimated);
    no_reservations_left(&budget).await;
}

#[tokio::test]
async fn a_stream_overrunning_its_grant_is_cut_at_the_right_token() {
    let server = LocalServer::builder()
        .reply_tokens(80)
        .always(Behavior::IgnoreCap)
        .start()
        .await
        .unwrap();
    let budget = budget(100_000);
    let mut service = BudgetLayer::new(budget.clone()).layer(openai_service(&server));
    let req = request("Stream past your cap.", Some(12), true);
    let prompt = req.count_prompt().tokens;
    let reply = scope("t")
        .run(async { send(&mut service, req).await })
        .await
        .unwrap();
    let mut stream = reply.into_stream().unwrap();
    let mut text = String::new();
    let mut cut = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(chunk) => {
                for c in &chunk.choices {
                    text.push_str(c.delta.content.as_deref().unwrap_or_default());
                }
            }
            Err(e) => cut = Some(e),
        }
    }
    assert!(matches!(
        cut,
        Some(ChatStreamError::Cutoff(Cutoff::OverGrant {
            granted: 12,
            produced: 13
        }))
    ));
    assert_eq!(
        budget_core::count_text("gpt-4o", &text).tokens,
        12,
        "the consumer got 12 tokens"
    );
    let event = &budget.ledger().events()[0];
    assert_eq!(
        event.usage,
        Usage::new(prompt, 13),
        "the 13th token was generated: billed"
    );
    assert!(event.estimated);
    no_reservations_left(&budget).await;
}

#[tokio::test]
async fn a_stream_cut_by_the_provider_commits_what_arrived() {
    let server = LocalServer::builder()
        .reply_tokens(30)
        .always(Behavior::CutStream { after_chunks: 9 })
        .start()
        .await
        .unwrap();
    let budget = budget(100_000);
    let mut service = BudgetLayer::new(budget.clone()).layer(openai_service(&server));
    let req = request("Stream, then break.", Some(30), true);
    let prompt = req.count_prompt().tokens;
    let reply = scope("t")
        .run(async { send(&mut service, req).await })
        .await
        .unwrap();
    let items: Vec<_> = reply.into_stream().unwrap().collect().await;
    assert!(
        matches!(items.last(), Some(Err(ChatStreamError::Provider(_)))),
        "{items:?}"
    );
    let event = &budget.ledger().events()[0];
    assert_eq!(event.usage, Usage::new(prompt, 9));
    assert!(event.estimated, "no usage chunk: counted, and labelled so");
}

#[tokio::test]
async fn missing_usage_is_counted_and_flagged() {
    let server = LocalServer::builder()
        .reply_tokens(17)
        .always(Behavior::UsageMissing)
        .start()
        .await
        .unwrap();
    let budget = budget(100_000);
    let mut service = BudgetLayer::new(budget.clone()).layer(openai_service(&server));
    let req = request("No usage for you.", Some(50), false);
    let prompt = req.count_prompt().tokens;
    scope("t")
        .run(async { send(&mut service, req).await })
        .await
        .unwrap();
    let event = &budget.ledger().events()[0];
    assert_eq!(
        event.usage,
        Usage::new(prompt, 17),
        "counted with the real tokenizer"
    );
    assert!(event.estimated);

    // Streams without a usage chunk too.
    let req = request("No usage for you.", Some(50), true);
    let reply = scope("t2")
        .run(async { send(&mut service, req).await })
        .await
        .unwrap();
    assert_eq!(reply.into_stream().unwrap().count().await, 19); // role + 17 tokens + finish
    let event = &budget.ledger().events()[1];
    assert_eq!(event.usage, Usage::new(prompt, 17));
    assert!(event.estimated);
}

#[tokio::test]
async fn provider_errors_release_their_reservations() {
    let server = LocalServer::builder()
        .on_request(0, Behavior::Fail(FailureKind::ServerError))
        .on_request(1, Behavior::Fail(FailureKind::RateLimited))
        .on_request(2, Behavior::MalformedBody)
        .start()
        .await
        .unwrap();
    let budget = budget(100_000);
    let mut service = BudgetLayer::new(budget.clone()).layer(openai_service(&server));
    for _ in 0..3 {
        let err = scope("t")
            .run(async { send(&mut service, request("x", Some(10), false)).await })
            .await
            .unwrap_err();
        assert!(matches!(err, BudgetLayerError::Inner(_)), "{err}");
    }
    assert_eq!(
        server.requests_received(),
        3,
        "no hidden retries inside the adapter"
    );
    no_reservations_left(&budget).await;
    assert!(budget.ledger().is_empty());
}

#[tokio::test]
async fn timeouts_release_their_reservations() {
    let server = LocalServer::builder()
        .latency(Duration::from_secs(3))
        .start()
        .await
        .unwrap();
    let budget = budget(100_000);
    let mut service = ServiceBuilder::new()
        .timeout(Duration::from_millis(100))
        .layer(BudgetLayer::new(budget.clone()))
        .service(openai_service(&server));
    let err = scope("t")
        .run(async { send(&mut service, request("slow", Some(10), false)).await })
        .await
        .unwrap_err();
    assert!(err.is::<tower::timeout::error::Elapsed>(), "{err}");
    no_reservations_left(&budget).await;
}

#[derive(Clone)]
struct RetryServerErrors(u32);

impl<Res> tower::retry::Policy<CreateChatCompletionRequest, Res, BudgetLayerError<OpenAIError>>
    for RetryServerErrors
{
    type Future = std::future::Ready<()>;

    fn retry(
        &mut self,
        _: &mut CreateChatCompletionRequest,
        result: &mut Result<Res, BudgetLayerError<OpenAIError>>,
    ) -> Option<Self::Future> {
        let retryable = matches!(
            result,
            Err(BudgetLayerError::Inner(OpenAIError::ApiError(_)))
        );
        (retryable && self.0 > 0).then(|| {
            self.0 -= 1;
            std::future::ready(())
        })
    }

    fn clone_request(
        &mut self,
        req: &CreateChatCompletionRequest,
    ) -> Option<CreateChatCompletionRequest> {
        Some(req.clone())
    }
}

#[tokio::test]
async fn retries_outside_the_layer_account_every_attempt() {
    let server = LocalServer::builder()
        .reply_tokens(6)
        .on_request(0, Behavior::Fail(FailureKind::ServerError))
        .on_request(1, Behavior::Fail(FailureKind::RateLimited))
        .start()
        .await
        .unwrap();
    let budget = budget(100_000);
    let mut service = ServiceBuilder::new()
        .layer(tower::retry::RetryLayer::new(RetryServerErrors(3)))
        .layer(BudgetLayer::new(budget.clone()))
        .service(openai_service(&server));
    let reply = scope("t")
        .run(async { send(&mut service, request("try again", Some(10), false)).await })
        .await
        .unwrap();
    assert!(matches!(reply, ChatReply::Complete(_)));
    assert_eq!(server.requests_received(), 3);
    // Two failed attempts (not billed, released) and one success (committed once).
    assert_eq!(budget.ledger().len(), 1);
    no_reservations_left(&budget).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_concurrent_calls_never_exceed_the_agent_budget() {
    const CAP: u64 = 3_000;
    let server = LocalServer::builder()
        .reply_tokens(60)
        .latency(Duration::from_millis(20))
        .start()
        .await
        .unwrap();
    let budget = budget_of([agent_day("agent", CAP)]);
    let service = BudgetLayer::new(budget.clone()).layer(openai_service(&server));
    let calls: Vec<_> = (0..64)
        .map(|i| {
            let mut service = service.clone();
            tokio::spawn(scope(&format!("t{i}")).run(async move {
                let req = request("How much budget is left for me today?", Some(60), false);
                send(&mut service, req).await.map(|_| ())
            }))
        })
        .collect();
    let (mut ok, mut refused) = (0u64, 0u64);
    for c in calls {
        match c.await.unwrap() {
            Ok(()) => ok += 1,
            Err(BudgetLayerError::Budget(_)) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    let status = budget.status().await.unwrap();
    assert!(ok > 0 && refused > 0, "ok {ok}, refused {refused}");
    assert!(status[0].usage.committed.tokens <= CAP, "{status:?}");
    assert_eq!(
        server.requests_received(),
        ok,
        "refused calls never reached the server"
    );
    let ledger_total: u64 = budget
        .ledger()
        .events()
        .iter()
        .map(|e| e.usage.total())
        .sum();
    assert_eq!(ledger_total, status[0].usage.committed.tokens);
    no_reservations_left(&budget).await;
}

#[tokio::test]
async fn an_unreadable_answer_is_billed_at_worst_case_when_the_layer_is_told_so() {
    let server = LocalServer::builder()
        .always(Behavior::MalformedBody)
        .start()
        .await
        .unwrap();
    let budget = budget(100_000);
    let mut service = BudgetLayer::new(budget.clone())
        .billed_failures(billed_failure)
        .layer(openai_service(&server));
    let req = request("Answer me in broken JSON.", Some(40), false);
    let prompt = req.count_prompt().tokens;
    let err = scope("t").run(send(&mut service, req)).await.unwrap_err();
    assert!(
        matches!(
            err,
            BudgetLayerError::Inner(OpenAIError::JSONDeserialize(..))
        ),
        "{err}"
    );
    let event = &budget.ledger().events()[0];
    assert_eq!(
        event.usage,
        Usage::new(prompt, 40),
        "prompt + granted output: the worst case"
    );
    assert!(event.estimated);
    no_reservations_left(&budget).await;
}

#[test]
fn billed_failure_reads_usage_from_an_answer_of_the_wrong_shape() {
    let parse_error = || serde_json::from_str::<u8>("x").unwrap_err();
    let body = r#"{"id":"x","choices":"not a list","usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17}}"#;
    assert_eq!(
        billed_failure(&OpenAIError::JSONDeserialize(parse_error(), body.into())),
        budget_tower::enforce::Billed::Reported(Usage::new(12, 5))
    );
    assert_eq!(
        billed_failure(&OpenAIError::JSONDeserialize(
            parse_error(),
            "{\"trunc".into()
        )),
        budget_tower::enforce::Billed::Unknown
    );
    assert_eq!(
        billed_failure(&OpenAIError::InvalidArgument("x".into())),
        budget_tower::enforce::Billed::No
    );
}

#[tokio::test]
async fn calls_of_many_choices_are_reserved_and_billed_within_the_task_limit() {
    // Replies as long as allowed: every choice fills the cap it is sent with.
    let server = start_server(5_000).await;
    let budget = budget(2_000);
    let mut service = BudgetLayer::new(budget.clone()).layer(openai_service(&server));
    let task = scope("t");

    let mut req = request("Four drafts of the release note.", Some(1_000), false);
    req.n = Some(4);
    let prompt = req.count_prompt().tokens;
    let reply = task
        .clone()
        .run(send(&mut service, req))
        .await
        .unwrap()
        .into_complete()
        .unwrap();
    assert_eq!(reply.choices.len(), 4);
    let granted = (2_000 - prompt) / 4;
    let sent = &server.requests()[0];
    assert_eq!(
        sent["max_completion_tokens"], granted,
        "the cap fits all four"
    );
    let events = budget.ledger().events();
    assert_eq!(events[0].usage.output, 4 * granted);
    assert!(events[0].usage.total() <= 2_000);

    // Streamed, two choices take turns in the chunks: metered together, never cut early.
    let budget = self::budget(2_000);
    let mut service = BudgetLayer::new(budget.clone()).layer(openai_service(&server));
    let mut req = request("Two drafts, streamed.", Some(300), true);
    req.n = Some(2);
    let reply = scope("s").run(send(&mut service, req)).await.unwrap();
    let chunks: Vec<_> = reply.into_stream().unwrap().collect().await;
    assert!(chunks.iter().all(Result::is_ok), "no cutoff");
    let events = budget.ledger().events();
    assert_eq!(events[0].usage.output, 600);
    assert!(!events[0].estimated, "the provider's report");
}

#[tokio::test]
async fn the_local_server_refuses_an_n_out_of_range() {
    let server = start_server(5).await;
    let mut req = request("hi", Some(5), false);
    req.n = Some(0);
    let err = send(&mut openai_service(&server), req).await.unwrap_err();
    assert!(
        matches!(&err, OpenAIError::ApiError(e) if e.api_error.param.as_deref() == Some("n")),
        "{err}"
    );
}

/// Through the real client: the server answers a `gpt-4o` request under another name (an Azure
/// deployment's), which the price file lists as its own entry. The `gpt-4o` limit the call
/// reserved on is charged all the same; the name only prices it. (A dated id of the same model
/// is covered twice over: see `held_to_the_limit.rs`.)
#[tokio::test]
async fn a_model_limit_is_charged_whatever_name_the_server_answers_with() {
    let server = LocalServer::builder()
        .reply_tokens(400)
        .served_model("gpt-4o", "acme-prod-4o")
        .start()
        .await
        .unwrap();
    let mut prices = budget_core::PriceTable::builtin();
    prices.merge_from(
        budget_core::PriceTable::from_litellm_json(
            r#"{"acme-prod-4o": {"input_cost_per_token": 2.5e-06,
                "output_cost_per_token": 1e-05, "litellm_provider": "openai", "mode": "chat"}}"#,
        )
        .unwrap(),
    );
    let limit = budget_core::Limit::new(
        "gpt-4o/day",
        budget_core::Selector::model("gpt-4o"),
        budget_core::Window::Calendar(budget_core::Period::Day),
    )
    .tokens(2_000);
    let budget = Budget::builder()
        .prices(prices)
        .limit(limit)
        .build()
        .unwrap();
    let mut service = BudgetLayer::new(budget.clone()).layer(openai_service(&server));
    let mut answered = 0;
    for _ in 0..10 {
        let req = request("Summarise the incident.", Some(400), false);
        if send(&mut service, req).await.is_ok() {
            answered += 1;
        }
    }
    let events = budget.ledger().events();
    assert_eq!(events.len(), answered);
    assert!(events.iter().all(|e| &*e.model == "acme-prod-4o"));
    assert!(
        events
            .iter()
            .all(|e| e.requested_model.as_deref() == Some("gpt-4o"))
    );
    let used: u64 = events.iter().map(|e| e.usage.total()).sum();
    let status = budget.status().await.unwrap();
    assert_eq!(
        status[0].usage.committed.tokens, used,
        "charged to the gpt-4o limit"
    );
    assert!(
        used <= 2_000 && answered < 10,
        "{answered} calls, {used} tokens"
    );
}
