//! Runaway agents, stopped. Three agents that would loop forever, each instrumented with
//! `#[budgeted]`, calling models through the real async-openai client and the budget layer
//! against the local OpenAI-compatible server:
//!
//! 1. a "parrot" that sends the same request step after step — runaway detection stops it;
//! 2. a "hoarder" whose context grows every step — its per-task token budget stops it;
//! 3. a "wanderer" that makes progress but too slowly — an outside monitor kills it.
//!
//! Run: `cargo run --example runaway_agent`

use std::time::Duration;

use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::types::chat::{
    ChatCompletionRequestUserMessageArgs, CreateChatCompletionRequest,
    CreateChatCompletionRequestArgs,
};
use token_budget::layers::local_server::LocalServer;
use token_budget::layers::openai::{ChatReply, OpenAiService};
use token_budget::ledger::{Dimension, KeyPart, LedgerQuery};
use token_budget::scope::TaskScope;
use token_budget::{Budget, BudgetError, BudgetLayer, BudgetLayerError, Ledger, budgeted};
use tower::{Layer, Service, ServiceExt};

type Stack = token_budget::BudgetService<
    OpenAiService,
    token_budget::MemoryBudgetStore,
    token_budget::MemoryLedger,
>;

/// What an agent can fail with: the budget stopped it, or the provider failed.
#[derive(Debug, thiserror::Error)]
enum AgentError {
    #[error(transparent)]
    Budget(#[from] BudgetError),
    #[error("provider: {0}")]
    Provider(OpenAIError),
}

impl From<BudgetLayerError<OpenAIError>> for AgentError {
    fn from(e: BudgetLayerError<OpenAIError>) -> AgentError {
        match e {
            BudgetLayerError::Budget(b) => AgentError::Budget(b),
            BudgetLayerError::Inner(p) => AgentError::Provider(p),
        }
    }
}

fn request(text: &str) -> CreateChatCompletionRequest {
    CreateChatCompletionRequestArgs::default()
        .model("gpt-4o")
        .messages([ChatCompletionRequestUserMessageArgs::default()
            .content(text)
            .build()
            .expect("message")
            .into()])
        .max_completion_tokens(400u32)
        .build()
        .expect("request")
}

async fn ask(stack: &mut Stack, text: &str) -> Result<String, AgentError> {
    let service = ServiceExt::<CreateChatCompletionRequest>::ready(stack).await?;
    match service.call(request(text)).await? {
        ChatReply::Complete(r) => Ok(r
            .choices
            .first()
            .and_then(|c| c.message.content.clone())
            .unwrap_or_default()),
        ChatReply::Stream(_) => Ok(String::new()),
    }
}

/// Keeps asking for the status page until it says "done" — which it never does.
#[budgeted(agent = "parrot", limit = 200_000)]
async fn parrot(mut stack: Stack) -> Result<u32, AgentError> {
    loop {
        let page = ask(
            &mut stack,
            "Fetch the deployment status page and tell me if it is done.",
        )
        .await?;
        if page.contains("DONE") {
            return Ok(TaskScope::current().map_or(0, |s| s.step()));
        }
    }
}

/// Re-reads everything it has gathered every step, so each call is larger than the last.
#[budgeted(agent = "hoarder", limit = 12_000, cost_limit = "$0.25")]
async fn hoarder(mut stack: Stack) -> Result<u32, AgentError> {
    let mut notes = String::from("Research question: what drives our token spend?");
    loop {
        let reply = ask(
            &mut stack,
            &format!("Here is everything so far:\n{notes}\nWhat next?"),
        )
        .await?;
        notes.push('\n');
        notes.push_str(&reply);
    }
}

/// Makes progress, step by step, but never finishes; an outside monitor kills its task.
#[budgeted(agent = "wanderer", limit = 1_000_000, task = task_id)]
async fn wanderer(mut stack: Stack, task_id: &str) -> Result<u32, AgentError> {
    let mut page = 1;
    loop {
        ask(
            &mut stack,
            &format!("Summarise page {page} of the archive, topic {}.", page * 37),
        )
        .await?;
        page += 1;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn spent(budget: &Budget, agent: &str) -> (usize, u64, token_budget::Money) {
    let rows = budget
        .ledger()
        .totals(
            &LedgerQuery::group_by([Dimension::Step])
                .filter(Dimension::Agent, KeyPart::text(agent)),
        )
        .await
        .expect("ledger");
    (
        rows.len(),
        rows.iter().map(|r| r.usage.total()).sum(),
        rows.iter().map(|r| r.cost).sum(),
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = LocalServer::builder().reply_tokens(300).start().await?;
    let budget = Budget::builder().build()?;
    let stack = || -> Stack {
        BudgetLayer::new(budget.clone()).layer(OpenAiService::new(
            OpenAIConfig::new()
                .with_api_base(server.base_url())
                .with_api_key("local"),
        ))
    };
    println!(
        "Three agents that would never stop, against {}:",
        server.base_url()
    );
    println!();

    let parrot = parrot(stack()).await;
    let hoarder = hoarder(stack()).await;

    // The monitor: kill the wanderer once it has spent 5,000 tokens.
    let wanderer_task = "wanderer-42";
    let monitor = {
        let budget = budget.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(5)).await;
                if spent(&budget, "wanderer").await.1 >= 5_000 {
                    budget.controls().cancel_task(&wanderer_task.into());
                    return;
                }
            }
        })
    };
    let wanderer = wanderer(stack(), wanderer_task).await;
    monitor.await?;

    for (agent, result) in [
        ("parrot", parrot),
        ("hoarder", hoarder),
        ("wanderer", wanderer),
    ] {
        let (steps, tokens, cost) = spent(&budget, agent).await;
        let why = match result {
            Ok(step) => format!("finished at step {step} (unexpected)"),
            Err(e) => e.to_string(),
        };
        println!("{agent:<9} {steps:>3} steps done  {tokens:>7} tokens  {cost:>10.4}");
        println!("          stopped: {why}");
    }
    println!();
    println!(
        "the provider saw {} requests; the ledger holds {} events",
        server.requests_received(),
        budget.ledger().len()
    );
    Ok(())
}
