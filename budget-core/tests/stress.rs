//! Hard limits under contention: 8 threads × 100,000 random operations.
//!
//! Each thread reserves random estimates against shared and per-agent hard limits, and settles
//! them at random: commit below the estimate, commit *above* it (a provider ignoring the output
//! cap), release, or drop. A monitor thread samples every counter meanwhile. We check that:
//!
//! - reservations never take a hard counter past its cap: `admitted + reserved ≤ cap` in every
//!   sample (overshoot — usage above a reservation — is committed and reported, but it is not a
//!   reservation crossing the limit);
//! - at the end nothing is reserved, and every counter's committed total and the ledger's totals
//!   equal the sum of what the threads committed, to the token and to the yocto-dollar;
//! - contention really happened: threads found the store's lock taken, and budgets ran out.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use budget_core::clock::FakeClock;
use budget_core::ledger::{Dimension, LedgerQuery};
use budget_core::store::CounterUsage;
use budget_core::{
    Attribution, Budget, BudgetError, Estimate, Ledger, Limit, Money, Period, Selector, TaskId,
    Usage, Window,
};
use common::{Rng, ready};

const THREADS: u64 = 8;
const OPS_PER_THREAD: u64 = 100_000;
const AGENTS: [&str; 3] = ["planner", "researcher", "writer"];

fn limits() -> Vec<Limit> {
    let mut limits = vec![
        Limit::new(
            "global/day",
            Selector::Global,
            Window::Calendar(Period::Day),
        )
        .tokens(400_000_000)
        .money(Money::from_dollars(800)),
    ];
    for agent in AGENTS {
        limits.push(
            Limit::new(
                format!("{agent}/day"),
                Selector::agent(agent),
                Window::Calendar(Period::Day),
            )
            .tokens(150_000_000),
        );
    }
    // The daily caps run out part-way through the run; before that, a small per-task cap that
    // every thread's task hits again and again keeps denials coming.
    limits.push(
        Limit::new(
            "task",
            Selector::Agent(budget_core::limits::Values::Each),
            Window::PerTask,
        )
        .tokens(40_000),
    );
    limits
}

/// Checks the reservation invariant on one sample of every counter.
fn check_sample(budget: &Budget, violations: &AtomicU64) {
    let caps: std::collections::HashMap<_, _> = budget
        .limits()
        .iter()
        .map(|l| (l.id.clone(), l.cap))
        .collect();
    let snapshot = ready(budget_core::BudgetStore::snapshot(
        budget.store(),
        budget.now(),
    ))
    .unwrap();
    for (key, usage) in snapshot {
        let cap = caps[&key.limit];
        let held = usage.admitted.saturating_add(usage.reserved);
        if cap.tokens.is_some_and(|c| held.tokens > c) || cap.money.is_some_and(|c| held.money > c)
        {
            violations.fetch_add(1, Ordering::Relaxed);
            eprintln!("limit crossed by reservations: {key:?} {usage:?} cap {cap:?}");
        }
    }
}

#[test]
fn hard_limits_hold_and_totals_are_exact_under_contention() {
    let clock = FakeClock::at("2026-11-29T12:00:00Z".parse().unwrap());
    let budget = Budget::builder()
        .clock(clock)
        .limits(limits())
        .build()
        .unwrap();
    let violations = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));

    let monitor = {
        let (budget, violations, stop) = (budget.clone(), violations.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut samples = 0u64;
            while !stop.load(Ordering::Relaxed) {
                check_sample(&budget, &violations);
                samples += 1;
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
            samples
        })
    };

    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let budget = budget.clone();
            std::thread::spawn(move || {
                let mut rng = Rng::new(0x5eed + t);
                let agent = AGENTS[(t % 3) as usize];
                let mut task_no = 0u64;
                let mut who = Attribution::agent(agent).with_task(TaskId::new(format!("{t}-0")));
                let mut held = Vec::new();
                let (mut tokens, mut cost, mut denied, mut overshoots) =
                    (0u64, Money::ZERO, 0u64, 0u64);
                for _ in 0..OPS_PER_THREAD {
                    // Start a fresh task now and then (its per-task counter starts empty).
                    if rng.below(60) == 0 {
                        budget.finish_task(who.task().unwrap());
                        task_no += 1;
                        who = Attribution::agent(agent)
                            .with_task(TaskId::new(format!("{t}-{task_no}")));
                    }
                    if held.len() < 4 && rng.below(2) == 0 {
                        let model = if rng.below(2) == 0 {
                            "gpt-4o"
                        } else {
                            "gpt-4o-mini"
                        };
                        let input = rng.below(3_000);
                        let wanted = rng.below(2_000);
                        // A third of the calls let the budget clamp their output cap.
                        let result = if rng.below(3) == 0 {
                            ready(budget.reserve_output(&who, model, input, 1.min(wanted)..=wanted))
                        } else {
                            ready(budget.reserve(&who, model, Estimate::new(input, wanted)))
                        };
                        match result {
                            Ok(r) => {
                                let estimate = Estimate::new(input, r.granted_output());
                                held.push((r, estimate))
                            }
                            Err(BudgetError::Exhausted(_) | BudgetError::ExceedsLimit(_)) => {
                                denied += 1
                            }
                            Err(e) => panic!("unexpected error: {e}"),
                        }
                        continue;
                    }
                    if held.is_empty() {
                        continue;
                    }
                    let (reservation, estimate) =
                        held.swap_remove(rng.below(held.len() as u64) as usize);
                    match rng.below(10) {
                        0 => reservation.release(),
                        1 => drop(reservation),
                        n => {
                            let output = if n == 2 {
                                overshoots += 1;
                                estimate.max_output_tokens + 1 + rng.below(500)
                            } else {
                                rng.below(estimate.max_output_tokens + 1)
                            };
                            let usage = Usage::new(estimate.input_tokens, output);
                            let done = ready(reservation.commit(usage)).unwrap();
                            tokens += done.event.usage.total();
                            cost += done.event.cost;
                        }
                    }
                }
                drop(held); // outstanding reservations are released by Drop
                budget.finish_task(who.task().unwrap());
                (tokens, cost, denied, overshoots)
            })
        })
        .collect();

    let (mut tokens, mut cost, mut denied, mut overshoots) = (0u64, Money::ZERO, 0u64, 0u64);
    for w in workers {
        let (t, c, d, o) = w.join().unwrap();
        tokens += t;
        cost += c;
        denied += d;
        overshoots += o;
    }
    stop.store(true, Ordering::Relaxed);
    let samples = monitor.join().unwrap();
    check_sample(&budget, &violations);

    assert_eq!(
        violations.load(Ordering::Relaxed),
        0,
        "a hard limit was crossed by reservations"
    );
    assert!(samples > 10, "the monitor sampled only {samples} times");
    let contended = budget.store().contended();
    assert!(
        contended > 100,
        "threads never collided on the store ({contended}): not a stress test"
    );
    assert!(
        denied > 1_000,
        "budgets were never under pressure ({denied} denials)"
    );
    assert!(overshoots > 1_000);

    // Nothing is left reserved, and the counters hold exactly what was committed.
    let snapshot = ready(budget_core::BudgetStore::snapshot(
        budget.store(),
        budget.now(),
    ))
    .unwrap();
    let global: CounterUsage = snapshot
        .iter()
        .find(|(k, _)| &*k.limit == "global/day")
        .map(|(_, u)| *u)
        .unwrap();
    assert!(
        snapshot
            .iter()
            .all(|(_, u)| u.reserved.is_zero() && u.in_flight == 0),
        "{snapshot:?}"
    );
    assert_eq!(global.committed.tokens, tokens);
    assert_eq!(global.committed.money, cost);
    let per_agent: u64 = snapshot
        .iter()
        .filter(|(k, _)| k.limit.ends_with("/day") && &*k.limit != "global/day")
        .map(|(_, u)| u.committed.tokens)
        .sum();
    assert_eq!(per_agent, tokens);

    // The ledger agrees to the token and to the yocto-dollar.
    let all = ready(budget.ledger().totals(&LedgerQuery::default())).unwrap();
    assert_eq!(all[0].usage.total(), tokens);
    assert_eq!(all[0].cost, cost);
    let by_agent = ready(
        budget
            .ledger()
            .totals(&LedgerQuery::group_by([Dimension::Agent])),
    )
    .unwrap();
    assert_eq!(by_agent.iter().map(|g| g.cost).sum::<Money>(), cost);
    println!(
        "committed {tokens} tokens / {cost} in {} events; {denied} denials, {overshoots} overshoots, \
         {contended} contended lock acquisitions, {samples} monitor samples",
        all[0].events
    );
}
