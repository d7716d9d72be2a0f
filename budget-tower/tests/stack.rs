//! `BudgetStack`: the layers are built in their one working order, whatever order the stack's
//! methods are called in, and the stack composes with other middleware in a `ServiceBuilder`.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use budget_core::ledger::EventKind;
use budget_core::{Budget, Limit, Selector, Usage, Window};
use budget_tower::rate_limit::{LimitKind, RateLimitError, RateLimitLayer};
use budget_tower::stack::{BudgetStack, ServiceBuilderExt};
use budget_tower::{BudgetLayerError, CacheLayer, LlmRequest};
use tower::ServiceBuilder;

use support::{Answer, Ask, budget_of, global_day, send, task_scope};

/// A provider that answers every ask with 20 output tokens and counts its calls.
#[derive(Clone, Default)]
struct Provider {
    calls: Arc<AtomicU32>,
}

impl tower::Service<Ask> for Provider {
    type Response = Answer;
    type Error = std::convert::Infallible;
    type Future = futures::future::Ready<Result<Answer, Self::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, ask: Ask) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let usage = Usage::new(ask.count_prompt().tokens, 20.min(ask.cap.unwrap_or(20)));
        futures::future::ready(Ok(Answer::Complete {
            text: format!("reply to {}", ask.prompt),
            usage: Some(usage),
        }))
    }
}

fn events(budget: &Budget) -> Vec<EventKind> {
    let mut events = budget.ledger().events();
    events.sort_by_key(|e| e.id);
    events.iter().map(|e| e.kind).collect()
}

#[tokio::test]
async fn a_cache_hit_is_answered_outside_the_budget_and_reserves_nothing() {
    let budget = budget_of([global_day(1_000_000)]);
    let provider = Provider::default();
    // The cache is given last: the stack still puts it outermost.
    let mut service = ServiceBuilder::new()
        .budget_stack(BudgetStack::new(&budget).cache(CacheLayer::new(budget.clone())))
        .service(provider.clone());
    let scope = task_scope("writer", "t-1");
    let ask = Ask::new("What is a token budget?");
    let first = scope
        .clone()
        .run(send(&mut service, ask.clone()))
        .await
        .unwrap();
    let again = scope.run(send(&mut service, ask)).await.unwrap();

    assert_eq!(first.text(), again.text());
    assert_eq!(
        provider.calls.load(Ordering::SeqCst),
        1,
        "the hit never reached the provider"
    );
    assert_eq!(events(&budget), [EventKind::Call, EventKind::CacheHit]);
    let status = budget.status().await.unwrap();
    assert_eq!(
        status[0].usage.committed.tokens,
        ask_tokens() + 20,
        "only the call the provider answered counts against the limit"
    );
}

fn ask_tokens() -> u64 {
    Ask::new("What is a token budget?").count_prompt().tokens
}

#[tokio::test]
async fn a_call_the_budget_refuses_costs_no_rate() {
    // A writer's task may spend 30 tokens; the writer may make one call a minute.
    let budget =
        budget_of([Limit::new("task", Selector::agent("writer"), Window::PerTask).tokens(30)]);
    let provider = Provider::default();
    let rates = RateLimitLayer::new().agent_rpm("writer", 1);
    // The rate limit is given first: the stack still puts it inside the budget layer.
    let mut service = ServiceBuilder::new()
        .timeout(Duration::from_secs(5))
        .budget_stack(BudgetStack::new(&budget).rate_limit(rates))
        .service(provider.clone());

    let too_big = Ask::new(&"a prompt longer than the task's whole budget ".repeat(10));
    let refused = task_scope("writer", "t-1")
        .run(send(&mut service, too_big.clone()))
        .await;
    let refused = refused.unwrap_err();
    assert!(
        matches!(
            refused.downcast_ref::<BudgetLayerError<RateLimitError<std::convert::Infallible>>>(),
            Some(BudgetLayerError::Budget(_))
        ),
        "the budget refuses a prompt larger than the task's limit: {refused}"
    );

    let fits = Ask::new("hello").with_cap(Some(5));
    task_scope("writer", "t-2")
        .run(send(&mut service, fits.clone()))
        .await
        .expect("the refused call took no rate: the minute's one call is still free");
    assert_eq!(provider.calls.load(Ordering::SeqCst), 1);

    let limited = task_scope("writer", "t-3")
        .run(send(&mut service, fits))
        .await
        .unwrap_err();
    match limited.downcast_ref::<BudgetLayerError<RateLimitError<std::convert::Infallible>>>() {
        Some(BudgetLayerError::Inner(RateLimitError::Limited { kind, .. })) => {
            assert_eq!(*kind, LimitKind::Requests)
        }
        other => panic!("the second call in the minute is rate limited, got {other:?}"),
    }
}
