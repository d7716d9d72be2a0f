use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use budget_core::config::{AgentConfig, RoutingConfig};
use budget_core::control_plane::ModelSwitch;
use budget_core::conversation::Difficulty;
use budget_core::{
    Budget, BudgetStore, Ledger, MemoryBudgetStore, MemoryLedger, Money, PriceTable,
};
use tower::Layer;

use super::RouteService;
use super::classify::{DifficultyClassifier, HeuristicClassifier};

/// The budget pressure (percent used) at which routing downgrades one tier, by default.
pub const DEFAULT_DOWNGRADE_AT: u32 = 80;

#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// The model of each tier, indexed by [`tier_index`].
    pub(crate) tiers: [Arc<str>; 3],
    pub(crate) classifier: Arc<dyn DifficultyClassifier>,
    pub(crate) downgrade_at: u32,
    pub(crate) route_all: bool,
    /// Whether difficulty may send a call to a dearer model than the one asked for.
    pub(crate) allow_upgrades: bool,
    /// Per agent (the configuration's `agents`): the model its calls go to, or the tier they
    /// are routed as instead of being classified.
    pub(crate) agents: std::collections::HashMap<Arc<str>, AgentRoute>,
}

/// How the configuration routes one agent's calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AgentRoute {
    /// Always this model (a runtime switch still wins).
    Model(Arc<str>),
    /// Routed as this difficulty, whatever the request looks like (a request's own hint wins).
    Tier(Difficulty),
}

fn tier_index(difficulty: Difficulty) -> usize {
    match difficulty {
        Difficulty::Easy => 0,
        Difficulty::Medium => 1,
        Difficulty::Hard => 2,
    }
}

/// What a model costs for ranking: input + output price per token (base rates), when the
/// price table knows the model (an unknown model priced at the fallback is not ranked).
pub(crate) fn price_key(prices: &PriceTable, model: &str) -> Option<Money> {
    prices
        .resolve(model)
        .ok()
        .filter(|r| !r.fallback)
        .map(|r| r.price.input + r.price.output)
}

/// Whether `a` and `b` name the same model: equal ids, or ids the price table resolves to the
/// same entry (`gpt-4o-2024-08-06` and `gpt-4o`).
pub(crate) fn same_model(prices: &PriceTable, a: &str, b: &str) -> bool {
    if a.trim().eq_ignore_ascii_case(b.trim()) {
        return true;
    }
    match (prices.resolve(a), prices.resolve(b)) {
        (Ok(x), Ok(y)) => !x.fallback && !y.fallback && x.id == y.id,
        _ => false,
    }
}

impl Settings {
    pub(crate) fn tier(&self, difficulty: Difficulty) -> &str {
        &self.tiers[tier_index(difficulty)]
    }

    pub(crate) fn is_tier_model(&self, prices: &PriceTable, model: &str) -> bool {
        self.tiers.iter().any(|t| same_model(prices, t, model))
    }

    /// The dearest tier model that is strictly cheaper than `model`: one step down, skipping
    /// tiers that share a model. `None` when nothing is cheaper or `model` has no price.
    pub(crate) fn next_cheaper(&self, prices: &PriceTable, model: &str) -> Option<Arc<str>> {
        let current = price_key(prices, model)?;
        let mut best: Option<(Money, &Arc<str>)> = None;
        for tier in &self.tiers {
            let Some(price) = price_key(prices, tier) else {
                continue;
            };
            if price < current && best.is_none_or(|(b, _)| price > b) {
                best = Some((price, tier));
            }
        }
        best.map(|(_, tier)| tier.clone())
    }

    /// The cheapest tier model by price (the easy tier's when no tier model has a price).
    pub(crate) fn cheapest(&self, prices: &PriceTable) -> Arc<str> {
        let mut best: Option<(Money, &Arc<str>)> = None;
        for tier in &self.tiers {
            if let Some(price) = price_key(prices, tier)
                && best.is_none_or(|(b, _)| price < b)
            {
                best = Some((price, tier));
            }
        }
        best.map_or_else(|| self.tier(Difficulty::Easy).into(), |(_, t)| t.clone())
    }
}

/// An operator's routing instruction for one agent (see [`RouteControls`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RouteOverride {
    /// "Switch to cheaper model": every call goes to the cheapest tier model (by price), unless
    /// the caller's own model is already no dearer.
    Cheapest,
    /// Every call goes to this model, whatever its difficulty or the budget pressure.
    Pinned(Arc<str>),
}

impl From<ModelSwitch> for RouteOverride {
    fn from(switch: ModelSwitch) -> RouteOverride {
        match switch {
            ModelSwitch::Cheapest => RouteOverride::Cheapest,
            ModelSwitch::Model(model) => RouteOverride::Pinned(model),
        }
    }
}

/// The live per-agent routing switches of a [`RouteLayer`]: "switch to cheaper model" as one
/// call. Cheap to clone; clones (and every clone of the layer and its services) share the
/// switches, and a change applies to the next call.
///
/// ```
/// use budget_core::Budget;
/// use budget_tower::route::{RouteLayer, RouteOverride};
///
/// let layer = RouteLayer::new(Budget::builder().build().unwrap());
/// let controls = layer.controls();
/// controls.switch_to_cheaper("support-bot");
/// controls.pin_model("researcher", "gpt-4o");
/// assert_eq!(layer.controls().override_for("support-bot"), Some(RouteOverride::Cheapest));
/// assert_eq!(controls.reset("support-bot"), Some(RouteOverride::Cheapest));
/// assert_eq!(controls.overrides().len(), 1);
/// ```
#[derive(Debug, Clone, Default)]
pub struct RouteControls {
    overrides: Arc<RwLock<HashMap<Arc<str>, RouteOverride>>>,
}

impl RouteControls {
    /// Switches without any override.
    pub fn new() -> Self {
        RouteControls::default()
    }

    /// From now on, `agent`'s calls go to the cheapest tier model (see
    /// [`RouteOverride::Cheapest`]).
    pub fn switch_to_cheaper(&self, agent: impl Into<Arc<str>>) {
        self.set(agent.into(), RouteOverride::Cheapest);
    }

    /// From now on, `agent`'s calls go to `model`.
    pub fn pin_model(&self, agent: impl Into<Arc<str>>, model: impl Into<Arc<str>>) {
        self.set(agent.into(), RouteOverride::Pinned(model.into()));
    }

    /// Back to routing by difficulty and budget for `agent`; returns the override it had.
    pub fn reset(&self, agent: &str) -> Option<RouteOverride> {
        self.overrides
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(agent)
    }

    /// The override `agent` has, if any.
    pub fn override_for(&self, agent: &str) -> Option<RouteOverride> {
        self.overrides
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(agent)
            .cloned()
    }

    /// Every agent's override, sorted by agent.
    pub fn overrides(&self) -> Vec<(Arc<str>, RouteOverride)> {
        let mut all: Vec<_> = self
            .overrides
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(a, o)| (a.clone(), o.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    fn set(&self, agent: Arc<str>, value: RouteOverride) {
        self.overrides
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(agent, value);
    }
}

/// Routes each chat call to a model tier by difficulty and budget. See the [module
/// docs](super).
#[derive(Debug)]
pub struct RouteLayer<St: BudgetStore = MemoryBudgetStore, L: Ledger = MemoryLedger> {
    budget: Budget<St, L>,
    settings: Arc<Settings>,
    controls: RouteControls,
}

impl<St: BudgetStore, L: Ledger> Clone for RouteLayer<St, L> {
    fn clone(&self) -> Self {
        RouteLayer {
            budget: self.budget.clone(),
            settings: self.settings.clone(),
            controls: self.controls.clone(),
        }
    }
}

impl<St: BudgetStore, L: Ledger> RouteLayer<St, L> {
    /// A layer reading pressure and prices from `budget`, with the default tiers (easy ->
    /// `gpt-4o-mini`, medium and hard -> `gpt-4o`), the [`HeuristicClassifier`], a downgrade
    /// at [`DEFAULT_DOWNGRADE_AT`]% and only requests for a tier model routed.
    pub fn new(budget: Budget<St, L>) -> Self {
        RouteLayer {
            budget,
            settings: Arc::new(Settings {
                tiers: [
                    Arc::from("gpt-4o-mini"),
                    Arc::from("gpt-4o"),
                    Arc::from("gpt-4o"),
                ],
                classifier: Arc::new(HeuristicClassifier::default()),
                downgrade_at: DEFAULT_DOWNGRADE_AT,
                route_all: false,
                allow_upgrades: false,
                agents: std::collections::HashMap::new(),
            }),
            controls: RouteControls::default(),
        }
    }

    /// Settings are changed only while the layer is built; clones made before share the old.
    fn settings_mut(&mut self) -> &mut Settings {
        Arc::make_mut(&mut self.settings)
    }

    /// Sends `difficulty` calls to `model`.
    pub fn tier(mut self, difficulty: Difficulty, model: impl Into<Arc<str>>) -> Self {
        self.settings_mut().tiers[tier_index(difficulty)] = model.into();
        self
    }

    /// Judges requests without a difficulty hint with `classifier`.
    pub fn classifier(mut self, classifier: impl DifficultyClassifier + 'static) -> Self {
        self.settings_mut().classifier = Arc::new(classifier);
        self
    }

    /// Downgrades one tier when the budget pressure on the routed model reaches `percent`.
    /// Above 100 never downgrades.
    pub fn downgrade_at(mut self, percent: u32) -> Self {
        self.settings_mut().downgrade_at = percent;
        self
    }

    /// Lets difficulty send a call to a *dearer* model than the one asked for (a hard
    /// question asked of gpt-4o-mini goes to gpt-4o). Off by default: the router only ever
    /// saves money — a tier above the requested model is not used.
    pub fn allow_upgrades(mut self, allow: bool) -> Self {
        self.settings_mut().allow_upgrades = allow;
        self
    }

    /// Routes every request, also those asking for a model that is not one of the tiers'
    /// (default `false`: such requests are sent as they are).
    pub fn route_all(mut self, all: bool) -> Self {
        self.settings_mut().route_all = all;
        self
    }

    /// Takes the tiers, the downgrade threshold, `route_all` and `allow_upgrades` from the
    /// `routing` section of a configuration file.
    ///
    /// ```
    /// use budget_core::Budget;
    /// use budget_core::config::Config;
    /// use budget_core::conversation::Difficulty;
    /// use budget_tower::RouteLayer;
    ///
    /// let config = Config::from_yaml("routing:\n  tiers: { easy: claude-3-haiku }\n")?;
    /// let budget = Budget::builder().config(&config).build()?;
    /// let route = RouteLayer::new(budget).routing(&config.routing);
    /// assert_eq!(route.tier_model(Difficulty::Easy), "claude-3-haiku");
    /// assert_eq!(route.tier_model(Difficulty::Hard), "gpt-4o");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn routing(self, routing: &RoutingConfig) -> Self {
        self.tier(Difficulty::Easy, routing.easy.as_str())
            .tier(Difficulty::Medium, routing.medium.as_str())
            .tier(Difficulty::Hard, routing.hard.as_str())
            .downgrade_at(routing.downgrade_at)
            .route_all(routing.route_all)
            .allow_upgrades(routing.allow_upgrades)
    }

    /// Routes the configuration's agents: an agent with a `model` always calls it (below any
    /// runtime switch); an agent with a `tier` is routed as that difficulty instead of being
    /// classified (below a request's own hint).
    pub fn agents<'a>(
        mut self,
        agents: impl IntoIterator<Item = (&'a String, &'a AgentConfig)>,
    ) -> Self {
        for (name, agent) in agents {
            let route = match (&agent.model, agent.tier) {
                (Some(model), _) => AgentRoute::Model(Arc::from(model.as_str())),
                (None, Some(tier)) => AgentRoute::Tier(tier),
                (None, None) => continue,
            };
            self.settings_mut()
                .agents
                .insert(Arc::from(name.as_str()), route);
        }
        self
    }

    /// Uses `controls` (shared with another layer, say) instead of this layer's own.
    pub fn with_controls(mut self, controls: RouteControls) -> Self {
        self.controls = controls;
        self
    }

    /// The layer's per-agent switches ("switch to cheaper model"), shared with every clone of
    /// the layer and the services it builds.
    pub fn controls(&self) -> RouteControls {
        self.controls.clone()
    }

    /// The model `difficulty` calls go to (before any downgrade).
    pub fn tier_model(&self, difficulty: Difficulty) -> &str {
        self.settings.tier(difficulty)
    }
}

impl<S, St: BudgetStore, L: Ledger> Layer<S> for RouteLayer<St, L> {
    type Service = RouteService<S, St, L>;

    fn layer(&self, inner: S) -> Self::Service {
        RouteService::new(
            inner,
            self.budget.clone(),
            self.settings.clone(),
            self.controls.clone(),
        )
    }
}
