//! The budget layer around a provider of the test's own request and response types: any LLM
//! client works, not only async-openai. (End to end over HTTP: tests/openai_e2e.rs.)

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use budget_core::{Attribution, Budget, BudgetError, TokenCount, Usage, count_text};
use budget_tower::enforce::Cutoff;
use budget_tower::{
    Attributed, BudgetLayer, BudgetLayerError, ChunkStream, LlmRequest, LlmResponse,
};
use futures::StreamExt;
use tower::{Layer, Service, ServiceBuilder};

mod support;
use support::{
    Answer, Ask, Piece, PieceError, agent_day, budget_of, no_limits, no_reservations_left,
    per_task, scope, send,
};

#[derive(Debug, thiserror::Error)]
#[error("provider failed")]
struct ProviderFailed;

/// A stand-in provider: replies with `min(cap, 30)` one-word tokens and counts what it sees.
#[derive(Clone, Default)]
struct Provider {
    calls: Arc<AtomicU64>,
    caps_seen: Arc<parking_lot::Mutex<Vec<Option<u64>>>>,
    report_usage: bool,
    fail: bool,
    overrun: bool,
    /// Streams break with an error after this many pieces.
    break_after: Option<u64>,
    delay: Option<Duration>,
}

impl Provider {
    fn reporting() -> Provider {
        Provider {
            report_usage: true,
            ..Provider::default()
        }
    }

    fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Service<Ask> for Provider {
    type Response = Answer;
    type Error = ProviderFailed;
    type Future = futures::future::BoxFuture<'static, Result<Answer, ProviderFailed>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), ProviderFailed>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, ask: Ask) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            this.calls.fetch_add(1, Ordering::SeqCst);
            this.caps_seen.lock().push(ask.cap);
            if let Some(d) = this.delay {
                tokio::time::sleep(d).await;
            }
            if this.fail {
                return Err(ProviderFailed);
            }
            let cap = ask.cap.unwrap_or(30);
            let n = if this.overrun { cap + 10 } else { cap.min(30) };
            let prompt = ask.count_prompt().tokens;
            if ask.stream {
                let pieces: Vec<Result<Piece, PieceError>> = (0..n)
                    .map(|i| match this.break_after {
                        Some(b) if i >= b => Err(PieceError::Broken),
                        _ => Ok(Piece {
                            text: " cat".into(),
                            usage: None,
                        }),
                    })
                    .chain(this.report_usage.then(|| {
                        Ok(Piece {
                            text: String::new(),
                            usage: Some(Usage::new(prompt, n)),
                        })
                    }))
                    .collect();
                return Ok(Answer::stream_of(pieces));
            }
            Ok(Answer::Complete {
                text: " cat".repeat(n as usize),
                usage: this.report_usage.then(|| Usage::new(prompt, n)),
            })
        })
    }
}

/// Sends a streaming request of `cap` output tokens through the layer to `provider`, in task
/// "t"; returns the prompt's tokens and the metered stream.
async fn stream_through(
    budget: &Budget,
    provider: Provider,
    cap: u64,
) -> (u64, ChunkStream<Piece, PieceError>) {
    let mut service = BudgetLayer::new(budget.clone()).layer(provider);
    let ask = Ask::new("Stream please.").with_cap(Some(cap)).streamed();
    let prompt = ask.count_prompt().tokens;
    let reply = scope("t").run(send(&mut service, ask)).await.unwrap();
    let Answer::Stream(stream) = reply else {
        panic!("expected a stream")
    };
    (prompt, stream)
}

fn budget(task_cap: u64) -> Budget {
    budget_of([per_task(task_cap)])
}

#[tokio::test]
async fn commits_reported_usage_and_clamps_the_cap() {
    let budget = budget(200);
    let provider = Provider::reporting();
    let mut service = ServiceBuilder::new()
        .layer(BudgetLayer::new(budget.clone()))
        .service(provider.clone());
    let ask = Ask::new("Tell me about cats.").with_cap(Some(500));
    let prompt = ask.count_prompt().tokens;
    let reply = scope("t1").run(send(&mut service, ask)).await.unwrap();
    assert!(!reply.is_stream());
    // The cap was clamped to what the task budget allows: 200 − prompt.
    assert_eq!(provider.caps_seen.lock()[0], Some(200 - prompt));
    let events = budget.ledger().events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].usage, Usage::new(prompt, 30));
    assert!(!events[0].estimated);
    assert_eq!(events[0].attribution.task().unwrap().as_str(), "t1");
}

#[tokio::test]
async fn denied_calls_never_reach_the_provider() {
    let budget = budget(100);
    let provider = Provider::reporting();
    let mut service = BudgetLayer::new(budget.clone()).layer(provider.clone());
    let long = "word ".repeat(150);
    let err = scope("t")
        .run(send(&mut service, Ask::new(&long).with_cap(Some(10))))
        .await
        .err()
        .unwrap();
    assert!(
        matches!(err.as_budget(), Some(BudgetError::ExceedsLimit(_))),
        "{err}"
    );
    assert_eq!(provider.calls(), 0);
    // Unknown models are refused too, before any request leaves.
    let ask = Ask::new("hi").with_cap(Some(5)).on("no-such-model");
    let err = send(&mut service, ask).await.err().unwrap();
    assert!(
        matches!(err.as_budget(), Some(BudgetError::Pricing(_))),
        "{err}"
    );
    assert_eq!(provider.calls(), 0);
}

#[tokio::test]
async fn missing_usage_is_counted_and_flagged_estimated() {
    let budget = budget(10_000);
    let provider = Provider::default(); // reports no usage
    let mut service = BudgetLayer::new(budget.clone()).layer(provider);
    let ask = Ask::new("Count me.").with_cap(Some(12));
    let prompt = ask.count_prompt().tokens;
    scope("t").run(send(&mut service, ask)).await.unwrap();
    let event = &budget.ledger().events()[0];
    assert!(event.estimated);
    assert_eq!(
        event.usage,
        Usage::new(prompt, count_text("gpt-4o-mini", &" cat".repeat(12)).tokens)
    );
}

#[tokio::test]
async fn failures_are_released_and_timeouts_after_sending_are_charged() {
    let budget = budget(1_000);
    let failing = Provider {
        fail: true,
        ..Provider::reporting()
    };
    let mut service = BudgetLayer::new(budget.clone()).layer(failing.clone());
    let err = scope("t")
        .run(send(&mut service, Ask::new("x").with_cap(Some(100))))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, BudgetLayerError::Inner(ProviderFailed)));

    let slow = Provider {
        delay: Some(Duration::from_secs(5)),
        ..Provider::reporting()
    };
    let mut timed = ServiceBuilder::new()
        .timeout(Duration::from_millis(50))
        .layer(BudgetLayer::new(budget.clone()))
        .service(slow.clone());
    let err = scope("t")
        .run(send(&mut timed, Ask::new("x").with_cap(Some(100))))
        .await
        .err()
        .unwrap();
    assert!(err.is::<tower::timeout::error::Elapsed>(), "{err}");
    assert_eq!(
        slow.calls(),
        1,
        "the call reached the provider before the timeout"
    );

    // The failed call was released; the timed-out one reached the provider, which may bill
    // it: it is charged the most it can cost (prompt + granted output), flagged estimated.
    no_reservations_left(&budget).await;
    let events = budget.ledger().events();
    assert_eq!(events.len(), 1, "{events:?}");
    let prompt = Ask::new("x").count_prompt().tokens;
    assert_eq!(events[0].usage, Usage::new(prompt, 100));
    assert!(events[0].estimated);
}

#[tokio::test]
async fn attribution_comes_from_the_scope_else_the_request_else_nobody() {
    let budget = no_limits();
    let provider = Provider::reporting();
    let mut plain = BudgetLayer::new(budget.clone()).layer(provider.clone());
    send(&mut plain, Ask::new("a").with_cap(Some(3)))
        .await
        .unwrap();

    // A request type that carries its own attribution.
    #[derive(Clone)]
    struct Tagged(Attributed<Ask>);
    impl LlmRequest for Tagged {
        fn model(&self) -> &str {
            self.0.model()
        }
        fn count_prompt(&self) -> TokenCount {
            self.0.count_prompt()
        }
        fn max_output_tokens(&self) -> Option<u64> {
            self.0.max_output_tokens()
        }
        fn set_max_output_tokens(&mut self, cap: u64) {
            self.0.set_max_output_tokens(cap)
        }
        fn is_stream(&self) -> bool {
            self.0.is_stream()
        }
        fn attribution(&self) -> Option<&Attribution> {
            self.0.attribution()
        }
    }
    let mut provider2 = provider.clone();
    let inner = tower::service_fn(move |t: Tagged| provider2.call(t.0.request));
    let mut tagged = BudgetLayer::new(budget.clone()).layer(inner);
    let who = Attribution::agent("billing").with_user("alice");
    let ask = Ask::new("b").with_cap(Some(3));
    send(&mut tagged, Tagged(Attributed::new(ask, who)))
        .await
        .unwrap();
    scope("t9")
        .run(send(&mut plain, Ask::new("c").with_cap(Some(3))))
        .await
        .unwrap();

    let agents: Vec<_> = budget
        .ledger()
        .events()
        .iter()
        .map(|e| {
            (
                e.attribution.agent_name().to_owned(),
                e.attribution.user().map(str::to_owned),
            )
        })
        .collect();
    assert_eq!(
        agents,
        [
            ("unattributed".to_owned(), None),
            ("billing".to_owned(), Some("alice".to_owned())),
            ("agent".to_owned(), None)
        ]
    );
}

#[tokio::test]
async fn cancelled_tasks_and_paused_agents_are_refused() {
    let budget = budget(10_000);
    let provider = Provider::reporting();
    let mut service = BudgetLayer::new(budget.clone()).layer(provider.clone());
    let s = scope("doomed");
    s.cancel_token().cancel();
    let err = s
        .run(send(&mut service, Ask::new("x").with_cap(Some(5))))
        .await
        .err()
        .unwrap();
    assert!(matches!(
        err.as_budget(),
        Some(BudgetError::TaskCancelled { .. })
    ));
    budget.controls().pause_agent("agent");
    let err = scope("other")
        .run(send(&mut service, Ask::new("x").with_cap(Some(5))))
        .await
        .err()
        .unwrap();
    assert!(matches!(
        err.as_budget(),
        Some(BudgetError::AgentPaused { .. })
    ));
    assert_eq!(provider.calls(), 0);
}

#[tokio::test]
async fn streams_are_cut_at_the_grant_and_the_consumed_part_committed() {
    let budget = budget(10_000);
    let overrunning = Provider {
        overrun: true,
        ..Provider::reporting()
    };
    let (prompt, stream) = stream_through(&budget, overrunning, 7).await;
    let items: Vec<_> = stream.collect().await;
    let delivered = items.iter().filter(|i| i.is_ok()).count();
    assert_eq!(
        delivered, 7,
        "exactly the granted tokens reach the consumer"
    );
    assert!(matches!(
        items.last(),
        Some(Err(PieceError::Cutoff(Cutoff::OverGrant {
            granted: 7,
            produced: 8
        })))
    ));
    let event = &budget.ledger().events()[0];
    assert_eq!(
        event.usage,
        Usage::new(prompt, 8),
        "the provider billed the 8th token too"
    );
    assert!(event.estimated);
}

#[tokio::test]
async fn streams_end_with_the_reported_usage() {
    let budget = budget(10_000);
    let (prompt, stream) = stream_through(&budget, Provider::reporting(), 20).await;
    assert_eq!(
        stream
            .filter(|i| futures::future::ready(i.is_ok()))
            .count()
            .await,
        21
    );
    let event = &budget.ledger().events()[0];
    assert_eq!(event.usage, Usage::new(prompt, 20));
    assert!(!event.estimated);
    // The task is over: its counters are gone, nothing is left reserved.
    no_reservations_left(&budget).await;
}

#[tokio::test]
async fn a_stream_dropped_half_way_is_committed_not_released() {
    let budget = budget(10_000);
    let (prompt, mut stream) = stream_through(&budget, Provider::reporting(), 20).await;
    for _ in 0..5 {
        stream.next().await.unwrap().unwrap();
    }
    drop(stream);
    tokio::task::yield_now().await; // the commit runs on the runtime
    let events = budget.ledger().events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].usage, Usage::new(prompt, 5));
    assert!(events[0].estimated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_never_exceed_the_hard_limit() {
    const CAP: u64 = 5_000;
    let budget = budget_of([agent_day("agent", CAP)]);
    let provider = Provider {
        delay: Some(Duration::from_millis(5)),
        ..Provider::reporting()
    };
    let service = BudgetLayer::new(budget.clone()).layer(provider.clone());
    let tasks: Vec<_> = (0..96)
        .map(|i| {
            let mut service = service.clone();
            let s = scope(&format!("t{i}"));
            tokio::spawn(s.run(async move {
                let ask = Ask::new("How many tokens may I use today?").with_cap(Some(100));
                send(&mut service, ask).await.map(|_| ())
            }))
        })
        .collect();
    let mut ok = 0;
    let mut refused = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => ok += 1,
            Err(e) if e.as_budget().is_some() => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(refused > 0 && ok > 0, "ok {ok}, refused {refused}");
    let status = budget.status().await.unwrap();
    assert!(status[0].usage.committed.tokens <= CAP, "{status:?}");
    assert_eq!(status[0].usage.reserved.tokens, 0);
    assert_eq!(provider.calls(), ok, "every refused call stayed home");
    let total: u64 = budget
        .ledger()
        .events()
        .iter()
        .map(|e| e.usage.total())
        .sum();
    assert_eq!(total, status[0].usage.committed.tokens);
}

#[tokio::test]
async fn a_stream_broken_by_the_provider_commits_what_arrived() {
    let budget = budget(10_000);
    let breaking = Provider {
        break_after: Some(4),
        ..Provider::reporting()
    };
    let (prompt, stream) = stream_through(&budget, breaking, 20).await;
    let items: Vec<_> = stream.collect().await;
    assert_eq!(items.len(), 5, "4 pieces, then the error, then the end");
    assert!(matches!(items[4], Err(PieceError::Broken)));
    let event = &budget.ledger().events()[0];
    assert_eq!(event.usage, Usage::new(prompt, 4));
    assert!(event.estimated);
}
