//! Regressions of issue 9 in the budget layer: what a provider bills is what gets charged, on
//! ordinary provider behaviour (several choices, timeouts and retries, streams that end badly
//! or are dropped as the runtime stops). Each test failed before its fix.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use budget_core::{Budget, TokenCount, Usage};
use budget_tower::{BudgetLayer, LlmRequest};
use futures::StreamExt;
use tower::{Layer, Service};

mod support;
use support::{Answer, Ask, Piece, PieceError, budget_of, per_task, scope, send};

/// A request for `n` choices of an [`Ask`], and how long (ms) a test provider should take to
/// answer it (a test knob, not part of the request).
#[derive(Debug, Clone)]
struct Choices(Ask, u32, u64);

impl LlmRequest for Choices {
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
        self.0.set_max_output_tokens(cap);
    }
    fn choices(&self) -> u32 {
        self.1
    }
    fn is_stream(&self) -> bool {
        false
    }
}

/// A provider that obeys the output cap on every choice, and bills every token of them.
fn obeys_the_cap_on_every_choice()
-> impl Service<Choices, Response = Answer, Error = std::convert::Infallible, Future: Send> + Clone
{
    tower::service_fn(|req: Choices| async move {
        let cap = req.max_output_tokens().unwrap();
        let output = cap * u64::from(req.1);
        Ok(Answer::Complete {
            text: " cat".repeat(output as usize),
            usage: Some(Usage::new(req.count_prompt().tokens, output)),
        })
    })
}

#[tokio::test]
async fn calls_of_many_choices_stay_within_the_hard_limit() {
    let budget = budget_of([per_task(10_000)]);
    let mut service = BudgetLayer::new(budget.clone()).layer(obeys_the_cap_on_every_choice());
    let ask = Ask::new("Eight drafts of a haiku, please.").with_cap(Some(4_000));
    let prompt = ask.count_prompt().tokens;
    let task = scope("t");
    let mut answered = 0;
    for _ in 0..4 {
        let call = send(&mut service, Choices(ask.clone(), 8, 0));
        answered += u64::from(task.clone().run(call).await.is_ok());
    }
    let events = budget.ledger().events();
    assert_eq!(events.len() as u64, answered);
    let used = events.iter().map(|e| e.usage.total()).sum::<u64>();
    assert!(used <= 10_000, "{used} tokens committed under a 10,000 cap");
    // The first call got what fits for all eight choices: (10,000 − prompt) / 8 each.
    assert_eq!(events[0].usage.output, (10_000 - prompt) / 8 * 8);
    let status = budget.status().await.unwrap();
    assert!(
        status.iter().all(|s| s.usage.overshoot().is_zero()),
        "{status:?}"
    );
}

/// A provider slower than the caller's patience; every call it receives is billed.
#[derive(Clone, Default)]
struct Slow {
    calls: Arc<AtomicU64>,
}

impl Service<Ask> for Slow {
    type Response = Answer;
    type Error = std::convert::Infallible;
    type Future = futures::future::BoxFuture<'static, Result<Answer, Self::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, ask: Ask) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok(Answer::Complete {
                text: " cat".into(),
                usage: Some(Usage::new(ask.count_prompt().tokens, 1)),
            })
        })
    }
}

#[tokio::test]
async fn retried_timeouts_cannot_spend_past_the_hard_limit() {
    let budget = budget_of([per_task(1_000)]);
    let slow = Slow::default();
    let mut service = BudgetLayer::new(budget.clone()).layer(slow.clone());
    let ask = Ask::new("Summarise the quarter.").with_cap(Some(200));
    let prompt = ask.count_prompt().tokens;
    // What `tower::timeout` inside `tower::retry` does: ten attempts, each given up on.
    let task = scope("t");
    for _ in 0..10 {
        let attempt = send(&mut service, ask.clone());
        let _ = task
            .clone()
            .run(tokio::time::timeout(Duration::from_millis(20), attempt))
            .await;
    }
    let reached = slow.calls.load(Ordering::SeqCst);
    assert!(reached >= 1);
    let events = budget.ledger().events();
    assert_eq!(
        events.len() as u64,
        reached,
        "every call that reached the provider is charged"
    );
    // Each charged as billed-unknown: the prompt and the whole cap it was sent with (the
    // first 200, later ones clamped to what was left).
    assert!(
        events
            .iter()
            .all(|e| e.estimated && e.usage.input == prompt)
    );
    assert_eq!(events[0].usage.output, 200);
    let used = events.iter().map(|e| e.usage.total()).sum::<u64>();
    assert!(used <= 1_000, "{used} tokens charged under a 1,000 cap");
}

#[tokio::test]
async fn a_stream_that_breaks_after_its_usage_report_commits_the_report() {
    let budget = budget_of([per_task(100_000)]);
    let reported = Usage {
        reasoning: 1_500,
        ..Usage::new(2_000, 1_504)
    };
    let provider = tower::service_fn(move |_: Ask| async move {
        Ok::<_, std::convert::Infallible>(Answer::stream_of([
            Ok(Piece {
                text: " one two".into(),
                usage: None,
            }),
            Ok(Piece {
                text: String::new(),
                usage: Some(reported),
            }),
            Err(PieceError::Broken),
        ]))
    });
    let mut service = BudgetLayer::new(budget.clone()).layer(provider);
    let ask = Ask::new("Think hard.").with_cap(Some(2_000)).streamed();
    let Answer::Stream(mut stream) = scope("t").run(send(&mut service, ask)).await.unwrap() else {
        panic!("a stream")
    };
    while let Some(piece) = stream.next().await {
        if piece.is_err() {
            break;
        }
    }
    let events = budget.ledger().events();
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].usage, reported,
        "the provider's report, not the local count"
    );
    assert!(!events[0].estimated);
}

#[test]
fn a_stream_dropped_as_the_runtime_stops_is_committed() {
    let budget: Budget = budget_of([per_task(100_000)]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        let provider = tower::service_fn(|_: Ask| async {
            Ok::<_, std::convert::Infallible>(Answer::stream_of((0..10).map(|_| {
                Ok(Piece {
                    text: " cat".into(),
                    usage: None,
                })
            })))
        });
        let mut service = BudgetLayer::new(budget.clone()).layer(provider);
        let ask = Ask::new("Stream please.").with_cap(Some(50)).streamed();
        let Answer::Stream(mut stream) = scope("t").run(send(&mut service, ask)).await.unwrap()
        else {
            panic!("a stream")
        };
        stream.next().await.unwrap().unwrap();
        drop(stream); // ...and the program returns from main at once
    });
    drop(runtime);
    let events = budget.ledger().events();
    assert_eq!(events.len(), 1, "the consumed part is committed");
    assert_eq!(events[0].usage.output, 1);
    let status = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(budget.status())
        .unwrap();
    assert!(status.iter().all(|s| s.usage.reserved.is_zero()));
}

#[test]
fn the_default_request_asks_for_one_choice() {
    assert_eq!(Ask::new("x").choices(), 1);
}

/// A provider that bills every request it receives (counted when it is handed over) and
/// answers, after `delay_ms` of the request's own choosing, with every choice at its cap.
#[derive(Clone, Default)]
struct Billing {
    received: Arc<AtomicU64>,
}

impl Service<Choices> for Billing {
    type Response = Answer;
    type Error = std::convert::Infallible;
    type Future = futures::future::BoxFuture<'static, Result<Answer, Self::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Choices) -> Self::Future {
        self.received.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(req.2)).await;
            let output = req.max_output_tokens().unwrap() * u64::from(req.1);
            Ok(Answer::Complete {
                text: String::new(),
                usage: Some(Usage::new(req.count_prompt().tokens, output)),
            })
        })
    }
}

/// Many callers at once, asking for 1–4 choices, half of them giving up while the provider is
/// still working: committed usage never passes the hard limit, every request the provider
/// received is charged once, and the store and the ledger agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_choices_and_timeouts_never_pass_the_limit_and_charge_every_sent_call() {
    const CAP: u64 = 20_000;
    let budget = budget_of([support::agent_day("agent", CAP)]);
    let provider = Billing::default();
    let service = BudgetLayer::new(budget.clone()).layer(provider.clone());
    let tasks: Vec<_> = (0..64u64)
        .map(|i| {
            let mut service = service.clone();
            tokio::spawn(scope(&format!("t{i}")).run(async move {
                let mut refused = 0;
                for call in 0..8u64 {
                    let ask = Ask::new("Draft it.").with_cap(Some(300));
                    let n = u32::try_from((i + call) % 4 + 1).unwrap();
                    // Every other call outlives its caller's patience (2 ms) by far.
                    let delay = if (i + call) % 2 == 0 { 50 } else { 0 };
                    let attempt = send(&mut service, Choices(ask, n, delay));
                    match tokio::time::timeout(Duration::from_millis(2), attempt).await {
                        Ok(Err(e)) if e.as_budget().is_some() => refused += 1,
                        Ok(Err(e)) => panic!("{e}"),
                        Ok(Ok(_)) | Err(_) => {}
                    }
                }
                refused
            }))
        })
        .collect();
    let mut refused = 0;
    for t in tasks {
        refused += t.await.unwrap();
    }
    budget.flush().await.unwrap();
    assert!(refused > 0, "the limit was reached");
    let status = budget.status().await.unwrap();
    let day = &status[0];
    assert!(day.usage.committed.tokens <= CAP, "{day}");
    assert!(day.usage.reserved.is_zero(), "{day}");
    let events = budget.ledger().events();
    assert_eq!(
        events.len() as u64,
        provider.received.load(Ordering::SeqCst),
        "every request the provider received is charged, once"
    );
    assert!(
        events.iter().any(|e| e.estimated),
        "some were charged as dropped"
    );
    let total: u64 = events.iter().map(|e| e.usage.total()).sum();
    assert_eq!(
        total, day.usage.committed.tokens,
        "the store and the ledger agree"
    );
}
