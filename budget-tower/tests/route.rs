//! Routing by difficulty and budget: a request type of the test's own through `RouteLayer`
//! (and a real `BudgetLayer` inside it), and end to end with async-openai's request through
//! `RouteLayer -> BudgetLayer -> OpenAiService -> LocalServer`.

use std::sync::Arc;

use async_openai::types::chat::CreateChatCompletionRequest;
use budget_core::conversation::{Difficulty, Role, Turn, count_turns};
use budget_core::scope::TaskScope;
use budget_core::{
    Attribution, Budget, CommitDetails, Limit, Money, Period, Selector, TaskId, TokenCount, Usage,
    Window,
};
use budget_tower::route::{DifficultyClassifier, RouteOverride};
use budget_tower::{
    Attributed, BudgetLayer, ChunkStream, LlmRequest, LlmResponse, RouteLayer, llm::ChatRequest,
};
use tower::{Layer, Service, ServiceBuilder};

mod support;
use support::chat::user_request;
use support::server::{openai_service, start_server};
use support::{Piece, PieceError, agent_day_at, no_limits, scope, send};

const EASY: &str = "What is the capital of France?";
const HARD: &str = "Design a sharded rate limiter for our API gateway.";

/// A user's own chat request type.
#[derive(Debug, Clone)]
struct Chat {
    model: String,
    turns: Vec<Turn>,
    hint: Option<Difficulty>,
    who: Attribution,
    cap: Option<u64>,
}

impl Chat {
    fn new(model: &str, text: &str) -> Chat {
        Chat {
            model: model.into(),
            turns: vec![
                Turn::new(Role::System, "You are a helpful agent.").from_message(0),
                Turn::new(Role::User, text).from_message(1),
            ],
            hint: None,
            who: Attribution::agent("agent"),
            cap: Some(50),
        }
    }

    fn by(mut self, agent: &str) -> Chat {
        self.who = Attribution::agent(agent);
        self
    }

    fn hinted(mut self, hint: Difficulty) -> Chat {
        self.hint = Some(hint);
        self
    }
}

impl LlmRequest for Chat {
    fn model(&self) -> &str {
        &self.model
    }
    fn count_prompt(&self) -> TokenCount {
        count_turns(&self.model, &self.turns)
    }
    fn max_output_tokens(&self) -> Option<u64> {
        self.cap
    }
    fn set_max_output_tokens(&mut self, cap: u64) {
        self.cap = Some(cap);
    }
    fn is_stream(&self) -> bool {
        false
    }
    fn attribution(&self) -> Option<&Attribution> {
        Some(&self.who)
    }
}

impl ChatRequest for Chat {
    fn turns(&self) -> Vec<Turn> {
        self.turns.clone()
    }
    fn set_turns(&mut self, turns: &[Turn]) {
        self.turns = turns.to_vec();
    }
    fn set_model(&mut self, model: &str) {
        model.clone_into(&mut self.model);
    }
    fn cache_key(&self) -> Option<u128> {
        None
    }
    fn difficulty_hint(&self) -> Option<Difficulty> {
        self.hint
    }
}

/// A user's own response type: the model the provider received, and usage; never a stream.
#[derive(Debug)]
struct Reply {
    model: String,
    usage: Usage,
}

impl LlmResponse for Reply {
    type Chunk = Piece;
    type StreamError = PieceError;
    fn is_stream(&self) -> bool {
        false
    }
    fn usage(&self) -> Option<Usage> {
        Some(self.usage)
    }
    fn served_model(&self) -> Option<&str> {
        Some(&self.model)
    }
    fn output_text(&self) -> String {
        "ok".into()
    }
    fn map_stream<F>(self, _wrap: F) -> Self
    where
        F: FnOnce(ChunkStream<Piece, PieceError>) -> ChunkStream<Piece, PieceError>,
    {
        self
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("provider down: {0}")]
struct Down(String);

/// The provider: records the model of every request it receives; fails for a "FAIL" prompt.
#[derive(Clone, Default)]
struct Recorder {
    seen: Arc<parking_lot::Mutex<Vec<String>>>,
}

impl Recorder {
    fn last(&self) -> String {
        self.seen.lock().last().cloned().unwrap_or_default()
    }
}

impl Service<Chat> for Recorder {
    type Response = Reply;
    type Error = Down;
    type Future = futures::future::BoxFuture<'static, Result<Reply, Down>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Down>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, chat: Chat) -> Self::Future {
        let seen = self.seen.clone();
        Box::pin(async move {
            seen.lock().push(chat.model.clone());
            if chat.turns.iter().any(|t| t.text == "FAIL") {
                return Err(Down(chat.model));
            }
            let prompt = chat.count_prompt().tokens;
            Ok(Reply {
                model: chat.model,
                usage: Usage::new(prompt, 5),
            })
        })
    }
}

/// Sends `chat` through `service` and returns the model the provider received.
async fn model_sent<S>(service: &mut S, recorder: &Recorder, chat: Chat) -> String
where
    S: Service<Chat>,
    S::Error: std::fmt::Debug,
{
    send(service, chat).await.unwrap();
    recorder.last()
}

#[tokio::test]
async fn easy_and_hard_requests_go_to_their_tiers() {
    let recorder = Recorder::default();
    let mut service = RouteLayer::new(no_limits()).layer(recorder.clone());
    assert_eq!(
        model_sent(&mut service, &recorder, Chat::new("gpt-4o", EASY)).await,
        "gpt-4o-mini"
    );
    assert_eq!(
        model_sent(&mut service, &recorder, Chat::new("gpt-4o-mini", HARD)).await,
        "gpt-4o-mini",
        "by default the router never picks a dearer model than the one asked for"
    );
    let mut service = RouteLayer::new(no_limits())
        .allow_upgrades(true)
        .layer(recorder.clone());
    assert_eq!(
        model_sent(&mut service, &recorder, Chat::new("gpt-4o-mini", HARD)).await,
        "gpt-4o",
        "with upgrades allowed, a hard task on the mini model goes up to its tier"
    );
    let code = "What does this print?\n```py\nprint(1)\n```";
    assert_eq!(
        model_sent(&mut service, &recorder, Chat::new("gpt-4o-mini", code)).await,
        "gpt-4o",
        "code is at least medium"
    );
    // A dated id of the tier model stays as the caller spelled it.
    assert_eq!(
        model_sent(
            &mut service,
            &recorder,
            Chat::new("gpt-4o-2024-08-06", HARD)
        )
        .await,
        "gpt-4o-2024-08-06"
    );
}

#[tokio::test]
async fn the_requests_hint_wins_over_the_classifier() {
    let recorder = Recorder::default();
    let mut service = RouteLayer::new(no_limits())
        .allow_upgrades(true)
        .layer(recorder.clone());
    let hinted_easy = Chat::new("gpt-4o", HARD).hinted(Difficulty::Easy);
    assert_eq!(
        model_sent(&mut service, &recorder, hinted_easy).await,
        "gpt-4o-mini"
    );
    let hinted_hard = Chat::new("gpt-4o-mini", EASY).hinted(Difficulty::Hard);
    assert_eq!(
        model_sent(&mut service, &recorder, hinted_hard).await,
        "gpt-4o"
    );
}

#[tokio::test]
async fn tiers_and_classifier_are_configurable_and_unknown_models_left_alone() {
    #[derive(Debug)]
    struct AlwaysHard;
    impl DifficultyClassifier for AlwaysHard {
        fn classify(&self, _: &str, _: &[Turn]) -> Difficulty {
            Difficulty::Hard
        }
    }
    let recorder = Recorder::default();
    let layer = RouteLayer::new(no_limits())
        .tier(Difficulty::Easy, "gpt-4o-mini")
        .tier(Difficulty::Medium, "claude-3-haiku")
        .tier(Difficulty::Hard, "gpt-4o");
    assert_eq!(layer.tier_model(Difficulty::Medium), "claude-3-haiku");
    let mut service = layer.clone().layer(recorder.clone());
    let code = "Fix:\n```rust\nfn f() {}\n```";
    assert_eq!(
        model_sent(&mut service, &recorder, Chat::new("gpt-4o", code)).await,
        "claude-3-haiku"
    );
    // A model that is not a tier model is the caller's choice...
    assert_eq!(
        model_sent(&mut service, &recorder, Chat::new("o1", EASY)).await,
        "o1"
    );
    // ...unless every request is routed.
    let mut all = layer
        .clone()
        .route_all(true)
        .classifier(AlwaysHard)
        .layer(recorder.clone());
    assert_eq!(
        model_sent(&mut all, &recorder, Chat::new("o1", EASY)).await,
        "gpt-4o"
    );
}

#[tokio::test]
async fn pressure_at_the_threshold_downgrades_one_tier() {
    let recorder = Recorder::default();
    // 79% used: no downgrade.
    let mut calm = RouteLayer::new(agent_day_at("agent", 79_000).await).layer(recorder.clone());
    assert_eq!(
        model_sent(&mut calm, &recorder, Chat::new("gpt-4o", HARD)).await,
        "gpt-4o"
    );
    // 80% used: hard goes to the next cheaper distinct model (medium is also gpt-4o).
    let tight = agent_day_at("agent", 80_000).await;
    let mut service = RouteLayer::new(tight.clone()).layer(recorder.clone());
    assert_eq!(
        model_sent(&mut service, &recorder, Chat::new("gpt-4o", HARD)).await,
        "gpt-4o-mini"
    );
    // Another agent is under no pressure.
    assert_eq!(
        model_sent(
            &mut service,
            &recorder,
            Chat::new("gpt-4o", HARD).by("other")
        )
        .await,
        "gpt-4o"
    );
    // A higher threshold: no downgrade at 80%.
    let mut lenient = RouteLayer::new(tight.clone())
        .downgrade_at(90)
        .layer(recorder.clone());
    assert_eq!(
        model_sent(&mut lenient, &recorder, Chat::new("gpt-4o", HARD)).await,
        "gpt-4o"
    );
    // One step down by price: gpt-4o -> claude-3-haiku, not all the way to gpt-4o-mini.
    let mut three = RouteLayer::new(tight)
        .tier(Difficulty::Medium, "claude-3-haiku")
        .layer(recorder.clone());
    assert_eq!(
        model_sent(&mut three, &recorder, Chat::new("gpt-4o", HARD)).await,
        "claude-3-haiku"
    );
}

#[tokio::test]
async fn a_model_limit_with_no_room_falls_back_to_the_next_cheaper_model() {
    let budget = Budget::builder()
        .limit(
            Limit::new(
                "gpt-4o/day",
                Selector::model("gpt-4o"),
                Window::Calendar(Period::Day),
            )
            .tokens(1_000),
        )
        .build()
        .unwrap();
    budget
        .record(
            &Attribution::agent("agent"),
            "gpt-4o",
            Usage::new(1_000, 0),
            CommitDetails::default(),
        )
        .await
        .unwrap();
    let recorder = Recorder::default();
    // No pressure downgrade (above 100%), so only the room check moves the call.
    let mut service = RouteLayer::new(budget.clone())
        .downgrade_at(101)
        .layer(recorder.clone());
    assert_eq!(
        model_sent(&mut service, &recorder, Chat::new("gpt-4o", HARD)).await,
        "gpt-4o-mini"
    );

    // When no tier model has room, the call goes as routed (the budget layer refuses it).
    let spent = agent_day_at("agent", 100_000).await;
    let mut service = RouteLayer::new(spent)
        .downgrade_at(101)
        .layer(recorder.clone());
    assert_eq!(
        model_sent(&mut service, &recorder, Chat::new("gpt-4o", HARD)).await,
        "gpt-4o"
    );
}

/// The room check counts the task's own limits: a task whose money cannot pay for the
/// routed model's prompt goes to a cheaper tier that it can pay for.
#[tokio::test]
async fn a_task_limit_with_no_room_falls_back_too() {
    let recorder = Recorder::default();
    let mut service = RouteLayer::new(no_limits())
        .downgrade_at(101)
        .layer(recorder.clone());
    let prompt = Chat::new("gpt-4o", HARD).count_prompt().tokens;
    // One yocto-dollar short of the prompt on gpt-4o ($2.50 per million input tokens); on
    // gpt-4o-mini ($0.15) the same prompt leaves plenty for output.
    let cap = Money::per_million_tokens("2.5")
        .unwrap()
        .saturating_mul_tokens(prompt)
        .saturating_sub(Money::from_units(1));
    let poor = TaskScope::builder(Attribution::agent("agent").with_task(TaskId::new("poor")))
        .money(cap)
        .build();
    let sent = poor
        .run(model_sent(
            &mut service,
            &recorder,
            Chat::new("gpt-4o", HARD),
        ))
        .await;
    assert_eq!(sent, "gpt-4o-mini");
    // Outside the task, nothing limits gpt-4o.
    assert_eq!(
        model_sent(&mut service, &recorder, Chat::new("gpt-4o", HARD)).await,
        "gpt-4o"
    );
}

#[tokio::test]
async fn a_switch_on_the_budgets_control_plane_is_obeyed_and_wins_over_the_layers_own() {
    use budget_core::control_plane::{Actor, ModelSwitch};
    let recorder = Recorder::default();
    let budget = no_limits();
    let layer = RouteLayer::new(budget.clone());
    let mut service = layer.clone().layer(recorder.clone());
    let ops = Actor::operator("ops");

    budget
        .switch_model(
            "agent",
            ModelSwitch::Model("claude-3-haiku".into()),
            ops.clone(),
        )
        .await
        .unwrap();
    assert_eq!(
        model_sent(&mut service, &recorder, Chat::new("gpt-4o", HARD)).await,
        "claude-3-haiku"
    );
    // The layer's own switch does not undo the shared decision...
    layer.controls().switch_to_cheaper("agent");
    assert_eq!(
        model_sent(&mut service, &recorder, Chat::new("gpt-4o", HARD)).await,
        "claude-3-haiku"
    );
    // ...and applies again once the decision is reset.
    budget.reset_model("agent", ops).await.unwrap();
    assert_eq!(
        model_sent(&mut service, &recorder, Chat::new("gpt-4o", HARD)).await,
        "gpt-4o-mini"
    );
}

#[tokio::test]
async fn the_configurations_agents_are_routed_by_their_tier_or_to_their_model() {
    use budget_core::config::Config;
    use budget_core::control_plane::{Actor, ModelSwitch};
    let config = Config::from_yaml(
        "agents:\n  agent: { tier: hard }\n  pinned: { model: claude-3-haiku }\n  plain: {}\n",
    )
    .unwrap();
    let recorder = Recorder::default();
    let budget = no_limits();
    let mut service = RouteLayer::new(budget.clone())
        .agents(&config.agents)
        .layer(recorder.clone());

    // An easy request goes to the easy tier, unless its agent is routed as hard.
    assert_eq!(
        model_sent(
            &mut service,
            &recorder,
            Chat::new("gpt-4o", EASY).by("plain")
        )
        .await,
        "gpt-4o-mini"
    );
    assert_eq!(
        model_sent(&mut service, &recorder, Chat::new("gpt-4o", EASY)).await,
        "gpt-4o"
    );
    // A request's own hint still wins over the agent's tier.
    assert_eq!(
        model_sent(
            &mut service,
            &recorder,
            Chat::new("gpt-4o", HARD).hinted(Difficulty::Easy)
        )
        .await,
        "gpt-4o-mini"
    );
    // An agent with a model calls it, until a runtime switch says otherwise.
    assert_eq!(
        model_sent(
            &mut service,
            &recorder,
            Chat::new("gpt-4o", HARD).by("pinned")
        )
        .await,
        "claude-3-haiku"
    );
    budget
        .switch_model("pinned", ModelSwitch::Cheapest, Actor::operator("ops"))
        .await
        .unwrap();
    assert_eq!(
        model_sent(
            &mut service,
            &recorder,
            Chat::new("gpt-4o", HARD).by("pinned")
        )
        .await,
        "gpt-4o-mini"
    );
}

#[tokio::test]
async fn switch_to_cheaper_pin_and_reset_per_agent() {
    let recorder = Recorder::default();
    let layer = RouteLayer::new(no_limits());
    let mut service = layer.clone().layer(recorder.clone());
    // The handle of a clone controls the same switches.
    let controls = layer.clone().controls();

    controls.switch_to_cheaper("agent");
    assert_eq!(
        layer.controls().override_for("agent"),
        Some(RouteOverride::Cheapest)
    );
    assert_eq!(
        model_sent(&mut service, &recorder, Chat::new("gpt-4o", HARD)).await,
        "gpt-4o-mini"
    );
    // Only that agent.
    assert_eq!(
        model_sent(
            &mut service,
            &recorder,
            Chat::new("gpt-4o", HARD).by("other")
        )
        .await,
        "gpt-4o"
    );
    // Cheaper than a model outside the tiers too, but never dearer.
    assert_eq!(
        model_sent(&mut service, &recorder, Chat::new("claude-3-haiku", HARD)).await,
        "gpt-4o-mini"
    );
    assert_eq!(
        model_sent(&mut service, &recorder, Chat::new("gpt-4.1-nano", HARD)).await,
        "gpt-4.1-nano"
    );

    controls.pin_model("agent", "claude-3-haiku");
    assert_eq!(
        model_sent(&mut service, &recorder, Chat::new("gpt-4o", EASY)).await,
        "claude-3-haiku"
    );

    assert_eq!(
        controls.reset("agent"),
        Some(RouteOverride::Pinned("claude-3-haiku".into()))
    );
    assert_eq!(controls.reset("agent"), None);
    assert_eq!(
        model_sent(&mut service, &recorder, Chat::new("gpt-4o", HARD)).await,
        "gpt-4o"
    );
}

#[tokio::test]
async fn the_ledger_records_the_routed_and_the_requested_model() {
    let budget = no_limits();
    let recorder = Recorder::default();
    let mut service = ServiceBuilder::new()
        .layer(RouteLayer::new(budget.clone()))
        .layer(BudgetLayer::new(budget.clone()))
        .service(recorder.clone());
    scope("t")
        .run(async {
            send(&mut service, Chat::new("gpt-4o", EASY)).await.unwrap();
            send(&mut service, Chat::new("gpt-4o", HARD)).await.unwrap();
        })
        .await;
    let events = budget.ledger().events();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].model.as_ref(), "gpt-4o-mini");
    assert_eq!(events[0].requested_model.as_deref(), Some("gpt-4o"));
    assert_eq!(events[0].attribution.task().unwrap().as_str(), "t");
    // Not routed: nothing to note.
    assert_eq!(events[1].model.as_ref(), "gpt-4o");
    assert_eq!(events[1].requested_model, None);
}

#[tokio::test]
async fn inner_errors_pass_through_unchanged() {
    let recorder = Recorder::default();
    let mut service = RouteLayer::new(no_limits()).layer(recorder.clone());
    let err = send(&mut service, Chat::new("gpt-4o", "FAIL"))
        .await
        .unwrap_err();
    assert_eq!(err, Down("gpt-4o-mini".into()));
}

fn openai_request(text: &str) -> Attributed<CreateChatCompletionRequest> {
    let request = user_request("gpt-4o", text)
        .max_completion_tokens(50u32)
        .build()
        .unwrap();
    Attributed::new(request, Attribution::agent("agent"))
}

#[tokio::test]
async fn end_to_end_the_server_receives_the_routed_model() {
    let server = start_server(5).await;
    let budget = agent_day_at("agent", 0).await;
    let route = RouteLayer::new(budget.clone());
    let controls = route.controls();
    let mut service = ServiceBuilder::new()
        .layer(route)
        .layer(BudgetLayer::new(budget.clone()))
        .service(openai_service(&server));

    send(&mut service, openai_request(EASY)).await.unwrap();
    assert_eq!(server.last_request().unwrap()["model"], "gpt-4o-mini");

    send(&mut service, openai_request(HARD)).await.unwrap();
    assert_eq!(server.last_request().unwrap()["model"], "gpt-4o");

    controls.switch_to_cheaper("agent");
    send(&mut service, openai_request(HARD)).await.unwrap();
    assert_eq!(server.last_request().unwrap()["model"], "gpt-4o-mini");

    let events = budget.ledger().events();
    assert_eq!(events.len(), 3);
    assert_eq!(events[0].model.as_ref(), "gpt-4o-mini");
    assert_eq!(events[0].requested_model.as_deref(), Some("gpt-4o"));
    assert_eq!(events[1].model.as_ref(), "gpt-4o");
    assert_eq!(events[1].requested_model, None);
    assert_eq!(events[2].requested_model.as_deref(), Some("gpt-4o"));
    assert_eq!(events[0].attribution.agent_name(), "agent");
}
