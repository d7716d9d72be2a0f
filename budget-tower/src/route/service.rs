use std::sync::Arc;
use std::task::{Context, Poll};

use budget_core::conversation::Difficulty;
use budget_core::scope::TaskScope;

use crate::note::CallNote;
use budget_core::{Attribution, Budget, BudgetStore, Ledger, PriceTable};
use tower::Service;

use super::future::ResponseFuture;

use super::layer::{AgentRoute, RouteControls, RouteOverride, Settings, price_key, same_model};
use crate::llm::{ChatRequest, attribution_of, take_readied};

/// The service of [`RouteLayer`](super::RouteLayer).
#[derive(Debug)]
pub struct RouteService<S, St: BudgetStore, L: Ledger> {
    inner: S,
    budget: Budget<St, L>,
    settings: Arc<Settings>,
    controls: RouteControls,
}

impl<S: Clone, St: BudgetStore, L: Ledger> Clone for RouteService<S, St, L> {
    fn clone(&self) -> Self {
        RouteService {
            inner: self.inner.clone(),
            budget: self.budget.clone(),
            settings: self.settings.clone(),
            controls: self.controls.clone(),
        }
    }
}

impl<S, St: BudgetStore, L: Ledger> RouteService<S, St, L> {
    pub(super) fn new(
        inner: S,
        budget: Budget<St, L>,
        settings: Arc<Settings>,
        controls: RouteControls,
    ) -> Self {
        RouteService {
            inner,
            budget,
            settings,
            controls,
        }
    }

    inner_service_accessors!();

    /// The per-agent switches this service obeys.
    pub fn controls(&self) -> RouteControls {
        self.controls.clone()
    }
}

impl<S, R, St, L> Service<R> for RouteService<S, St, L>
where
    R: ChatRequest + Send + 'static,
    S: Service<R> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send + 'static,
    St: BudgetStore,
    L: Ledger,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        let inner = take_readied(&mut self.inner);
        ResponseFuture::new(routed_call(
            self.budget.clone(),
            self.settings.clone(),
            self.controls.clone(),
            inner,
            request,
        ))
    }
}

/// Where a call goes before the room check.
#[derive(Debug)]
struct Plan {
    model: Arc<str>,
    /// Why (for the trace).
    reason: &'static str,
    /// Whether a cheaper tier may stand in when this model has no room left.
    may_fall_back: bool,
}

/// The model the tiers, the difficulty and the pressure choose.
async fn by_difficulty<St: BudgetStore, L: Ledger>(
    budget: &Budget<St, L>,
    settings: &Settings,
    prices: &PriceTable,
    who: &Attribution,
    scope: Option<&TaskScope>,
    difficulty: Difficulty,
) -> Plan {
    let model: Arc<str> = settings.tier(difficulty).into();
    // An unknown model or a failing store: no downgrade; the budget layer will say why.
    let pressure = budget.pressure(who, scope, &model).await.ok().flatten();
    if pressure.is_some_and(|p| p >= settings.downgrade_at)
        && let Some(cheaper) = settings.next_cheaper(prices, &model)
    {
        return Plan {
            model: cheaper,
            reason: "budget pressure: downgraded one tier",
            may_fall_back: true,
        };
    }
    Plan {
        model,
        reason: "difficulty tier",
        may_fall_back: true,
    }
}

async fn routed_call<S, R, St, L>(
    budget: Budget<St, L>,
    settings: Arc<Settings>,
    controls: RouteControls,
    mut inner: S,
    mut request: R,
) -> Result<S::Response, S::Error>
where
    R: ChatRequest,
    S: Service<R>,
    St: BudgetStore,
    L: Ledger,
{
    let scope = TaskScope::current();
    let who = attribution_of(scope.as_ref(), &request);
    let original: Arc<str> = request.model().into();
    let prices = budget.prices();
    // The control plane's switch (shared by every process) wins over this layer's own, which
    // wins over the configuration's model for the agent.
    let configured = settings.agents.get(who.agent_name());
    let switch = budget
        .model_switch(who.agent_name())
        .map(RouteOverride::from)
        .or_else(|| controls.override_for(who.agent_name()));
    let switch = switch.or_else(|| match configured {
        Some(AgentRoute::Model(model)) => Some(RouteOverride::Pinned(model.clone())),
        _ => None,
    });
    let plan = match switch {
        Some(RouteOverride::Pinned(model)) => Some(Plan {
            model,
            reason: "pinned for the agent",
            may_fall_back: false,
        }),
        Some(RouteOverride::Cheapest) => {
            let cheapest = settings.cheapest(&prices);
            let cheaper = match (price_key(&prices, &cheapest), price_key(&prices, &original)) {
                (Some(target), Some(asked)) => target < asked,
                (_, None) => settings.route_all,
                (None, Some(_)) => false,
            };
            cheaper.then_some(Plan {
                model: cheapest,
                reason: "switched to the cheapest tier for the agent",
                may_fall_back: false,
            })
        }
        None if settings.route_all || settings.is_tier_model(&prices, &original) => {
            let difficulty = match (request.difficulty_hint(), configured) {
                (Some(hint), _) => hint,
                (None, Some(AgentRoute::Tier(tier))) => *tier,
                (None, _) => settings.classifier.classify(&original, &request.turns()),
            };
            let plan = by_difficulty(
                &budget,
                &settings,
                &prices,
                &who,
                scope.as_ref(),
                difficulty,
            )
            .await;
            // Unless upgrades are allowed, a dearer tier than the model asked for is not used.
            let dearer = match (
                price_key(&prices, &plan.model),
                price_key(&prices, &original),
            ) {
                (Some(routed), Some(asked)) => routed > asked,
                _ => false,
            };
            (settings.allow_upgrades || !dearer).then_some(plan)
        }
        None => None,
    };
    // The room check: `plan.model`, else the next cheaper tier model that every limit still
    // leaves room for; the plan's own model when none has room (the budget layer refuses it
    // then). The prompt is counted for each candidate (encodings differ between families).
    let plan = match plan {
        Some(plan) if plan.may_fall_back => {
            let mut candidate = plan.model.clone();
            let mut fell_back = false;
            loop {
                request.set_model(&candidate);
                let prompt = request.count_prompt().tokens;
                let room = budget
                    .remaining_in_scope(&who, scope.as_ref(), &candidate, prompt)
                    .await;
                let full = matches!(room, Ok(r) if r.max_output_tokens == Some(0));
                if !full {
                    break Some(Plan {
                        reason: if fell_back {
                            "no room left on the routed model: fell back to a cheaper tier"
                        } else {
                            plan.reason
                        },
                        model: candidate,
                        may_fall_back: false,
                    });
                }
                match settings.next_cheaper(&prices, &candidate) {
                    Some(cheaper) => {
                        candidate = cheaper;
                        fell_back = true;
                    }
                    None => break Some(plan),
                }
            }
        }
        other => other,
    };
    let Some(plan) = plan.filter(|p| !same_model(&prices, &p.model, &original)) else {
        request.set_model(&original);
        return inner.call(request).await;
    };
    tracing::debug!(
        target: "token_budget::route",
        agent = who.agent_name(),
        requested = &*original,
        routed = &*plan.model,
        reason = plan.reason,
        "call routed"
    );
    request.set_model(&plan.model);
    let note = CallNote {
        requested_model: Some(original),
        ..CallNote::default()
    };
    note.run(inner.call(request)).await
}
