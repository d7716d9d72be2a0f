//! The main job: a fleet of agents of the five planned types, working concurrently through the
//! real async-openai client and the token-budget layer stack against the project's local
//! OpenAI-compatible server — while one research agent loops without end until its task
//! budget stops it, and one agent talks to a provider that ignores its output cap and has its
//! streams cut at the granted token.
//!
//! Run: `cargo run --example fleet`
//!
//! Everything is real but the model: HTTP on loopback, SSE streams, exact token counts from
//! the tokenizer, integer money, the budget reserved before each call and committed from the
//! provider's reported usage. The report at the end is read back from the ledger and the
//! budget's status, and checked against what the server says it received.
//!
//! The budget's limits (the users' planning presets, a fleet-wide day, a budget per task) are
//! read from `examples/fleet.yaml` through `token_budget::config::Config`.
//!
//! The ledger is chosen by configuration: by default the embedded SQLite file at
//! `token_budget::ledger::default_ledger_path()` (under `$TOKEN_BUDGET_HOME`, else
//! `$XDG_DATA_HOME/token-budget`, else `~/.local/share/token-budget`), which keeps the events of
//! every run; `TOKEN_BUDGET_LEDGER=memory:` (or a file path, or a `postgres://` URL) picks
//! another. Each run tags its events with its own run id and reports on those only, so every
//! run prints the same tables however much history the file holds.
//!
//! The budget store is chosen the same way: `TOKEN_BUDGET_STORE=redis://127.0.0.1:6379/0` puts
//! the counters in Redis, shared with every other process on that prefix (add `?allowance=true`
//! to admit calls locally against allowances taken from Redis; by default, this process's
//! memory).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_openai::config::OpenAIConfig;
use async_openai::types::chat::{
    ChatCompletionRequestAssistantMessageArgs, ChatCompletionRequestMessage,
    ChatCompletionRequestSystemMessageArgs, ChatCompletionRequestUserMessageArgs,
    CreateChatCompletionRequest, CreateChatCompletionRequestArgs,
};
use futures::StreamExt;
use jiff::Timestamp;
use token_budget::compress::CompressConfig;
use token_budget::config::Config;
use token_budget::layers::cache::DeterministicKey;
use token_budget::layers::local_server::{Behavior, LocalServer, RunningServer};
use token_budget::layers::openai::{ChatReply, ChatStreamError, OpenAiService};
use token_budget::layers::rate_limit::Policy;
use token_budget::ledger::{Dimension, KeyPart, LedgerError, LedgerQuery, RankBy};
use token_budget::presets::AgentPreset;
use token_budget::scope::TaskScope;
use token_budget::{
    AnyLedger, Attribution, BudgetLayerError, BudgetStack, CompressLayer, CompressLayerError,
    CompressService, Cutoff, EventKind, Ledger, Money, RateLimitLayer, RouteService,
    ServiceBuilderExt, TaskId,
};
use tower::{Service, ServiceBuilder, ServiceExt};

/// One agent of the fleet.
struct AgentSpec {
    name: &'static str,
    preset: AgentPreset,
    model: &'static str,
    tasks: u32,
    steps_per_task: u32,
    max_output: u32,
    stream: bool,
    /// Opens each task with one of a few frequently asked questions, deterministically
    /// (temperature 0): the response cache can answer repeats.
    faq: bool,
    system: &'static str,
}

const FLEET: [AgentSpec; 5] = [
    AgentSpec {
        name: "support-bot",
        preset: AgentPreset::CustomerSupport,
        // Asks for the big model for everything (an anti-pattern the router corrects).
        model: "gpt-4o",
        tasks: 24,
        steps_per_task: 3,
        max_output: 150,
        stream: false,
        faq: true,
        system: "You are a courteous support agent for an online bookshop. Answer briefly and cite the order number.",
    },
    AgentSpec {
        name: "researcher",
        preset: AgentPreset::Research,
        model: "gpt-4o",
        tasks: 6,
        steps_per_task: 5,
        max_output: 600,
        stream: true,
        faq: false,
        system: "You are a research analyst. Extract claims with citations and flag contradictions between sources.",
    },
    AgentSpec {
        name: "coder",
        preset: AgentPreset::CodeGeneration,
        model: "gpt-4.1",
        tasks: 5,
        steps_per_task: 4,
        max_output: 900,
        stream: false,
        faq: false,
        system: "You are a senior Rust engineer. Write small, tested functions and explain the design briefly.",
    },
    AgentSpec {
        name: "analyst",
        preset: AgentPreset::DataAnalysis,
        model: "gpt-4.1-mini",
        tasks: 8,
        steps_per_task: 3,
        max_output: 400,
        stream: true,
        faq: false,
        system: "You are a data analyst. Compute the requested aggregates from CSV extracts and describe anomalies.",
    },
    AgentSpec {
        name: "ops-tooling",
        preset: AgentPreset::InternalTooling,
        model: "gpt-4o-mini",
        tasks: 16,
        steps_per_task: 2,
        max_output: 120,
        stream: false,
        faq: false,
        system: "You turn operator requests into commands for the deploy tool, one per line.",
    },
];

/// The agent that never stops by itself.
const RUNAWAY: &str = "researcher-loop";
/// The agent whose provider ignores the output cap.
const OVERRUN: &str = "summariser";

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
    "report",
    "revenue",
    "deploy",
    "schema",
    "retry",
    "customer",
];

/// Deterministic user text of `words` words.
fn text(seed: u64, words: u64) -> String {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..words)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            WORDS[(x % WORDS.len() as u64) as usize]
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[derive(Default)]
struct Outcome {
    calls: u64,
    cutoffs: u64,
    stopped: Option<String>,
}

type Store = token_budget::store::AnyBudgetStore;
/// The ledger named by `TOKEN_BUDGET_LEDGER`, by default the embedded SQLite file.
type Books = AnyLedger;
type Budget = token_budget::Budget<Store, Books>;
type CacheLayer = token_budget::CacheLayer<Store, Books>;
type RouteLayer = token_budget::RouteLayer<Store, Books>;

/// The tag every event of this run carries, so that the report can tell this run's events
/// from the history a persistent ledger holds.
const RUN_TAG: &str = "run";

/// This run: its id (the value of the [`RUN_TAG`] tag) and when it started.
#[derive(Clone)]
struct Run {
    id: Arc<str>,
    started: Timestamp,
}

impl Run {
    fn new() -> Run {
        let started = Timestamp::now();
        Run {
            id: format!(
                "fleet-{}-{}",
                started.strftime("%Y%m%dT%H%M%S%.3fZ"),
                std::process::id()
            )
            .into(),
            started,
        }
    }

    /// The attribution of one of this run's tasks.
    fn who(&self, agent: &str) -> Attribution {
        Attribution::agent(agent).with_tag(RUN_TAG, self.id.clone())
    }

    /// `group_by` over this run's events only (its tag; its time range lets a SQL ledger use
    /// its time index).
    fn query(&self, group_by: impl IntoIterator<Item = Dimension>) -> LedgerQuery {
        LedgerQuery {
            since: Some(self.started),
            ..LedgerQuery::group_by(group_by)
        }
        .filter(
            Dimension::Tag(RUN_TAG.into()),
            KeyPart::Text(self.id.clone()),
        )
    }
}

/// cache -> route -> compress -> budget -> rate limit -> provider (the architecture's order).
type Stack = token_budget::layers::cache::CacheService<
    RouteService<
        CompressService<
            token_budget::BudgetService<
                token_budget::RateLimitService<OpenAiService>,
                Store,
                Books,
            >,
            Store,
            Books,
        >,
        Store,
        Books,
    >,
    Store,
    Books,
    DeterministicKey,
>;

/// One budgeted chat call; returns the reply text, or why the call or its stream was stopped.
async fn chat(
    stack: &mut Stack,
    request: CreateChatCompletionRequest,
    outcome: &mut Outcome,
) -> Result<String, String> {
    let service = ServiceExt::<CreateChatCompletionRequest>::ready(stack)
        .await
        .map_err(|e| e.to_string())?;
    let reply = match service.call(request).await {
        Ok(reply) => reply,
        Err(CompressLayerError::Inner(BudgetLayerError::Budget(refused))) => {
            return Err(refused.to_string());
        }
        Err(cannot @ CompressLayerError::CannotFit { .. }) => return Err(cannot.to_string()),
        Err(other) => return Err(format!("provider: {other}")),
    };
    outcome.calls += 1;
    match reply {
        ChatReply::Complete(response) => Ok(response
            .choices
            .first()
            .and_then(|c| c.message.content.clone())
            .unwrap_or_default()),
        ChatReply::Stream(mut stream) => {
            let mut text = String::new();
            while let Some(item) = stream.next().await {
                match item {
                    Ok(chunk) => {
                        for choice in &chunk.choices {
                            text.push_str(choice.delta.content.as_deref().unwrap_or_default());
                        }
                    }
                    Err(ChatStreamError::Cutoff(cut @ Cutoff::OverGrant { .. })) => {
                        outcome.cutoffs += 1;
                        outcome.stopped.get_or_insert_with(|| cut.to_string());
                        break;
                    }
                    Err(e) => return Err(e.to_string()),
                }
            }
            Ok(text)
        }
    }
}

fn build_request(
    model: &str,
    system: &str,
    history: &[(String, String)],
    question: &str,
    max_output: u32,
    stream: bool,
    deterministic: bool,
) -> CreateChatCompletionRequest {
    let mut messages: Vec<ChatCompletionRequestMessage> = vec![
        ChatCompletionRequestSystemMessageArgs::default()
            .content(system)
            .build()
            .expect("system message")
            .into(),
    ];
    for (q, a) in history {
        messages.push(
            ChatCompletionRequestUserMessageArgs::default()
                .content(q.as_str())
                .build()
                .expect("user message")
                .into(),
        );
        messages.push(
            ChatCompletionRequestAssistantMessageArgs::default()
                .content(a.as_str())
                .build()
                .expect("assistant message")
                .into(),
        );
    }
    messages.push(
        ChatCompletionRequestUserMessageArgs::default()
            .content(question)
            .build()
            .expect("user message")
            .into(),
    );
    let mut args = CreateChatCompletionRequestArgs::default();
    args.model(model)
        .messages(messages)
        .max_completion_tokens(max_output);
    if stream {
        args.stream(true);
    }
    if deterministic {
        args.temperature(0.0);
    }
    args.build().expect("request")
}

/// What one task does.
struct TaskPlan {
    model: &'static str,
    system: &'static str,
    /// `None`: loop until the budget refuses.
    steps: Option<u32>,
    max_output: u32,
    stream: bool,
    faq: bool,
    seed: u64,
}

/// Questions support customers ask again and again.
const FAQ: [&str; 4] = [
    "Where is my order? It was due yesterday.",
    "How do I return a book I did not like?",
    "Can I change the delivery address of an order?",
    "Do you ship to other countries?",
];

/// Runs one task, a conversation of budgeted calls, inside the current task scope.
async fn run_task(mut stack: Stack, plan: TaskPlan, outcome: &mut Outcome) {
    let TaskPlan {
        model,
        system,
        steps,
        max_output,
        stream,
        faq,
        seed,
    } = plan;
    let scope = TaskScope::current().expect("tasks run in a scope");
    let mut history: Vec<(String, String)> = Vec::new();
    loop {
        if steps.is_some_and(|s| scope.step() >= s) {
            return;
        }
        let step = scope.next_step();
        let from_faq = faq && step == 1;
        let question = if from_faq {
            FAQ[(seed % FAQ.len() as u64) as usize].to_owned()
        } else if model == "gpt-4o" && step % 2 == 0 {
            // Every second step of a gpt-4o agent is a hard question the router keeps there.
            let topic = text(seed * 1_000 + u64::from(step), 20);
            format!("Analyse step by step why {topic}")
        } else {
            text(
                seed * 1_000 + u64::from(step),
                30 + (seed + u64::from(step)) % 50,
            )
        };
        let request = build_request(
            model, system, &history, &question, max_output, stream, from_faq,
        );
        match chat(&mut stack, request, outcome).await {
            Ok(answer) => history.push((question, answer)),
            Err(why) => {
                outcome.stopped = Some(format!("step {step}: {why}"));
                return;
            }
        }
    }
}

fn research_compression() -> CompressConfig {
    CompressConfig {
        pressure: vec![(15, 2_500)],
        ..CompressConfig::default()
    }
}

fn stack(
    budget: &Budget,
    server: &RunningServer,
    rates: &RateLimitLayer,
    cache: &CacheLayer,
    router: &RouteLayer,
) -> Stack {
    let provider = OpenAiService::new(
        OpenAIConfig::new()
            .with_api_base(server.base_url())
            .with_api_key("local"),
    );
    // The stack builds the layers in their one working order: cache, route, compress,
    // budget, rate limit.
    let compress = CompressLayer::new(budget.clone())
        .summarise_with("gpt-4o-mini")
        // Research conversations grow fastest: keep them short once 15% of the task's
        // budget is gone (the default waits for 70% and 90%).
        .agent_config("researcher", research_compression())
        .agent_config(RUNAWAY, research_compression());
    ServiceBuilder::new()
        .budget_stack(
            BudgetStack::new(budget)
                .cache(cache.clone())
                .route(router.clone())
                .compress(compress)
                .rate_limit(rates.clone()),
        )
        .service(provider)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let started = Instant::now();
    let run = Run::new();
    let ledger = match AnyLedger::from_env().await {
        Ok(ledger) => ledger,
        Err(e) => {
            eprintln!("cannot open the ledger: {e}");
            std::process::exit(2);
        }
    };
    let store = match open_store(&run).await {
        Ok(store) => store,
        Err(e) => {
            eprintln!("cannot open the budget store: {e}");
            std::process::exit(2);
        }
    };
    token_budget::Encoding::warm_up();
    let server = LocalServer::builder()
        .reply_tokens(700)
        .latency(Duration::from_millis(3))
        .served_model("gpt-4o", "gpt-4o-2024-08-06")
        .cached_tokens(32)
        .start()
        .await?;
    let rogue = LocalServer::builder()
        .reply_tokens(400)
        .always(Behavior::IgnoreCap)
        .start()
        .await?;

    // The limits (the users' presets per agent type, a fleet-wide day, a budget per task) and
    // the prices come from examples/fleet.yaml, with the TOKEN_BUDGET_* variables over it.
    let config = Config::load(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/fleet.yaml"))?;
    // The ledger outlives this process (by default it is a SQLite file), and a budget on a
    // durable ledger rebuilds today's windows from it before its first call, so that a restart
    // does not hand out a fresh daily budget. This demo opts out explicitly
    // (`restore_windows(false)`): it is a self-contained experiment, and restoring would count every earlier run of today
    // (and of this month) against `fleet/day` and the presets' daily and monthly caps, so
    // each run would start with less budget than the one before, its percentages and denials
    // would change, and after a few runs the fleet would be refused outright. Keeping the
    // counters per run (and the report to this run's events) makes the 1st and the 5th run
    // behave the same.
    let budget: Budget = token_budget::Budget::builder()
        .config(&config)
        .store(store)
        .ledger(ledger)
        .restore_windows(false)
        .build()?;
    let cache = CacheLayer::new(budget.clone());
    // Easy requests go to gpt-4o-mini, medium and hard ones to gpt-4o (the users' tiers).
    let router = RouteLayer::new(budget.clone());
    let rates = RateLimitLayer::new()
        .default_agent_rpm(6_000)
        .policy(Policy::Wait {
            max_wait: Some(Duration::from_secs(5)),
        });

    println!(
        "token-budget demo: {} agents + a runaway + a cap-ignoring provider, through async-openai",
        FLEET.len()
    );
    println!(
        "local OpenAI-compatible servers at {} and {}",
        server.base_url(),
        rogue.base_url()
    );
    println!("budget store: {}", budget.store().describe());
    println!();

    let mut handles = Vec::new();
    for (i, spec) in FLEET.iter().enumerate() {
        let stack = stack(&budget, &server, &rates, &cache, &router);
        let run = run.clone();
        handles.push(tokio::spawn(async move {
            let mut outcome = Outcome::default();
            for t in 0..spec.tasks {
                let who = run
                    .who(spec.name)
                    .with_task(TaskId::new(format!("{}-{t}", spec.name)))
                    .with_user(format!("customer-{}", (t as usize + i) % 7))
                    .with_tag("agent_type", spec.preset.label());
                let seed = (i as u64) << 32 | u64::from(t);
                TaskScope::new(who)
                    .run(run_task(
                        stack.clone(),
                        TaskPlan {
                            model: spec.model,
                            system: spec.system,
                            steps: Some(spec.steps_per_task),
                            max_output: spec.max_output,
                            stream: spec.stream,
                            faq: spec.faq,
                            seed,
                        },
                        &mut outcome,
                    ))
                    .await;
            }
            (spec.name, outcome)
        }));
    }
    let runaway = {
        let stack = stack(&budget, &server, &rates, &cache, &router);
        let run = run.clone();
        tokio::spawn(async move {
            let mut outcome = Outcome::default();
            let who = run
                .who(RUNAWAY)
                .with_task(TaskId::new("researcher-loop-0"))
                .with_tag("agent_type", "Research Agent");
            // No step limit: this agent would loop forever. Its per-task budget stops it.
            TaskScope::new(who)
                .run(run_task(
                    stack,
                    TaskPlan {
                        model: "gpt-4o",
                        system: "You are a research agent. Keep searching until you are certain.",
                        steps: None,
                        max_output: 1_500,
                        stream: false,
                        faq: false,
                        seed: 99,
                    },
                    &mut outcome,
                ))
                .await;
            (RUNAWAY, outcome)
        })
    };
    let overrun = {
        let stack = stack(&budget, &rogue, &rates, &cache, &router);
        let run = run.clone();
        tokio::spawn(async move {
            let mut outcome = Outcome::default();
            for t in 0..3 {
                let who = run
                    .who(OVERRUN)
                    .with_task(TaskId::new(format!("summary-{t}")))
                    .with_tag("agent_type", "Research Agent");
                TaskScope::new(who)
                    .run(run_task(
                        stack.clone(),
                        TaskPlan {
                            model: "gpt-4o-mini",
                            system: "Summarise the thread in 50 tokens.",
                            steps: Some(1),
                            max_output: 50,
                            stream: true,
                            faq: false,
                            seed: 7 + t,
                        },
                        &mut outcome,
                    ))
                    .await;
            }
            (OVERRUN, outcome)
        })
    };
    // Ctrl-C stops the agents, but not the report: what was recorded until then is printed.
    let mut outcomes = BTreeMap::new();
    let mut agents: Vec<_> = handles.into_iter().chain([runaway, overrun]).collect();
    let interrupted = tokio::select! {
        finished = async {
            for h in agents.iter_mut() {
                let (name, outcome) = h.await?;
                outcomes.insert(name, outcome);
            }
            Ok::<(), tokio::task::JoinError>(())
        } => {
            finished?;
            false
        }
        _ = tokio::signal::ctrl_c() => true,
    };
    if interrupted {
        for agent in &agents {
            agent.abort();
        }
        // A call aborted after it was sent is charged as it is dropped: wait for the drops,
        // then for the books to hold them.
        for agent in agents {
            let _ = agent.await;
        }
        budget.flush().await?;
        println!("interrupted: the report covers what was recorded until now");
        println!();
    }
    // An allowance store reports what it admitted locally and gives its allowances back.
    budget.store().close().await?;

    report(
        &budget,
        &run,
        &outcomes,
        server.requests_received() + rogue.requests_received(),
    )
    .await?;
    println!();
    history(budget.ledger(), &run).await?;
    println!("finished in {:.1?}", started.elapsed());
    Ok(())
}

/// Savings of one optimisation, read from the ledger.
#[derive(Default)]
struct Saving {
    events: u64,
    tokens: u64,
    money: Money,
}

/// `part` as a percentage of `whole`, one decimal, integer arithmetic.
fn percent(part: Money, whole: Money) -> String {
    if whole <= Money::ZERO {
        return "-".into();
    }
    let permille = part.units().saturating_mul(1_000) / whole.units();
    format!("{}.{}%", permille / 10, permille % 10)
}

/// The "Optimization impact" table, measured on this run: what each strategy saved, against
/// what the run would have cost without any of them, beside the ranges the users' document
/// claims. Read with the ledger's queries, so it works on every backend.
async fn optimisation_impact(
    ledger: &Books,
    run: &Run,
    prices: &token_budget::PriceTable,
) -> Result<(), LedgerError> {
    // One group per spend: a step of a task makes at most one call or cache hit (plus the
    // summary calls of compression, summed apart), so these groups are the run's single
    // events, and a routed call is priced at the model it asked for with its own prompt size
    // (a price tier depends on it).
    let events = ledger
        .totals(&run.query([
            Dimension::Kind,
            Dimension::Task,
            Dimension::Step,
            Dimension::RequestedModel,
        ]))
        .await?;
    let spent: Money = events.iter().map(|g| g.cost).sum();
    let mut compression = Saving::default();
    let mut caching = Saving::default();
    let mut routing = Saving::default();
    let mut summaries = Money::ZERO;
    for g in &events {
        let [KeyPart::Kind(kind), _, _, requested] = g.key.as_slice() else {
            continue;
        };
        if *kind == EventKind::Summary {
            summaries += g.cost;
            continue;
        }
        if !g.saved.is_zero() {
            let target = if *kind == EventKind::CacheHit {
                &mut caching
            } else {
                &mut compression
            };
            target.events += g.events;
            target.tokens += g.saved.tokens;
            target.money += g.saved.money;
        }
        // A routed call saved the difference between the model asked for and the one used
        // (negative if it was routed to a dearer one).
        if let KeyPart::Text(asked) = requested
            && let Ok(asked) = prices.resolve(asked)
        {
            routing.events += g.events;
            routing.money += asked.price.cost(&g.usage) - g.cost;
        }
    }
    let without = spent + compression.money + caching.money + routing.money;
    println!(
        "Optimization impact (measured on this run; spend without them: {without:.4}, with: {spent:.4}):"
    );
    println!(
        "  {:<34} {:>6} {:>12} {:>10} {:>9}   the document claims",
        "strategy", "calls", "tokens saved", "$ saved", "saved"
    );
    let row = |name: &str, s: &Saving, claim: &str| {
        println!(
            "  {:<34} {:>6} {:>12} {:>10.4} {:>9}   {}",
            name,
            s.events,
            s.tokens,
            s.money,
            percent(s.money, without),
            claim
        );
    };
    row(
        "context compression / history",
        &compression,
        "20-40% (history limits 30-50%)",
    );
    row("response caching (exact hits)", &caching, "5-15%");
    row("cheaper models for easy tasks", &routing, "40-60%");
    println!(
        "  summary calls made by compression cost {summaries:.4} (included in the spend above);"
    );
    println!("  shorter system prompts and fewer reasoning steps are not automated: not measured.");
    Ok(())
}

async fn report(
    budget: &Budget,
    run: &Run,
    outcomes: &BTreeMap<&'static str, Outcome>,
    provider_requests: u64,
) -> Result<(), Box<dyn std::error::Error>> {
    let by_agent = budget
        .ledger()
        .totals(&run.query([Dimension::Agent]))
        .await?;
    let status = budget.status().await?;
    let denials = budget.denials();
    let percent = |id: String| {
        status
            .iter()
            .find(|s| *s.limit.id == *id)
            .map_or("-".to_string(), |s| format!("{}%", s.percent_used()))
    };
    // Provider calls, compression's summary calls and cache hits (which never left) apart.
    let mut kinds: BTreeMap<String, [u64; 3]> = BTreeMap::new();
    for group in budget
        .ledger()
        .totals(&run.query([Dimension::Agent, Dimension::Kind]))
        .await?
    {
        let column = match group.key[1] {
            KeyPart::Kind(EventKind::Summary) => 1,
            KeyPart::Kind(EventKind::CacheHit) => 2,
            _ => 0,
        };
        kinds.entry(group.key[0].to_string()).or_default()[column] += group.events;
    }
    println!(
        "{:<16} {:>5} {:>5} {:>5} {:>9} {:>8} {:>9} {:>10} {:>7} {:>8} {:>7} {:>8}",
        "agent",
        "calls",
        "summ.",
        "hits",
        "input",
        "output",
        "total",
        "cost",
        "day %",
        "month %",
        "denied",
        "cutoffs"
    );
    println!("{}", "-".repeat(110));
    for group in &by_agent {
        let agent = group.key[0].to_string();
        let denied = denials
            .get(agent.as_str())
            .map_or(0, |d| d.exhausted + d.exceeds_limit + d.stopped);
        let [calls, summaries, hits] = kinds.get(&agent).copied().unwrap_or_default();
        println!(
            "{:<16} {:>5} {:>5} {:>5} {:>9} {:>8} {:>9} {:>10.4} {:>7} {:>8} {:>7} {:>8}",
            agent,
            calls,
            summaries,
            hits,
            group.usage.input,
            group.usage.output,
            group.usage.total(),
            group.cost,
            percent(format!("{agent}/daily-tokens")),
            percent(format!("{agent}/monthly-cost")),
            denied,
            outcomes.get(agent.as_str()).map_or(0, |o| o.cutoffs),
        );
    }
    let all = budget.ledger().totals(&run.query([])).await?;
    if let Some(t) = all.first() {
        let [calls, summaries, hits] = kinds.values().fold([0; 3], |mut sum, k| {
            for (s, k) in sum.iter_mut().zip(k) {
                *s += k;
            }
            sum
        });
        println!("{}", "-".repeat(110));
        println!(
            "{:<16} {:>5} {:>5} {:>5} {:>9} {:>8} {:>9} {:>10.4} {:>7}",
            "fleet",
            calls,
            summaries,
            hits,
            t.usage.input,
            t.usage.output,
            t.usage.total(),
            t.cost,
            percent("fleet/day".into())
        );
        println!(
            "  cached input tokens: {}; events with estimated counts (cut streams, calls dropped after sending): {}",
            t.usage.cached_input, t.estimated_events
        );
        let calls = t.events - hits;
        let verdict = match calls.cmp(&provider_requests) {
            std::cmp::Ordering::Equal => {
                "every call that reached a provider is accounted once".to_string()
            }
            std::cmp::Ordering::Greater => format!(
                "every call that reached a provider, and {} dropped on their way after being handed over, charged as billed-unknown (the safe side)",
                calls - provider_requests
            ),
            std::cmp::Ordering::Less => format!(
                "{} CALLS THAT REACHED A PROVIDER ARE MISSING",
                provider_requests - calls
            ),
        };
        println!(
            "  the providers received {provider_requests} requests; the ledger holds {calls} calls from this run (+ {hits} cache hits that never left): {verdict}"
        );
    }

    println!();
    optimisation_impact(budget.ledger(), run, &budget.prices()).await?;

    println!();
    println!("What's costing the most (by model):");
    let by_model = budget
        .ledger()
        .top(&run.query([Dimension::Model]), RankBy::Cost, 5)
        .await?;
    for g in by_model {
        println!(
            "  {:<14} {:>10.4}  {:>9} tokens",
            g.key[0].to_string(),
            g.cost,
            g.usage.total()
        );
    }

    println!();
    println!("Stopped:");
    for (agent, outcome) in outcomes {
        if let Some(reason) = &outcome.stopped {
            println!("  {agent}: {reason}");
        }
    }
    let steps = budget
        .ledger()
        .totals(
            &run.query([Dimension::Step])
                .filter(Dimension::Agent, KeyPart::text(RUNAWAY)),
        )
        .await?;
    let spent: u64 = steps.iter().map(|g| g.usage.total()).sum();
    // The per-task cap every agent has (examples/fleet.yaml): what stops the runaway.
    let task_limit = budget
        .limits()
        .get("per-task")
        .and_then(|l| l.cap.tokens)
        .unwrap_or_default();
    println!(
        "  {RUNAWAY} ran {} steps and spent {spent} of its {task_limit}-token task budget, never more",
        steps.len()
    );
    Ok(())
}

/// One line on the ledger itself: where it is, and everything it holds (earlier runs, other
/// programs), beside this run's share.
/// The budget store `TOKEN_BUDGET_STORE` names (this process's memory by default). A shared
/// store (Redis) keeps its counters across runs; unless the URL names a `prefix`, each run gets
/// its own, for the reason the counters are not restored from the ledger (see `main`).
async fn open_store(run: &Run) -> Result<Store, token_budget::store::StoreError> {
    match std::env::var(token_budget::store::STORE_ENV) {
        Ok(url) if url.trim_start().starts_with("redis") && !url.contains("prefix=") => {
            let sep = if url.contains('?') { '&' } else { '?' };
            Store::open(&format!("{url}{sep}prefix=token-budget-demo:{}", run.id)).await
        }
        _ => Store::from_env().await,
    }
}

async fn history(ledger: &Books, run: &Run) -> Result<(), LedgerError> {
    let by_run = ledger
        .totals(&LedgerQuery::group_by([Dimension::Tag(RUN_TAG.into())]))
        .await?;
    let total: u64 = by_run.iter().map(|g| g.events).sum();
    let runs = by_run
        .iter()
        .filter(|g| matches!(g.key.first(), Some(KeyPart::Text(_))))
        .count();
    let this: u64 = by_run
        .iter()
        .filter(|g| g.key.first() == Some(&KeyPart::Text(run.id.clone())))
        .map(|g| g.events)
        .sum();
    println!(
        "ledger: {ledger} holds {total} events ({runs} run{}); this run, {}, added {this}: the tables above cover only those",
        if runs == 1 { "" } else { "s" },
        run.id
    );
    Ok(())
}
