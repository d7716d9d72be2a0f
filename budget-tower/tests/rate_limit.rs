//! The rate-limit layer: requests and tokens per minute, per agent and per model, under the
//! `Reject` and `Wait` policies, alone and under the budget layer.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use budget_core::scope::TaskScope;
use budget_core::{Attribution, Usage, count_text};
use budget_tower::llm::{LlmRequest, LlmResponse};
use budget_tower::rate_limit::{BudgetClock, TokioClock};
use budget_tower::{
    BudgetLayer, BudgetLayerError, LimitKind, Policy, Rate, RateLimitError, RateLimitKey,
    RateLimitLayer,
};
use governor::clock::{DefaultClock, FakeRelativeClock};
use tower::{Service, ServiceBuilder};

mod support;
use support::{Answer, Ask, no_limits, send};

// ---------------------------------------------------------------------------------------------
// A request and response of our own (tests/support), and a provider that counts its calls.

fn req(model: &'static str, prompt: &str, cap: Option<u64>) -> Ask {
    Ask::new(prompt).on(model).with_cap(cap)
}

/// What the layer charges a token limit for `req` (with the layer's default cap `default`).
fn weight_of(req: &Ask, default: u64) -> u64 {
    count_text(req.model, &req.prompt).tokens + req.cap.unwrap_or(default)
}

/// A provider that answers at once and counts the calls it received.
fn provider(
    calls: &Arc<AtomicUsize>,
) -> impl Service<Ask, Response = Answer, Error = Infallible, Future: Send> + Clone + Send + 'static
{
    let calls = calls.clone();
    tower::service_fn(move |req: Ask| {
        calls.fetch_add(1, Ordering::SeqCst);
        let usage = Usage::new(req.count_prompt().tokens, req.cap.unwrap_or(0).min(5));
        async move {
            Ok::<_, Infallible>(Answer::Complete {
                text: String::new(),
                usage: Some(usage),
            })
        }
    })
}

type Error = RateLimitError<Infallible>;

/// One call through `service`, inside a task scope of `agent` when given.
async fn call<S>(service: &mut S, agent: Option<&str>, req: Ask) -> Result<Answer, S::Error>
where
    S: Service<Ask, Response = Answer>,
{
    let fut = send(service, req);
    match agent {
        Some(agent) => TaskScope::new(Attribution::agent(agent)).run(fut).await,
        None => fut.await,
    }
}

fn light() -> Ask {
    req("gpt-4o-mini", "Summarise the quarterly report.", Some(100))
}

fn limited(error: &Error) -> (&RateLimitKey, LimitKind, Duration) {
    match error {
        RateLimitError::Limited {
            key,
            kind,
            retry_after,
        } => (key, *kind, *retry_after),
        other => panic!("expected Limited, got {other:?}"),
    }
}

fn agent(name: &str) -> RateLimitKey {
    RateLimitKey::Agent(name.into())
}

fn model(name: &str) -> RateLimitKey {
    RateLimitKey::Model(name.into())
}

// ---------------------------------------------------------------------------------------------
// Reject: requests per minute.

#[tokio::test]
async fn rpm_rejects_after_n_calls_with_retry_after() {
    let clock = FakeRelativeClock::default();
    let calls = Arc::new(AtomicUsize::new(0));
    let mut service = ServiceBuilder::new()
        .layer(RateLimitLayer::with_clock(clock.clone()).default_agent_rpm(3))
        .service(provider(&calls));

    for _ in 0..3 {
        call(&mut service, None, light()).await.unwrap();
    }
    let refused = call(&mut service, None, light()).await.unwrap_err();
    let (key, kind, retry_after) = limited(&refused);
    // Unattributed calls count as the agent "unattributed".
    assert_eq!(key, &agent(budget_core::UNATTRIBUTED));
    assert_eq!(kind, LimitKind::Requests);
    // 3 a minute replenish one every 20 s.
    assert_eq!(retry_after, Duration::from_secs(20));
    assert_eq!(refused.retry_after(), Some(Duration::from_secs(20)));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "a refused call never reaches the provider"
    );

    clock.advance(Duration::from_secs(19));
    let refused = call(&mut service, None, light()).await.unwrap_err();
    assert_eq!(limited(&refused).2, Duration::from_secs(1));
    clock.advance(Duration::from_secs(1));
    call(&mut service, None, light()).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn the_budget_clock_drives_the_rate_limit_too() {
    // One FakeClock for budget windows and rate limits: advancing it refills both.
    let time = budget_core::clock::FakeClock::at("2026-12-06T09:00:00Z".parse().unwrap());
    let calls = Arc::new(AtomicUsize::new(0));
    let mut service = ServiceBuilder::new()
        .layer(RateLimitLayer::with_clock(BudgetClock::new(time.clone())).default_agent_rpm(2))
        .service(provider(&calls));

    call(&mut service, None, light()).await.unwrap();
    call(&mut service, None, light()).await.unwrap();
    let refused = call(&mut service, None, light()).await.unwrap_err();
    assert_eq!(limited(&refused).2, Duration::from_secs(30));

    time.advance(jiff::SignedDuration::from_secs(29));
    let refused = call(&mut service, None, light()).await.unwrap_err();
    assert_eq!(limited(&refused).2, Duration::from_secs(1));
    time.advance(jiff::SignedDuration::from_secs(1));
    call(&mut service, None, light()).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

// ---------------------------------------------------------------------------------------------
// Reject: tokens per minute, weighted by the call.

#[tokio::test]
async fn tpm_weighs_prompt_plus_output_cap() {
    let clock = FakeRelativeClock::default();
    let calls = Arc::new(AtomicUsize::new(0));
    let w = weight_of(&light(), 0);
    assert!(w > 100, "the prompt counts: {w}");
    let mut service = ServiceBuilder::new()
        .layer(
            RateLimitLayer::with_clock(clock.clone())
                .default_agent_tpm(u32::try_from(4 * w).unwrap()),
        )
        .service(provider(&calls));

    // Four light calls fill an agent's minute; the fifth must wait for one light call's worth.
    for _ in 0..4 {
        call(&mut service, Some("light"), light()).await.unwrap();
    }
    let refused = call(&mut service, Some("light"), light())
        .await
        .unwrap_err();
    let (key, kind, retry_after) = limited(&refused);
    assert_eq!((key, kind), (&agent("light"), LimitKind::Tokens));
    assert!(retry_after > Duration::ZERO);

    // One heavy call (three light ones' worth) leaves room for exactly one light call.
    let mut heavy = light();
    heavy.cap = Some(3 * w - count_text(heavy.model, &heavy.prompt).tokens);
    assert_eq!(weight_of(&heavy, 0), 3 * w);
    call(&mut service, Some("heavy"), heavy).await.unwrap();
    call(&mut service, Some("heavy"), light()).await.unwrap();
    let refused = call(&mut service, Some("heavy"), light())
        .await
        .unwrap_err();
    assert_eq!(limited(&refused).0, &agent("heavy"));
    assert_eq!(calls.load(Ordering::SeqCst), 6);
}

#[tokio::test]
async fn requests_without_a_cap_weigh_the_default_output_cap() {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut service = ServiceBuilder::new()
        .layer(
            RateLimitLayer::with_clock(FakeRelativeClock::default())
                .default_agent_tpm(1_000)
                .default_output_cap(5_000),
        )
        .service(provider(&calls));
    let uncapped = req("gpt-4o-mini", "hello", None);
    let refused = call(&mut service, None, uncapped.clone())
        .await
        .unwrap_err();
    let RateLimitError::NeverFits { weight, .. } = refused else {
        panic!("expected NeverFits, got {refused:?}");
    };
    assert_eq!(weight, weight_of(&uncapped, 5_000));
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

// ---------------------------------------------------------------------------------------------
// Keys: agents and models.

#[tokio::test]
async fn agents_are_limited_independently() {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut service = ServiceBuilder::new()
        .layer(
            RateLimitLayer::with_clock(FakeRelativeClock::default())
                .agent_rpm("researcher", 1)
                .agent_rpm("writer", 2)
                .default_agent_rpm(1),
        )
        .service(provider(&calls));

    call(&mut service, Some("researcher"), light())
        .await
        .unwrap();
    let refused = call(&mut service, Some("researcher"), light())
        .await
        .unwrap_err();
    assert_eq!(limited(&refused).0, &agent("researcher"));

    // The writer has a rate of its own.
    call(&mut service, Some("writer"), light()).await.unwrap();
    call(&mut service, Some("writer"), light()).await.unwrap();
    let refused = call(&mut service, Some("writer"), light())
        .await
        .unwrap_err();
    assert_eq!(limited(&refused).0, &agent("writer"));

    // Agents without a rate of their own each get the default rate, in a bucket of their own.
    call(&mut service, Some("critic"), light()).await.unwrap();
    call(&mut service, Some("planner"), light()).await.unwrap();
    call(&mut service, None, light()).await.unwrap();
    let refused = call(&mut service, Some("critic"), light())
        .await
        .unwrap_err();
    assert_eq!(limited(&refused).0, &agent("critic"));
    assert_eq!(calls.load(Ordering::SeqCst), 6);
}

#[cfg(feature = "openai")] // `Attributed<R>: LlmRequest` lives in the openai adapter
#[tokio::test]
async fn attribution_carried_by_the_request_is_the_key_outside_a_scope() {
    use budget_tower::Attributed;

    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let inner = tower::service_fn(move |_: Attributed<Ask>| {
        counter.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, Infallible>(()) }
    });
    let mut service = ServiceBuilder::new()
        .layer(RateLimitLayer::with_clock(FakeRelativeClock::default()).default_agent_rpm(1))
        .service(inner);
    let as_agent = |name: &str| Attributed::new(light(), Attribution::agent(name));

    send(&mut service, as_agent("a")).await.unwrap();
    send(&mut service, as_agent("b")).await.unwrap();
    let refused = send(&mut service, as_agent("a")).await.unwrap_err();
    assert_eq!(limited(&refused).0, &agent("a"));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn models_are_limited_across_agents() {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut service = ServiceBuilder::new()
        .layer(
            RateLimitLayer::with_clock(FakeRelativeClock::default())
                .model_rpm("gpt-4o", 1)
                .default_model_rpm(2),
        )
        .service(provider(&calls));
    let to = |model: &'static str| req(model, "Hello", Some(10));

    // One call to gpt-4o a minute, whoever makes it.
    call(&mut service, Some("a"), to("gpt-4o")).await.unwrap();
    let refused = call(&mut service, Some("b"), to("gpt-4o"))
        .await
        .unwrap_err();
    assert_eq!(limited(&refused).0, &model("gpt-4o"));
    assert_eq!(limited(&refused).1, LimitKind::Requests);

    // Other models: the default rate, each model on its own.
    call(&mut service, Some("a"), to("gpt-4o-mini"))
        .await
        .unwrap();
    call(&mut service, Some("b"), to("gpt-4o-mini"))
        .await
        .unwrap();
    call(&mut service, Some("a"), to("gpt-4.1")).await.unwrap();
    let refused = call(&mut service, Some("c"), to("gpt-4o-mini"))
        .await
        .unwrap_err();
    assert_eq!(limited(&refused).0, &model("gpt-4o-mini"));
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn model_token_limit_applies_with_the_agent_limits() {
    let calls = Arc::new(AtomicUsize::new(0));
    let w = weight_of(&light(), 0);
    let mut service = ServiceBuilder::new()
        .layer(
            RateLimitLayer::with_clock(FakeRelativeClock::default())
                .default_agent_rpm(10)
                .model_tpm("gpt-4o-mini", u32::try_from(2 * w).unwrap()),
        )
        .service(provider(&calls));
    call(&mut service, Some("a"), light()).await.unwrap();
    call(&mut service, Some("b"), light()).await.unwrap();
    let refused = call(&mut service, Some("c"), light()).await.unwrap_err();
    let (key, kind, _) = limited(&refused);
    assert_eq!((key, kind), (&model("gpt-4o-mini"), LimitKind::Tokens));
}

// ---------------------------------------------------------------------------------------------
// Never: heavier than the burst.

#[tokio::test(start_paused = true)]
async fn never_fits_under_both_policies_and_charges_nothing() {
    for policy in [Policy::Reject, Policy::Wait { max_wait: None }] {
        let calls = Arc::new(AtomicUsize::new(0));
        let mut service = ServiceBuilder::new()
            .layer(
                RateLimitLayer::new()
                    .agent_rpm("a", 1)
                    .agent_tpm("a", Rate::per_minute(100_000).burst(100))
                    .policy(policy),
            )
            .service(provider(&calls));
        let big = req("gpt-4o-mini", "hi", Some(150));
        let start = tokio::time::Instant::now();
        let refused = call(&mut service, Some("a"), big.clone())
            .await
            .unwrap_err();
        match refused {
            RateLimitError::NeverFits {
                key,
                kind,
                weight,
                capacity,
            } => {
                assert_eq!(key, agent("a"));
                assert_eq!(kind, LimitKind::Tokens);
                assert_eq!(weight, weight_of(&big, 0));
                assert_eq!(capacity, 100);
            }
            other => panic!("{policy:?}: expected NeverFits, got {other:?}"),
        }
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "{policy:?}: refused at once"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 0, "the provider never saw it");

        // Nothing was charged: the one request slot of the minute is still there.
        call(&mut service, Some("a"), req("gpt-4o-mini", "hi", Some(10)))
            .await
            .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}

#[tokio::test]
async fn weights_beyond_u32_and_zero_rates_never_fit() {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut service = ServiceBuilder::new()
        .layer(
            RateLimitLayer::with_clock(FakeRelativeClock::default())
                .default_agent_tpm(u32::MAX)
                .agent_rpm("blocked", 0),
        )
        .service(provider(&calls));

    let huge = req("gpt-4o-mini", "hi", Some(u64::MAX));
    let refused = call(&mut service, None, huge).await.unwrap_err();
    assert!(
        matches!(
            refused,
            RateLimitError::NeverFits {
                weight: u64::MAX,
                capacity: u32::MAX,
                ..
            }
        ),
        "{refused:?}"
    );

    let refused = call(&mut service, Some("blocked"), light())
        .await
        .unwrap_err();
    assert!(
        matches!(
            &refused,
            RateLimitError::NeverFits { kind: LimitKind::Requests, weight: 1, capacity: 0, key }
                if key == &agent("blocked")
        ),
        "{refused:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

// ---------------------------------------------------------------------------------------------
// Wait.

/// 600 a minute, one at a time: one call every 100 ms.
fn one_per_100ms() -> Rate {
    Rate::per_minute(600).burst(1)
}

#[tokio::test(start_paused = true)]
async fn wait_policy_sleeps_until_admitted() {
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = RateLimitLayer::new()
        .default_agent_rpm(one_per_100ms())
        .policy(Policy::Wait { max_wait: None });
    let mut service = ServiceBuilder::new().layer(layer).service(provider(&calls));

    let start = tokio::time::Instant::now();
    call(&mut service, None, light()).await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
    call(&mut service, None, light()).await.unwrap();
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(100) && waited <= Duration::from_millis(101),
        "waited {waited:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn concurrent_waiters_are_admitted_one_per_interval() {
    let calls = Arc::new(AtomicUsize::new(0));
    let service = ServiceBuilder::new()
        .layer(
            RateLimitLayer::new()
                .default_agent_rpm(one_per_100ms())
                .policy(Policy::Wait { max_wait: None }),
        )
        .service(provider(&calls));
    let start = tokio::time::Instant::now();
    let waits = futures::future::join_all((0..3).map(|_| {
        let mut service = service.clone();
        async move {
            call(&mut service, None, light()).await.unwrap();
            start.elapsed()
        }
    }))
    .await;
    let mut waits: Vec<u128> = waits.iter().map(Duration::as_millis).collect();
    waits.sort_unstable();
    assert_eq!(waits[0], 0);
    assert!((100..=101).contains(&waits[1]), "{waits:?}");
    assert!((200..=202).contains(&waits[2]), "{waits:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn wait_policy_refuses_at_once_beyond_max_wait() {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut service = ServiceBuilder::new()
        .layer(
            RateLimitLayer::new()
                .default_agent_rpm(one_per_100ms())
                .policy(Policy::Wait {
                    max_wait: Some(Duration::from_millis(50)),
                }),
        )
        .service(provider(&calls));
    call(&mut service, None, light()).await.unwrap();
    let start = tokio::time::Instant::now();
    let refused = call(&mut service, None, light()).await.unwrap_err();
    assert_eq!(limited(&refused).2, Duration::from_millis(100));
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "no sleep when the wait is known too long"
    );

    // Half-way through the interval, the remaining 50 ms are within the bound: it waits.
    tokio::time::sleep(Duration::from_millis(50)).await;
    call(&mut service, None, light()).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn wait_policy_works_on_a_real_clock() {
    // Real time, governor's default (quanta) clock: the one real wait of the suite, ~100 ms.
    let calls = Arc::new(AtomicUsize::new(0));
    let mut service = ServiceBuilder::new()
        .layer(
            RateLimitLayer::with_clock(DefaultClock::default())
                .default_agent_rpm(one_per_100ms())
                .policy(Policy::Wait {
                    max_wait: Some(Duration::from_secs(1)),
                }),
        )
        .service(provider(&calls));
    let start = std::time::Instant::now();
    call(&mut service, None, light()).await.unwrap();
    call(&mut service, None, light()).await.unwrap();
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(90) && waited < Duration::from_secs(1),
        "waited {waited:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

// ---------------------------------------------------------------------------------------------
// Sharing and composition.

#[tokio::test]
async fn clones_of_a_layer_share_its_limits() {
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = RateLimitLayer::with_clock(FakeRelativeClock::default()).default_agent_rpm(2);
    let debug = format!("{layer:?}");
    assert!(
        debug.contains("RateLimitLayer") && debug.contains("Reject"),
        "{debug}"
    );
    let mut first = ServiceBuilder::new()
        .layer(layer.clone())
        .service(provider(&calls));
    let mut second = ServiceBuilder::new().layer(layer).service(provider(&calls));
    call(&mut first, None, light()).await.unwrap();
    call(&mut second, None, light()).await.unwrap();
    assert!(call(&mut first, None, light()).await.is_err());
    assert!(call(&mut second.clone(), None, light()).await.is_err());
}

#[tokio::test]
async fn composes_inside_the_budget_layer() {
    let budget = no_limits();
    let calls = Arc::new(AtomicUsize::new(0));
    let mut service = ServiceBuilder::new()
        .layer(BudgetLayer::new(budget.clone()))
        .layer(RateLimitLayer::with_clock(FakeRelativeClock::default()).agent_rpm("a", 1))
        .service(provider(&calls));

    let reply = call(&mut service, Some("a"), light()).await.unwrap();
    assert_eq!(reply.usage().unwrap().output, 5);
    let refused = call(&mut service, Some("a"), light()).await.unwrap_err();
    match refused {
        BudgetLayerError::Inner(RateLimitError::Limited { key, .. }) => assert_eq!(key, agent("a")),
        other => panic!("expected a rate limit under the budget layer, got {other:?}"),
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // The sent call was committed; the refused one's reservation was released.
    assert_eq!(budget.ledger().len(), 1);
}

#[tokio::test]
async fn composes_outside_the_budget_layer() {
    let budget = no_limits();
    let calls = Arc::new(AtomicUsize::new(0));
    let mut service = ServiceBuilder::new()
        .layer(RateLimitLayer::with_clock(FakeRelativeClock::default()).default_agent_rpm(1))
        .layer(BudgetLayer::new(budget.clone()))
        .service(provider(&calls));

    call(&mut service, Some("a"), light()).await.unwrap();
    let refused: RateLimitError<BudgetLayerError<Infallible>> =
        call(&mut service, Some("a"), light()).await.unwrap_err();
    assert!(refused.retry_after().is_some());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(budget.ledger().len(), 1);
}

#[test]
fn the_default_layer_reads_tokio_time() {
    // The type parameter defaults to `TokioClock`; it is the clock `Policy::Wait` sleeps on.
    let _: RateLimitLayer<TokioClock> = RateLimitLayer::new();
    assert_eq!(Policy::default(), Policy::Reject);
}
