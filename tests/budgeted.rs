//! `#[budgeted]` end to end: agent functions calling the local OpenAI-compatible server through
//! the real async-openai client and the budget layer.

use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::types::chat::{
    ChatCompletionRequestUserMessageArgs, CreateChatCompletionRequest,
    CreateChatCompletionRequestArgs,
};
use token_budget::layers::local_server::{LocalServer, RunningServer};
use token_budget::layers::openai::OpenAiService;
use token_budget::ledger::{Dimension, LedgerQuery};
use token_budget::runaway::RunawayKind;
use token_budget::scope::TaskScope;
use token_budget::{
    Budget, BudgetError, BudgetLayer, BudgetLayerError, Ledger, LlmRequest, budgeted,
};
use tower::{Layer, Service, ServiceExt};

type Stack = token_budget::BudgetService<
    OpenAiService,
    token_budget::MemoryBudgetStore,
    token_budget::MemoryLedger,
>;

#[derive(Debug, thiserror::Error)]
enum AgentError {
    #[error(transparent)]
    Budget(#[from] BudgetError),
    #[error("provider: {0}")]
    Provider(String),
}

impl From<BudgetLayerError<OpenAIError>> for AgentError {
    fn from(e: BudgetLayerError<OpenAIError>) -> AgentError {
        match e {
            BudgetLayerError::Budget(b) => AgentError::Budget(b),
            BudgetLayerError::Inner(p) => AgentError::Provider(p.to_string()),
        }
    }
}

fn request(text: &str, cap: u32) -> CreateChatCompletionRequest {
    CreateChatCompletionRequestArgs::default()
        .model("gpt-4o-mini")
        .messages([ChatCompletionRequestUserMessageArgs::default()
            .content(text)
            .build()
            .unwrap()
            .into()])
        .max_completion_tokens(cap)
        .build()
        .unwrap()
}

/// A local provider replying with `reply_tokens` tokens, and a budget with no limits of its
/// own (the agents' `#[budgeted]` limits are the ones under test).
async fn start(reply_tokens: u64) -> (RunningServer, Budget) {
    let server = LocalServer::builder()
        .reply_tokens(reply_tokens)
        .start()
        .await
        .unwrap();
    (server, Budget::builder().build().unwrap())
}

fn stack(budget: &Budget, server: &RunningServer) -> Stack {
    BudgetLayer::new(budget.clone()).layer(OpenAiService::new(
        OpenAIConfig::new()
            .with_api_base(server.base_url())
            .with_api_key("test"),
    ))
}

async fn ask(stack: &mut Stack, text: &str, cap: u32) -> Result<(), AgentError> {
    let service = ServiceExt::<CreateChatCompletionRequest>::ready(stack).await?;
    service.call(request(text, cap)).await?;
    Ok(())
}

const QUESTION: &str = "Look at the next page of results.";

/// Loops forever; only its budget stops it.
#[budgeted(agent = "looper", limit = 400, task = task, runaway = false)]
async fn looper(mut stack: Stack, task: &str) -> Result<(), AgentError> {
    loop {
        ask(&mut stack, QUESTION, 50).await?;
    }
}

#[tokio::test]
async fn a_looping_agent_is_stopped_at_the_right_step() {
    let (server, budget) = start(50).await;
    let per_call = request(QUESTION, 50).count_prompt().tokens + 50;
    let fits = 400 / per_call; // whole calls that fit in the task's 400 tokens

    let err = looper(stack(&budget, &server), "loop-1").await.unwrap_err();
    match err {
        AgentError::Budget(BudgetError::Exhausted(d)) => assert_eq!(&*d.limit, "task:loop-1"),
        AgentError::Budget(BudgetError::TaskBudgetSpent { .. }) => {
            assert_eq!(
                400 % per_call,
                0,
                "spent exactly only when calls divide the budget"
            )
        }
        other => panic!("unexpected: {other:?}"),
    }
    assert_eq!(server.requests_received(), fits);
    let rows = budget
        .ledger()
        .totals(&LedgerQuery::group_by([Dimension::Task, Dimension::Step]))
        .await
        .unwrap();
    // One ledger row per step, one call per step, numbered 1..=fits.
    assert_eq!(rows.len() as u64, fits);
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(
            row.key[1],
            token_budget::ledger::KeyPart::Step(i as u32 + 1)
        );
        assert_eq!((row.events, row.usage.total()), (1, per_call));
    }
}

/// Takes exactly `steps` steps and reports the task it ran as.
#[budgeted(agent = "worker", limit = 10_000, user = user)]
async fn worker(mut stack: Stack, user: String, steps: u32) -> Result<String, AgentError> {
    for i in 0..steps {
        ask(&mut stack, &format!("{user} asks question {i}"), 3).await?;
        tokio::task::yield_now().await;
    }
    Ok(TaskScope::current().unwrap().task().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_budgeted_tasks_in_parallel_keep_their_scopes() {
    let (server, budget) = start(2).await;
    let tasks: Vec<_> = (0..100)
        .map(|i| tokio::spawn(worker(stack(&budget, &server), format!("user-{i}"), 3)))
        .collect();
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        ids.insert(t.await.unwrap().unwrap());
    }
    assert_eq!(ids.len(), 100, "every call got a task of its own");
    let rows = budget
        .ledger()
        .totals(&LedgerQuery::group_by([Dimension::Task, Dimension::User]))
        .await
        .unwrap();
    assert_eq!(
        rows.len(),
        100,
        "no task's calls were attributed to another user"
    );
    assert!(rows.iter().all(|r| r.events == 3));
}

/// A sub-agent with a generous budget of its own.
#[budgeted(agent = "helper", limit = 100_000, runaway = false)]
async fn helper(stack: &mut Stack) -> Result<(), AgentError> {
    let mut n = 0;
    loop {
        n += 1;
        ask(stack, &format!("helper digs deeper, round {n}"), 40).await?;
    }
}

/// A lead agent whose small budget must also bound its sub-agent.
#[budgeted(agent = "lead", limit = 300, task = "lead-task")]
async fn lead(mut stack: Stack) -> Result<(), AgentError> {
    helper(&mut stack).await
}

#[tokio::test]
async fn nested_agents_roll_up_into_their_parent() {
    let (server, budget) = start(40).await;
    let err = lead(stack(&budget, &server)).await.unwrap_err();
    assert!(
        matches!(&err, AgentError::Budget(BudgetError::Exhausted(d)) if &*d.limit == "task:lead-task")
            || matches!(&err, AgentError::Budget(BudgetError::TaskBudgetSpent { task, .. }) if task.as_str() == "lead-task"),
        "{err:?}"
    );
    let events = budget.ledger().events();
    assert!(!events.is_empty());
    assert!(
        events
            .iter()
            .all(|e| e.attribution.agent_name() == "helper")
    );
    let spent: u64 = events.iter().map(|e| e.usage.total()).sum();
    assert!(spent <= 300, "the helper spent {spent} of its parent's 300");
}

/// Waits to be killed between its calls.
#[budgeted(
    agent = "victim",
    limit = 1_000_000,
    task = "victim-1",
    runaway = false
)]
async fn victim(
    mut stack: Stack,
    mut go: tokio::sync::mpsc::Receiver<()>,
    done: tokio::sync::mpsc::Sender<()>,
) -> Result<(), AgentError> {
    while go.recv().await.is_some() {
        ask(&mut stack, "one more thing", 3).await?;
        done.send(()).await.unwrap();
    }
    Ok(())
}

#[tokio::test]
async fn killed_from_outside_at_the_next_step_boundary() {
    let (server, budget) = start(3).await;
    let (go_tx, go_rx) = tokio::sync::mpsc::channel(1);
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel(1);
    let agent = tokio::spawn(victim(stack(&budget, &server), go_rx, done_tx));
    go_tx.send(()).await.unwrap();
    done_rx.recv().await.unwrap();
    budget.controls().cancel_task(&"victim-1".into());
    go_tx.send(()).await.unwrap();
    let err = agent.await.unwrap().unwrap_err();
    assert!(
        matches!(err, AgentError::Budget(BudgetError::TaskCancelled { ref task }) if task.as_str() == "victim-1"),
        "{err:?}"
    );
    assert_eq!(server.requests_received(), 1);
}

/// Sends the same request every step.
#[budgeted(agent = "parrot", limit = 1_000_000)]
async fn parrot(mut stack: Stack) -> Result<(), AgentError> {
    loop {
        ask(&mut stack, "Is the deployment done yet?", 3).await?;
    }
}

#[tokio::test]
async fn a_runaway_is_stopped_and_says_why() {
    let (server, budget) = start(3).await;
    let err = parrot(stack(&budget, &server)).await.unwrap_err();
    assert!(
        matches!(
            err,
            AgentError::Budget(BudgetError::Runaway {
                kind: RunawayKind::Repetition { repeats: 3 },
                ..
            })
        ),
        "{err:?}"
    );
    assert_eq!(server.requests_received(), 2);
}

/// Hands work to a spawned task, carrying its scope along.
#[budgeted(agent = "dispatcher", limit = 10_000, task = "dispatch-1")]
async fn dispatcher(stack: Stack) -> Result<(), AgentError> {
    let scope = TaskScope::current().expect("inside the budgeted fn");
    let mut spawned_stack = stack;
    tokio::spawn(
        scope.run(async move { ask(&mut spawned_stack, "do this in the background", 3).await }),
    )
    .await
    .expect("spawned task")
}

#[tokio::test]
async fn spawned_work_carries_the_scope_when_asked_to() {
    let (server, budget) = start(3).await;
    dispatcher(stack(&budget, &server)).await.unwrap();
    let events = budget.ledger().events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].attribution.task().unwrap().as_str(), "dispatch-1");
    assert_eq!(events[0].attribution.agent_name(), "dispatcher");
}

/// Loops inside a `select!` arm, racing a shutdown signal that does not come.
#[budgeted(agent = "selector", limit = 1_000_000, max_steps = 3, runaway = false)]
async fn select_looper(
    mut stack: Stack,
    shutdown: tokio::sync::oneshot::Receiver<()>,
) -> Result<(), AgentError> {
    tokio::select! {
        _ = shutdown => Ok(()),
        () = std::future::ready(()) => {
            let mut page = 0;
            loop {
                page += 1;
                ask(&mut stack, &format!("Read page {page}."), 3).await?;
            }
        }
    }
}

#[tokio::test]
async fn a_loop_inside_select_is_stopped_at_max_steps() {
    let (server, budget) = start(3).await;
    let (_keep_open, shutdown) = tokio::sync::oneshot::channel();
    let err = select_looper(stack(&budget, &server), shutdown)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            AgentError::Budget(BudgetError::StepLimit { max_steps: 3, .. })
        ),
        "{err:?}"
    );
    assert_eq!(server.requests_received(), 3);
    assert_eq!(budget.ledger().events().len(), 3);
}

/// Waits to be killed between its calls, in a loop inside a `select!` arm.
#[budgeted(
    agent = "select-victim",
    limit = 1_000_000,
    task = "select-victim-1",
    runaway = false
)]
async fn select_victim(
    mut stack: Stack,
    mut go: tokio::sync::mpsc::Receiver<()>,
    done: tokio::sync::mpsc::Sender<()>,
    started: std::sync::Arc<std::sync::atomic::AtomicU32>,
) -> Result<(), AgentError> {
    tokio::select! {
        () = std::future::ready(()) => {
            while go.recv().await.is_some() {
                started.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                ask(&mut stack, "one more thing", 3).await?;
                done.send(()).await.unwrap();
            }
            Ok(())
        }
    }
}

#[tokio::test]
async fn killed_from_outside_inside_select_at_the_next_step_boundary() {
    let (server, budget) = start(3).await;
    let (go_tx, go_rx) = tokio::sync::mpsc::channel(1);
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel(1);
    let started = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let agent = tokio::spawn(select_victim(
        stack(&budget, &server),
        go_rx,
        done_tx,
        started.clone(),
    ));
    go_tx.send(()).await.unwrap();
    done_rx.recv().await.unwrap();
    budget.controls().cancel_task(&"select-victim-1".into());
    go_tx.send(()).await.unwrap();
    let err = agent.await.unwrap().unwrap_err();
    assert!(
        matches!(err, AgentError::Budget(BudgetError::TaskCancelled { ref task }) if task.as_str() == "select-victim-1"),
        "{err:?}"
    );
    // Stopped at the step boundary, before the body ran again (not only by the layer).
    assert_eq!(started.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(server.requests_received(), 1);
}
