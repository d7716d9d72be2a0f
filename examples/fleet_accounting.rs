//! A fleet of agents of the users' five planned types, working concurrently under their preset
//! budgets, while one research agent loops without end and is stopped by its per-task budget.
//!
//! Every prompt is counted exactly with the model's tokenizer, every call reserves its
//! estimate before it is made and commits what was used, and the report at the end is read
//! back from the ledger and the budget's status.
//!
//! The provider here is a deterministic stand-in that writes a reply of a length the call
//! allows (its tokens counted with the real tokenizer); the next release runs the same fleet
//! through async-openai against the project's local OpenAI-compatible server.
//!
//! Run: `cargo run --example fleet_accounting`

use std::collections::BTreeMap;
use std::time::Instant;

use token_budget::ledger::{Dimension, LedgerQuery, RankBy};
use token_budget::limits::Scope;
use token_budget::presets::AgentPreset;
use token_budget::{
    Attribution, Budget, BudgetError, ChatMessage, Estimate, Ledger, Limit, Money, Period,
    Selector, TaskId, ThresholdCrossing, Usage, Window, count_chat, count_text,
};

/// One agent of the fleet.
struct AgentSpec {
    name: &'static str,
    preset: AgentPreset,
    model: &'static str,
    /// Tokens one task may use.
    task_limit: u64,
    tasks: u32,
    steps_per_task: u32,
    max_output: u64,
    system: &'static str,
}

const FLEET: [AgentSpec; 5] = [
    AgentSpec {
        name: "support-bot",
        preset: AgentPreset::CustomerSupport,
        model: "gpt-4o-mini",
        task_limit: 8_000,
        tasks: 40,
        steps_per_task: 3,
        max_output: 300,
        system: "You are a courteous customer support agent for an online bookshop. Answer briefly, cite the order number, and escalate refunds above $200.",
    },
    AgentSpec {
        name: "researcher",
        preset: AgentPreset::Research,
        model: "gpt-4o",
        task_limit: 60_000,
        tasks: 8,
        steps_per_task: 6,
        max_output: 1_200,
        system: "You are a research analyst. Read the sources, extract claims with citations, and flag contradictions between sources.",
    },
    AgentSpec {
        name: "coder",
        preset: AgentPreset::CodeGeneration,
        model: "claude-3-5-sonnet",
        task_limit: 80_000,
        tasks: 6,
        steps_per_task: 5,
        max_output: 2_000,
        system: "You are a senior Rust engineer. Write small, tested functions; explain the design in two sentences.",
    },
    AgentSpec {
        name: "analyst",
        preset: AgentPreset::DataAnalysis,
        model: "gpt-4.1-mini",
        task_limit: 30_000,
        tasks: 10,
        steps_per_task: 4,
        max_output: 800,
        system: "You are a data analyst. Given CSV extracts, compute the requested aggregates and describe anomalies.",
    },
    AgentSpec {
        name: "ops-tooling",
        preset: AgentPreset::InternalTooling,
        model: "claude-3-haiku",
        task_limit: 5_000,
        tasks: 30,
        steps_per_task: 2,
        max_output: 200,
        system: "You turn operator requests into shell commands for the deploy tool. Output one command per line.",
    },
];

/// The agent that never stops on its own.
const RUNAWAY: &str = "researcher-loop";
const RUNAWAY_TASK_LIMIT: u64 = 50_000;

const WORDS: [&str; 24] = [
    "the",
    "budget",
    "agent",
    "source",
    "claim",
    "refund",
    "order",
    "latency",
    "cache",
    "model",
    "context",
    "summary",
    "because",
    "therefore",
    "however",
    "token",
    "request",
    "result",
    "analysis",
    "revenue",
    "deploy",
    "schema",
    "retry",
    "customer",
];

/// Deterministic stand-in text of about `words` words.
fn text(seed: u64, words: u64) -> String {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = String::new();
    for i in 0..words {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push_str(WORDS[(x % WORDS.len() as u64) as usize]);
        out.push(if i % 12 == 11 { '.' } else { ' ' });
    }
    out
}

/// The stand-in provider: replies with up to `max_output` tokens, counted with the tokenizer.
fn reply(model: &str, seed: u64, max_output: u64) -> (String, u64) {
    let words = 20 + seed % (max_output.max(1) * 2 / 3 + 1);
    let mut body = text(seed, words);
    let mut tokens = count_text(model, &body).tokens;
    while tokens > max_output && !body.is_empty() {
        body.truncate(body.len() * 3 / 4);
        tokens = count_text(model, &body).tokens;
    }
    (body, tokens)
}

#[derive(Default)]
struct Outcome {
    calls: u64,
    clamped: u64,
    stopped_by: Option<String>,
    alerts: Vec<String>,
}

fn note_alerts(out: &mut Outcome, crossings: &[ThresholdCrossing]) {
    for c in crossings {
        out.alerts
            .push(format!("{} reached {}%", c.limit.id, c.threshold));
    }
}

/// What one task does.
struct TaskPlan<'a> {
    model: &'a str,
    system: &'a str,
    /// `None`: loop until the budget refuses.
    steps: Option<u32>,
    max_output: u64,
    seed: u64,
}

/// Runs one task: a conversation of `steps` turns, each a budgeted call.
async fn run_task(
    budget: &Budget,
    who: &Attribution,
    plan: &TaskPlan<'_>,
    out: &mut Outcome,
) -> Result<(), BudgetError> {
    let TaskPlan {
        model: spec_model,
        system,
        steps,
        max_output,
        seed,
    } = *plan;
    let mut history: Vec<(String, String)> = Vec::new();
    let mut step = 0u32;
    loop {
        if steps.is_some_and(|s| step >= s) {
            return Ok(());
        }
        step += 1;
        let who = who.clone().with_step(step);
        let question = text(
            seed * 1_000 + u64::from(step),
            40 + (seed + u64::from(step)) % 60,
        );
        let mut messages = vec![ChatMessage::system(system)];
        for (q, a) in &history {
            messages.push(ChatMessage::user(q));
            messages.push(ChatMessage::assistant(a));
        }
        messages.push(ChatMessage::user(&question));
        let prompt = count_chat(spec_model, &messages, None);

        // Clamp the output cap to what the budget still allows, then reserve it.
        let remaining = budget.remaining(&who, spec_model, prompt.tokens).await?;
        let cap = remaining
            .max_output_tokens
            .map_or(max_output, |m| m.min(max_output));
        if cap < max_output {
            out.clamped += 1;
        }
        let held = budget
            .reserve(&who, spec_model, Estimate::new(prompt.tokens, cap.max(1)))
            .await?;
        let (answer, output_tokens) = reply(spec_model, seed ^ u64::from(step) << 20, cap.max(1));
        // Claude models' prompt counts are labelled estimates: the ledger keeps the flag.
        let usage = Usage::new(prompt.tokens, output_tokens);
        let done = held
            .commit_with(
                usage,
                token_budget::CommitDetails {
                    estimated: prompt.estimated,
                    ..Default::default()
                },
            )
            .await?;
        out.calls += 1;
        note_alerts(out, &done.crossings);
        history.push((question, answer));
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let started = Instant::now();
    let mut limits = vec![
        Limit::new("fleet/day", Selector::Global, Window::Calendar(Period::Day))
            .tokens(6_000_000)
            .money(Money::from_dollars(40))
            .alert_at(&[70, 90]),
        Limit::new("per-task", Selector::Agent(Scope::Each), Window::PerTask)
            .tokens(RUNAWAY_TASK_LIMIT)
            .alert_at(&[90]),
    ];
    for spec in &FLEET {
        limits.extend(spec.preset.limits(spec.name));
        limits.push(
            Limit::new(
                format!("{}/task", spec.name),
                Selector::agent(spec.name),
                Window::PerTask,
            )
            .tokens(spec.task_limit),
        );
    }
    limits.extend(AgentPreset::Research.limits(RUNAWAY));
    let budget = Budget::builder().limits(limits).build()?;
    token_budget::Encoding::warm_up();

    println!(
        "token-budget: a fleet of {} agents plus one runaway, on budget-core",
        FLEET.len()
    );
    println!();

    let mut handles = Vec::new();
    for (i, spec) in FLEET.iter().enumerate() {
        let budget = budget.clone();
        handles.push(tokio::spawn(async move {
            let mut out = Outcome::default();
            for t in 0..spec.tasks {
                let task = TaskId::new(format!("{}-{t}", spec.name));
                let who = Attribution::agent(spec.name)
                    .with_task(task.clone())
                    .with_user(format!("customer-{}", (t + i as u32) % 7))
                    .with_tag("agent_type", spec.preset.label());
                let seed = (i as u64) << 32 | u64::from(t);
                let plan = TaskPlan {
                    model: spec.model,
                    system: spec.system,
                    steps: Some(spec.steps_per_task),
                    max_output: spec.max_output,
                    seed,
                };
                if let Err(e) = run_task(&budget, &who, &plan, &mut out).await {
                    out.stopped_by = Some(e.to_string());
                }
                budget.finish_task(&task);
                tokio::task::yield_now().await;
            }
            (spec.name, out)
        }));
    }
    let runaway = {
        let budget = budget.clone();
        tokio::spawn(async move {
            let mut out = Outcome::default();
            let task = TaskId::new("researcher-loop-0");
            let who = Attribution::agent(RUNAWAY)
                .with_task(task.clone())
                .with_user("customer-0")
                .with_tag("agent_type", "Research Agent");
            // No step limit: this agent would loop forever. Its per-task budget stops it.
            let plan = TaskPlan {
                model: "gpt-4o",
                system: "You are a research agent. Keep searching until you are certain.",
                steps: None,
                max_output: 1_500,
                seed: 99,
            };
            let err = run_task(&budget, &who, &plan, &mut out)
                .await
                .expect_err("the loop only ends when the budget refuses");
            out.stopped_by = Some(err.to_string());
            (RUNAWAY, out)
        })
    };
    let mut outcomes = BTreeMap::new();
    for h in handles {
        let (name, out) = h.await?;
        outcomes.insert(name, out);
    }
    let (name, out) = runaway.await?;
    outcomes.insert(name, out);

    report(&budget, &outcomes).await?;
    println!();
    println!("finished in {:.1?}", started.elapsed());
    Ok(())
}

async fn report(
    budget: &Budget,
    outcomes: &BTreeMap<&'static str, Outcome>,
) -> Result<(), Box<dyn std::error::Error>> {
    let by_agent = budget
        .ledger()
        .totals(&LedgerQuery::group_by([Dimension::Agent]))
        .await?;
    let status = budget.status().await?;
    let denials = budget.denials();
    let percent = |id: String| {
        status
            .iter()
            .find(|s| *s.limit.id == *id)
            .map_or("-".to_string(), |s| format!("{}%", s.percent_used()))
    };

    println!(
        "{:<16} {:>6} {:>10} {:>9} {:>10} {:>11} {:>9} {:>9} {:>7} {:>8}",
        "agent",
        "calls",
        "input",
        "output",
        "total",
        "cost",
        "day %",
        "month $%",
        "denied",
        "clamped"
    );
    println!("{}", "-".repeat(104));
    for group in &by_agent {
        let agent = group.key[0].to_string();
        let out = outcomes.get(agent.as_str());
        let denied = denials
            .get(agent.as_str())
            .map_or(0, |d| d.exhausted + d.exceeds_limit);
        println!(
            "{:<16} {:>6} {:>10} {:>9} {:>10} {:>11.4} {:>9} {:>9} {:>7} {:>8}",
            agent,
            group.events,
            group.usage.input,
            group.usage.output,
            group.usage.total(),
            group.cost,
            percent(format!("{agent}/daily-tokens")),
            percent(format!("{agent}/monthly-cost")),
            denied,
            out.map_or(0, |o| o.clamped),
        );
    }
    let all = budget.ledger().totals(&LedgerQuery::default()).await?;
    if let Some(t) = all.first() {
        println!("{}", "-".repeat(104));
        println!(
            "{:<16} {:>6} {:>10} {:>9} {:>10} {:>11.4} {:>9}",
            "fleet",
            t.events,
            t.usage.input,
            t.usage.output,
            t.usage.total(),
            t.cost,
            percent("fleet/day".into()),
        );
        println!(
            "  {} of {} calls have estimated prompt counts (non-OpenAI models are counted with o200k and labelled)",
            t.estimated_events, t.events
        );
    }

    println!();
    println!("What's costing the most (by model):");
    let by_model = budget
        .ledger()
        .top(&LedgerQuery::group_by([Dimension::Model]), RankBy::Cost, 5)
        .await?;
    for g in by_model {
        println!(
            "  {:<20} {:>11.4}  {:>10} tokens",
            g.key[0].to_string(),
            g.cost,
            g.usage.total()
        );
    }

    println!();
    println!("Stopped agents and alerts:");
    for (agent, out) in outcomes {
        if let Some(reason) = &out.stopped_by {
            println!("  {agent} stopped after {} calls: {reason}", out.calls);
        }
        let mut alerts = out.alerts.clone();
        alerts.dedup();
        for a in alerts {
            println!("  alert ({agent}): {a}");
        }
    }
    let runaway_steps = budget
        .ledger()
        .totals(&LedgerQuery::group_by([Dimension::Step]).filter(
            Dimension::Agent,
            token_budget::ledger::KeyPart::text(RUNAWAY),
        ))
        .await?;
    let spent: u64 = runaway_steps.iter().map(|g| g.usage.total()).sum();
    println!(
        "  {RUNAWAY}: {} steps, {spent} tokens against a {RUNAWAY_TASK_LIMIT}-token task budget (never exceeded by a reservation)",
        runaway_steps.len()
    );
    Ok(())
}
