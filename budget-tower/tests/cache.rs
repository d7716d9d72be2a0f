//! The response cache layer, around providers of the test's own request and response types
//! (and, at the end, end to end: async-openai -> CacheLayer -> BudgetLayer -> local server).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use budget_core::{
    Budget, BudgetError, EventKind, MemoryBudgetStore, MemoryLedger, Money, Usage, count_text,
};
use budget_tower::cache::{CacheLayer, CacheService, DeterministicKey};
use budget_tower::rate_limit::{LimitKind, RateLimitError, RateLimitLayer};
use budget_tower::{BudgetLayer, BudgetLayerError, BudgetService, LlmRequest, LlmResponse};
use tower::{BoxError, Layer, Service, ServiceBuilder};

mod support;
use support::{Answer, Ask, Piece, budget_of, global_day, send, task_scope};

// ---------------------------------------------------------------------------------------------
// A stand-in provider that counts its calls and can be scripted to fail or omit usage.

#[derive(Debug, thiserror::Error)]
#[error("provider down")]
struct ProviderDown;

#[derive(Clone, Default)]
struct Provider {
    calls: Arc<AtomicU32>,
    /// Fails its first `fail_first` calls.
    fail_first: u32,
    no_usage: bool,
}

impl Provider {
    fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }
}

const REPLY_TOKENS: u64 = 20;

impl Service<Ask> for Provider {
    type Response = Answer;
    type Error = ProviderDown;
    type Future = futures::future::Ready<Result<Answer, ProviderDown>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), ProviderDown>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, ask: Ask) -> Self::Future {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        if n < self.fail_first {
            return futures::future::ready(Err(ProviderDown));
        }
        let output = REPLY_TOKENS.min(ask.cap.unwrap_or(u64::MAX));
        let usage = Usage::new(ask.count_prompt().tokens, output);
        let text = format!("reply #{n} to {}", ask.prompt);
        let answer = if ask.stream {
            let pieces = [
                Piece { text, usage: None },
                Piece {
                    text: String::new(),
                    usage: (!self.no_usage).then_some(usage),
                },
            ];
            Answer::stream_of(pieces.into_iter().map(Ok))
        } else {
            Answer::Complete {
                text,
                usage: (!self.no_usage).then_some(usage),
            }
        };
        futures::future::ready(Ok(answer))
    }
}

fn budget() -> Budget {
    budget_of([global_day(1_000_000)])
}

/// `inner` behind the cache layer, with the budget layer in between (both on `budget`).
type Cached<S> = CacheService<
    BudgetService<S, MemoryBudgetStore, MemoryLedger>,
    MemoryBudgetStore,
    MemoryLedger,
    DeterministicKey,
>;

fn cached_and_budgeted<S>(budget: &Budget, inner: S) -> Cached<S> {
    ServiceBuilder::new()
        .layer(CacheLayer::new(budget.clone()))
        .layer(BudgetLayer::new(budget.clone()))
        .service(inner)
}

// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_hit_skips_the_provider_and_is_recorded_at_zero_cost_with_what_it_saved() {
    let budget = budget();
    let provider = Provider::default();
    let mut service = cached_and_budgeted(&budget, provider.clone());

    let (first, again) = task_scope("researcher", "t1")
        .run(async {
            let first = send(&mut service, Ask::new("What is a token?"))
                .await
                .unwrap();
            let again = send(&mut service, Ask::new("What is a token?"))
                .await
                .unwrap();
            (first, again)
        })
        .await;
    assert_eq!(provider.calls(), 1, "the hit never reached the provider");
    assert_eq!(again.text(), first.text());
    assert_eq!(
        again.usage(),
        first.usage(),
        "the original usage comes with the hit"
    );

    let events = budget.ledger().events();
    assert_eq!(events.len(), 2);
    let (call, hit) = (&events[0], &events[1]);
    assert_eq!(call.kind, EventKind::Call);
    assert!(call.cost > Money::ZERO);
    assert_eq!(hit.kind, EventKind::CacheHit);
    assert_eq!(hit.usage, Usage::default());
    assert_eq!(hit.cost, Money::ZERO);
    assert_eq!(hit.saved.tokens, call.usage.total());
    assert_eq!(hit.saved.money, call.cost);
    assert_eq!(hit.attribution.agent_name(), "researcher");
    assert_eq!(hit.attribution.task().unwrap().as_str(), "t1");
    assert_eq!(&*hit.model, "gpt-4o-mini");
}

#[tokio::test]
async fn a_hit_is_attributed_to_whoever_received_it() {
    let budget = budget();
    let provider = Provider::default();
    let mut service = CacheLayer::new(budget.clone()).layer(provider.clone());

    send(&mut service, Ask::new("shared question"))
        .await
        .unwrap();
    task_scope("writer", "t2")
        .run(send(&mut service, Ask::new("shared question")))
        .await
        .unwrap();
    assert_eq!(provider.calls(), 1);
    // Without a budget layer inside, only the hit is in the ledger.
    let events = budget.ledger().events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].attribution.agent_name(), "writer");
    assert_eq!(events[0].kind, EventKind::CacheHit);
    let original = Usage::new(
        count_text("gpt-4o-mini", "shared question").tokens,
        REPLY_TOKENS,
    );
    let price = budget
        .prices()
        .resolve("gpt-4o-mini")
        .unwrap()
        .price
        .cost(&original);
    assert_eq!(events[0].saved.tokens, original.total());
    assert_eq!(events[0].saved.money, price);
}

#[tokio::test]
async fn non_deterministic_requests_are_never_cached() {
    let budget = budget();
    let layer = CacheLayer::new(budget.clone());
    let provider = Provider::default();
    let mut service = layer.layer(provider.clone());

    for _ in 0..3 {
        send(&mut service, Ask::new("Tell me a story.").sampled())
            .await
            .unwrap();
    }
    assert_eq!(provider.calls(), 3);
    layer.run_pending_tasks().await;
    assert_eq!(layer.entry_count(), 0);
    assert!(budget.ledger().is_empty());
}

#[tokio::test]
async fn a_key_function_can_cache_non_deterministic_requests() {
    let budget = budget();
    let provider = Provider::default();
    let mut service = CacheLayer::new(budget.clone())
        .key_with(|ask: &Ask| Some(ask.content_key()))
        .layer(provider.clone());

    for _ in 0..3 {
        send(&mut service, Ask::new("Tell me a story.").sampled())
            .await
            .unwrap();
    }
    assert_eq!(provider.calls(), 1);
}

#[tokio::test]
async fn entries_expire_after_the_ttl() {
    let budget = budget();
    let provider = Provider::default();
    let mut service = CacheLayer::new(budget)
        .ttl(Duration::from_millis(500))
        .layer(provider.clone());

    send(&mut service, Ask::new("fresh?")).await.unwrap();
    send(&mut service, Ask::new("fresh?")).await.unwrap();
    assert_eq!(provider.calls(), 1, "within the TTL: a hit");
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let after = send(&mut service, Ask::new("fresh?")).await.unwrap();
    assert_eq!(provider.calls(), 2, "after the TTL: the provider again");
    assert!(after.text().starts_with("reply #1"));
}

#[tokio::test]
async fn the_cache_holds_at_most_max_entries() {
    let budget = budget();
    let layer = CacheLayer::new(budget).max_entries(2);
    let provider = Provider::default();
    let mut service = layer.layer(provider.clone());

    for round in 0..2 {
        for i in 0..10 {
            send(&mut service, Ask::new(&format!("question {i}")))
                .await
                .unwrap();
        }
        layer.run_pending_tasks().await;
        assert!(
            layer.entry_count() <= 2,
            "round {round}: {}",
            layer.entry_count()
        );
    }
    // Ten distinct questions do not fit in two entries: most of the second round missed.
    assert!(provider.calls() >= 18, "{}", provider.calls());
}

#[tokio::test]
async fn a_streaming_request_is_served_as_a_stream_from_a_cached_complete_response() {
    let budget = budget();
    let provider = Provider::default();
    let mut service = cached_and_budgeted(&budget, provider.clone());

    let complete = send(&mut service, Ask::new("stream me")).await.unwrap();
    let streamed = send(&mut service, Ask::new("stream me").streamed())
        .await
        .unwrap();
    assert!(streamed.is_stream());
    assert_eq!(provider.calls(), 1);
    let pieces = streamed.pieces().await;
    let text: String = pieces.iter().map(|p| p.text.as_str()).collect();
    assert_eq!(text, complete.text());
    assert_eq!(
        pieces.last().unwrap().usage,
        complete.usage(),
        "the stream ends with the original usage"
    );
    let events = budget.ledger().events();
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].kind, EventKind::CacheHit);
    assert_eq!(events[1].cost, Money::ZERO);
}

#[tokio::test]
async fn a_streamed_miss_passes_through_uncached_when_the_type_cannot_assemble_it() {
    let budget = budget();
    let provider = Provider::default();
    let mut service = CacheLayer::new(budget).layer(provider.clone());

    for _ in 0..2 {
        let answer = send(&mut service, Ask::new("stream only").streamed())
            .await
            .unwrap();
        assert_eq!(answer.pieces().await.len(), 2);
    }
    assert_eq!(provider.calls(), 2);
}

#[tokio::test]
async fn clones_of_the_layer_share_one_cache() {
    let budget = budget();
    let layer = CacheLayer::new(budget);
    let (provider_a, provider_b) = (Provider::default(), Provider::default());
    let mut a = layer.clone().layer(provider_a.clone());
    let mut b = layer.clone().layer(provider_b.clone());
    let mut a2 = a.clone();

    send(&mut a, Ask::new("shared")).await.unwrap();
    send(&mut b, Ask::new("shared")).await.unwrap();
    send(&mut a2, Ask::new("shared")).await.unwrap();
    assert_eq!(provider_a.calls(), 1);
    assert_eq!(
        provider_b.calls(),
        0,
        "served from the cache the other clone filled"
    );
    layer.run_pending_tasks().await;
    assert_eq!(layer.entry_count(), 1);
    assert!(format!("{layer:?}").contains("entry_count: 1"));
}

#[tokio::test]
async fn a_failed_call_is_not_cached_and_its_error_passes_through() {
    let budget = budget();
    let provider = Provider {
        fail_first: 1,
        ..Provider::default()
    };
    let mut service = CacheLayer::new(budget).layer(provider.clone());

    let error: ProviderDown = send(&mut service, Ask::new("flaky")).await.unwrap_err();
    assert_eq!(error.to_string(), "provider down");
    send(&mut service, Ask::new("flaky")).await.unwrap();
    send(&mut service, Ask::new("flaky")).await.unwrap();
    assert_eq!(
        provider.calls(),
        2,
        "the failure was not stored; the success was"
    );
}

#[tokio::test]
async fn a_response_without_usage_is_not_stored() {
    let budget = budget();
    let provider = Provider {
        no_usage: true,
        ..Provider::default()
    };
    let mut service = CacheLayer::new(budget).layer(provider.clone());
    send(&mut service, Ask::new("no usage")).await.unwrap();
    send(&mut service, Ask::new("no usage")).await.unwrap();
    assert_eq!(provider.calls(), 2);
}

#[tokio::test]
async fn a_hit_in_a_cancelled_task_is_refused_by_the_budget_layer_inside() {
    let budget = budget();
    let provider = Provider::default();
    let mut service = cached_and_budgeted(&budget, provider.clone());

    send(&mut service, Ask::new("cached")).await.unwrap();
    let task = task_scope("agent", "doomed");
    task.cancel();
    let refused = task
        .run(send(&mut service, Ask::new("cached")))
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            BudgetLayerError::Budget(BudgetError::TaskCancelled { .. })
        ),
        "{refused:?}"
    );
    assert_eq!(provider.calls(), 1);
    assert_eq!(budget.ledger().events().len(), 1, "no hit recorded");
}

#[tokio::test]
async fn an_agent_looping_on_a_cached_answer_is_still_stopped_as_a_runaway() {
    let budget = budget();
    let provider = Provider::default();
    let mut service = cached_and_budgeted(&budget, provider.clone());

    let task = task_scope("looper", "loop");
    let stopped = task
        .clone()
        .run(async {
            for step in 0..10 {
                task.next_step();
                if let Err(error) = send(&mut service, Ask::new("Same question again.")).await {
                    return Some((step, error));
                }
            }
            None
        })
        .await;
    let (step, error) = stopped.expect("the loop was stopped");
    assert!(step < 10);
    assert!(
        matches!(error.as_budget(), Some(BudgetError::Runaway { .. })),
        "{error:?}"
    );
    assert_eq!(provider.calls(), 1, "every repeat was a hit");
}

#[tokio::test]
async fn a_hit_for_a_paused_agent_is_not_served() {
    let budget = budget();
    let provider = Provider::default();
    let mut service = cached_and_budgeted(&budget, provider.clone());

    send(&mut service, Ask::new("cached")).await.unwrap();
    budget.controls().pause_agent("sleepy");
    let refused = task_scope("sleepy", "t")
        .run(send(&mut service, Ask::new("cached")))
        .await
        .unwrap_err();
    assert!(refused.as_budget().is_some(), "{refused:?}");
    assert_eq!(provider.calls(), 1);
}

#[tokio::test]
async fn a_hit_on_a_model_without_a_price_is_served_but_not_recorded() {
    let budget = budget();
    let provider = Provider::default();
    // No budget layer inside (it would refuse the unknown model before the provider).
    let mut service = CacheLayer::new(budget.clone()).layer(provider.clone());

    let ask = || Ask::new("hello").on("in-house-model-7");
    let first = send(&mut service, ask()).await.unwrap();
    let again = send(&mut service, ask()).await.unwrap();
    assert_eq!(provider.calls(), 1);
    assert_eq!(again.text(), first.text());
    assert!(
        budget.ledger().is_empty(),
        "the ledger cannot price the model"
    );
}

#[tokio::test]
async fn hits_count_against_rate_limits_placed_outside_the_cache_only() {
    let budget = budget();

    // Outside: every call is charged, hit or not.
    let provider = Provider::default();
    let mut outside = ServiceBuilder::new()
        .layer(RateLimitLayer::new().agent_rpm("agent", 2))
        .layer(CacheLayer::new(budget.clone()))
        .service(provider.clone());
    let refused = task_scope("agent", "t")
        .run(async {
            send(&mut outside, Ask::new("q")).await.unwrap();
            send(&mut outside, Ask::new("q")).await.unwrap();
            send(&mut outside, Ask::new("q")).await.unwrap_err()
        })
        .await;
    assert!(matches!(
        refused,
        RateLimitError::Limited {
            kind: LimitKind::Requests,
            ..
        }
    ));
    assert_eq!(provider.calls(), 1);

    // Inside: hits never reach the limiter.
    let provider = Provider::default();
    let mut inside = ServiceBuilder::new()
        .layer(CacheLayer::new(budget.clone()))
        .layer(RateLimitLayer::new().agent_rpm("agent", 2))
        .service(provider.clone());
    task_scope("agent", "t2")
        .run(async {
            for _ in 0..5 {
                send(&mut inside, Ask::new("q")).await.unwrap();
            }
        })
        .await;
    assert_eq!(provider.calls(), 1);
}

#[tokio::test]
async fn the_layer_composes_with_boxed_errors() {
    // A cached service behind tower's usual error erasure still serves hits.
    let budget = budget();
    let provider = Provider::default();
    let mut service = ServiceBuilder::new()
        .map_err(BoxError::from)
        .layer(CacheLayer::new(budget))
        .service(provider.clone());
    send(&mut service, Ask::new("x")).await.unwrap();
    send(&mut service, Ask::new("x")).await.unwrap();
    assert_eq!(provider.calls(), 1);
}

// ---------------------------------------------------------------------------------------------
// End to end: async-openai's request type and ChatReply, over HTTP to the local server.

#[cfg(all(feature = "openai", feature = "local-server"))]
mod openai_e2e {
    use async_openai::types::chat::CreateChatCompletionRequest;
    use budget_tower::LlmChunk;
    use budget_tower::local_server::RunningServer;
    use budget_tower::openai::{ChatReply, OpenAiService, usage_of};
    use futures::StreamExt;

    use super::support::chat::user_request;
    use super::support::server::{openai_service, start_server};
    use super::*;

    fn request(text: &str, temperature: f32, stream: bool) -> CreateChatCompletionRequest {
        let mut args = user_request("gpt-4o", text);
        args.temperature(temperature).max_completion_tokens(100u32);
        if stream {
            args.stream(true);
        }
        args.build().unwrap()
    }

    /// The local server, replying with `reply_tokens` tokens, and a fresh budget with
    /// async-openai behind the cache and budget layers.
    async fn start(reply_tokens: u64) -> (RunningServer, Budget, Cached<OpenAiService>) {
        let server = start_server(reply_tokens).await;
        let budget = budget();
        let service = cached_and_budgeted(&budget, openai_service(&server));
        (server, budget, service)
    }

    async fn collect_stream(reply: ChatReply) -> (String, Option<Usage>, usize) {
        let mut stream = reply.into_stream().expect("a stream");
        let (mut text, mut usage, mut chunks) = (String::new(), None, 0);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.unwrap();
            chunks += 1;
            text.push_str(&chunk.output_text());
            if let Some(u) = &chunk.usage {
                usage = Some(usage_of(u));
            }
        }
        (text, usage, chunks)
    }

    #[tokio::test]
    async fn the_second_identical_deterministic_request_never_reaches_the_server() {
        let (server, budget, mut service) = start(12).await;

        let (first, again) = task_scope("researcher", "e2e")
            .run(async {
                let first = send(&mut service, request("What is a token?", 0.0, false))
                    .await
                    .unwrap();
                let again = send(&mut service, request("What is a token?", 0.0, false))
                    .await
                    .unwrap();
                (first, again)
            })
            .await;
        assert_eq!(server.requests_received(), 1);
        let (first, again) = (
            first.into_complete().unwrap(),
            again.into_complete().unwrap(),
        );
        assert_eq!(first, again);

        let events = budget.ledger().events();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].kind, EventKind::Call);
        assert_eq!(events[0].usage, usage_of(first.usage.as_ref().unwrap()));
        assert_eq!(events[1].kind, EventKind::CacheHit);
        assert_eq!(events[1].cost, Money::ZERO);
        assert_eq!(events[1].usage, Usage::default());
        assert_eq!(events[1].saved.tokens, events[0].usage.total());
        assert_eq!(events[1].saved.money, events[0].cost);
        assert!(events[1].saved.money > Money::ZERO);

        // A sampled request (temperature above 0, no seed) is not cached.
        send(&mut service, request("What is a token?", 0.7, false))
            .await
            .unwrap();
        send(&mut service, request("What is a token?", 0.7, false))
            .await
            .unwrap();
        assert_eq!(server.requests_received(), 3);
        server.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn a_cached_complete_reply_is_served_as_openais_chunk_sequence() {
        let (server, _, mut service) = start(7).await;

        let complete = send(&mut service, request("Stream it", 0.0, false))
            .await
            .unwrap()
            .into_complete()
            .unwrap();
        let streamed = send(&mut service, request("Stream it", 0.0, true))
            .await
            .unwrap();
        assert_eq!(server.requests_received(), 1);
        let (text, usage, chunks) = collect_stream(streamed).await;
        assert_eq!(
            Some(text.as_str()),
            complete.choices[0].message.content.as_deref()
        );
        assert_eq!(
            usage,
            complete.usage.as_ref().map(usage_of),
            "the original usage"
        );
        assert_eq!(chunks, 4, "role, content, finish, usage");
        server.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn a_streamed_reply_is_assembled_stored_and_served_complete() {
        let (server, budget, mut service) = start(9).await;

        let (streamed_text, streamed_usage, _) = collect_stream(
            send(&mut service, request("Assemble me", 0.0, true))
                .await
                .unwrap(),
        )
        .await;
        let complete = send(&mut service, request("Assemble me", 0.0, false))
            .await
            .unwrap()
            .into_complete()
            .unwrap();
        assert_eq!(
            server.requests_received(),
            1,
            "served from the assembled stream"
        );
        assert_eq!(
            complete.choices[0].message.content.as_deref(),
            Some(streamed_text.as_str())
        );
        assert_eq!(complete.usage.as_ref().map(usage_of), streamed_usage);
        assert_eq!(complete.object, "chat.completion");

        let events = budget.ledger().events();
        assert_eq!(events.len(), 2);
        assert_eq!(events[1].kind, EventKind::CacheHit);
        assert_eq!(events[1].saved.tokens, events[0].usage.total());
        assert_eq!(events[1].saved.money, events[0].cost);
        server.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn a_stream_dropped_half_way_is_not_stored() {
        let (server, _, mut service) = start(9).await;

        let mut stream = send(&mut service, request("Half", 0.0, true))
            .await
            .unwrap()
            .into_stream()
            .unwrap();
        stream.next().await.unwrap().unwrap();
        drop(stream);
        send(&mut service, request("Half", 0.0, false))
            .await
            .unwrap();
        assert_eq!(server.requests_received(), 2);
        server.shutdown().await.unwrap();
    }
}
