//! Task scopes through the real stack, without the macro (which only expands to this API):
//! async-openai -> BudgetLayer -> local server, with per-task budgets, steps, nesting,
//! cancellation from outside and runaway detection.

use async_openai::types::chat::CreateChatCompletionRequest;
use budget_core::ledger::{Dimension, LedgerQuery};
use budget_core::runaway::{RunawayConfig, RunawayKind};
use budget_core::scope::TaskScope;
use budget_core::{Attribution, Budget, BudgetError, Ledger, TaskId};
use budget_tower::local_server::RunningServer;
use budget_tower::openai::OpenAiService;
use budget_tower::{BudgetLayer, BudgetLayerError, BudgetService, LlmRequest};
use tower::Layer;

mod support;
use support::chat::user_request;
use support::server::{openai_service, start_server};
use support::{no_limits, send};

type Stack =
    BudgetService<OpenAiService, budget_core::MemoryBudgetStore, budget_core::MemoryLedger>;

fn request(text: &str, cap: u32) -> CreateChatCompletionRequest {
    user_request("gpt-4o-mini", text)
        .max_completion_tokens(cap)
        .build()
        .unwrap()
}

fn stack(budget: &Budget, server: &RunningServer) -> Stack {
    BudgetLayer::new(budget.clone()).layer(openai_service(server))
}

/// One call; the budget's refusal comes back as a `BudgetError`.
async fn call(stack: &mut Stack, req: CreateChatCompletionRequest) -> Result<(), BudgetError> {
    match send(stack, req).await {
        Ok(_) => Ok(()),
        Err(BudgetLayerError::Budget(refused)) => Err(refused),
        Err(other) => panic!("provider failed: {other}"),
    }
}

/// The agent loop, written by hand: a step boundary at the top of every iteration.
async fn looping_agent(mut stack: Stack, text: &'static str) -> Result<u32, BudgetError> {
    let scope = TaskScope::current().expect("runs in a scope");
    loop {
        scope.step_boundary()?;
        call(&mut stack, request(text, 50)).await?;
    }
}

#[tokio::test]
async fn a_looping_agent_stops_at_the_right_step_with_the_right_error() {
    let server = start_server(50).await;
    let text = "Look at the next page of results.";
    let per_call = request(text, 50).count_prompt().tokens + 50;

    // 3 calls fit, with 10 tokens to spare: the 4th call cannot even reserve its prompt.
    let budget = no_limits();
    let scope = TaskScope::builder(Attribution::agent("looper").with_task(TaskId::new("loop-a")))
        .tokens(3 * per_call + 10)
        .runaway(RunawayConfig::disabled())
        .build();
    let err = scope
        .clone()
        .run(looping_agent(stack(&budget, &server), text))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, BudgetError::Exhausted(d) if &*d.limit == "task:loop-a"),
        "{err}"
    );
    assert_eq!(scope.step(), 4, "refused in the 4th step");
    assert_eq!(server.requests_received(), 3);
    // The ledger's per-step rows match the calls made.
    let rows = budget
        .ledger()
        .totals(&LedgerQuery::group_by([Dimension::Step]))
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    assert!(
        rows.iter()
            .all(|r| r.events == 1 && r.usage.total() == per_call)
    );

    // Exactly 3 calls' worth: the task's budget is spent, and the 4th step boundary says so.
    let scope = TaskScope::builder(Attribution::agent("looper").with_task(TaskId::new("loop-b")))
        .tokens(3 * per_call)
        .runaway(RunawayConfig::disabled())
        .build();
    let err = scope
        .clone()
        .run(looping_agent(stack(&budget, &server), text))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, BudgetError::TaskBudgetSpent { tokens, .. } if *tokens == 3 * per_call),
        "{err}"
    );
    assert_eq!(
        scope.step(),
        3,
        "stopped at the boundary before the 4th step"
    );
    assert_eq!(server.requests_received(), 6);
}

#[tokio::test]
async fn max_steps_stops_the_loop() {
    let server = start_server(5).await;
    let budget = no_limits();
    let scope = TaskScope::builder(Attribution::agent("stepper"))
        .max_steps(4)
        .runaway(RunawayConfig::disabled())
        .build();
    let err = scope
        .run(looping_agent(stack(&budget, &server), "again"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, BudgetError::StepLimit { max_steps: 4, .. }),
        "{err}"
    );
    assert_eq!(server.requests_received(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_parallel_tasks_keep_their_own_attribution() {
    let server = start_server(3).await;
    let budget = no_limits();
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let mut stack = stack(&budget, &server);
            let scope = TaskScope::builder(
                Attribution::agent(format!("agent-{i}"))
                    .with_task(TaskId::new(format!("task-{i}"))),
            )
            .tokens(10_000)
            .build();
            tokio::spawn(scope.run(async move {
                let here = TaskScope::current().unwrap();
                for _ in 0..2 {
                    here.step_boundary().unwrap();
                    tokio::task::yield_now().await;
                    call(&mut stack, request(&format!("question {i}"), 3))
                        .await
                        .unwrap();
                }
            }))
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let rows = budget
        .ledger()
        .totals(&LedgerQuery::group_by([
            Dimension::Task,
            Dimension::Agent,
            Dimension::Step,
        ]))
        .await
        .unwrap();
    assert_eq!(rows.len(), 200, "two steps for each of 100 tasks");
    for row in rows {
        let (task, agent) = (row.key[0].to_string(), row.key[1].to_string());
        assert_eq!(
            task.trim_start_matches("task-"),
            agent.trim_start_matches("agent-")
        );
        assert_eq!(row.events, 1);
    }
}

#[tokio::test]
async fn a_sub_agent_cannot_spend_around_its_parent() {
    let server = start_server(40).await;
    let budget = no_limits();
    let parent = TaskScope::builder(Attribution::agent("lead").with_task(TaskId::new("lead-1")))
        .tokens(300)
        .build();
    let stack_ = stack(&budget, &server);
    let (child_task, err) = parent
        .clone()
        .run(async move {
            // The child's own limit is generous; its parent's is not.
            let child = TaskScope::builder(Attribution::agent("helper"))
                .tokens(100_000)
                .runaway(RunawayConfig::disabled())
                .child_of_current()
                .build();
            let task = child.task().clone();
            let err = child
                .run(looping_agent(stack_, "dig deeper into the data"))
                .await
                .unwrap_err();
            (task, err)
        })
        .await;
    assert!(
        matches!(&err, BudgetError::Exhausted(d) if &*d.limit == "task:lead-1")
            || matches!(&err, BudgetError::TaskBudgetSpent { task, .. } if task.as_str() == "lead-1"),
        "{err}"
    );
    let (parent_used, _) = parent.used();
    assert!(
        parent_used <= 300 && parent_used > 200,
        "the child's spend rolled up: {parent_used}"
    );
    let events = budget.ledger().events();
    assert!(
        events
            .iter()
            .all(|e| e.attribution.task() == Some(&child_task))
    );
    assert_eq!(
        events.iter().map(|e| e.usage.total()).sum::<u64>(),
        parent_used
    );
}

#[tokio::test]
async fn killed_from_outside_stops_at_the_next_step_and_refuses_calls() {
    let server = start_server(5).await;
    let budget = no_limits();
    let task = TaskId::new("killable");
    let scope = TaskScope::builder(Attribution::agent("worker").with_task(task.clone()))
        .runaway(RunawayConfig::disabled())
        .build();
    let (first_call_done_tx, first_call_done) = tokio::sync::oneshot::channel();
    let (killed_tx, killed) = tokio::sync::oneshot::channel::<()>();
    let mut stack_ = stack(&budget, &server);
    let worker = tokio::spawn(scope.clone().run(async move {
        let here = TaskScope::current().unwrap();
        here.step_boundary().unwrap();
        call(&mut stack_, request("first", 5)).await.unwrap();
        first_call_done_tx.send(()).unwrap();
        killed.await.unwrap();
        // A call attempted after the kill is refused by the layer...
        let refused = call(&mut stack_, request("second", 5)).await.unwrap_err();
        // ...and the next step boundary stops the task.
        let stopped = here.step_boundary().unwrap_err();
        (refused, stopped)
    }));
    first_call_done.await.unwrap();
    budget.controls().cancel_task(&task);
    killed_tx.send(()).unwrap();
    let (refused, stopped) = worker.await.unwrap();
    assert!(
        matches!(refused, BudgetError::TaskCancelled { .. }),
        "{refused}"
    );
    assert!(
        matches!(stopped, BudgetError::TaskCancelled { .. }),
        "{stopped}"
    );
    assert_eq!(server.requests_received(), 1);
}

#[tokio::test]
async fn repeating_the_same_request_is_stopped_as_a_runaway() {
    let server = start_server(5).await;
    let budget = no_limits();
    let scope = TaskScope::new(Attribution::agent("parrot"));
    let err = scope
        .clone()
        .run(looping_agent(
            stack(&budget, &server),
            "Check the status page again.",
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            BudgetError::Runaway {
                kind: RunawayKind::Repetition { repeats: 3 },
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        server.requests_received(),
        2,
        "the third identical request never left"
    );
    assert!(scope.is_cancelled());
    assert!(matches!(
        scope.step_boundary(),
        Err(BudgetError::Runaway { .. })
    ));
}

#[tokio::test]
async fn a_finished_task_leaves_no_counters_behind() {
    let server = start_server(5).await;
    let budget = no_limits();
    {
        let scope = TaskScope::builder(Attribution::agent("tidy"))
            .tokens(1_000)
            .build();
        let mut s = stack(&budget, &server);
        scope
            .run(async move { call(&mut s, request("hello", 5)).await })
            .await
            .unwrap();
    }
    let snapshot = budget_core::BudgetStore::snapshot(budget.store(), budget.now())
        .await
        .unwrap();
    assert!(snapshot.is_empty(), "{snapshot:?}");
    assert_eq!(budget.ledger().len(), 1, "the ledger keeps the spend");
}
