//! Building a [`Budget`].

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use jiff::tz::TimeZone;
use parking_lot::{Mutex, RwLock};

use super::control::ControlBinding;
use super::plan::Windows;
use super::{Budget, Inner};
use crate::clock::{Clock, SystemClock};
use crate::control_plane::ControlLog;
use crate::controls::Controls;
use crate::ledger::{Ledger, MemoryLedger};
use crate::limits::{Limit, LimitError, LimitSet};
use crate::pricing::{PriceError, PriceTable};
use crate::store::{BudgetStore, MemoryBudgetStore};

/// Builds a [`Budget`].
#[derive(Debug)]
pub struct BudgetBuilder<S, L> {
    store: S,
    ledger: L,
    limits: Vec<Limit>,
    prices: Option<PriceTable>,
    clock: Arc<dyn Clock>,
    time_zone: TimeZone,
    restore: Option<bool>,
    control: Option<ControlBinding>,
    critical_agents: Vec<Arc<str>>,
}

impl Budget {
    /// A builder with an in-memory store and ledger, the built-in price table, the system
    /// clock and UTC.
    pub fn builder() -> BudgetBuilder<MemoryBudgetStore, MemoryLedger> {
        BudgetBuilder {
            store: MemoryBudgetStore::new(),
            ledger: MemoryLedger::new(),
            limits: Vec::new(),
            prices: None,
            clock: Arc::new(SystemClock),
            time_zone: TimeZone::UTC,
            restore: None,
            control: None,
            critical_agents: Vec::new(),
        }
    }
}

impl<S: BudgetStore, L: Ledger> BudgetBuilder<S, L> {
    /// Adds a limit.
    pub fn limit(mut self, limit: Limit) -> Self {
        self.limits.push(limit);
        self
    }

    /// Adds limits.
    pub fn limits(mut self, limits: impl IntoIterator<Item = Limit>) -> Self {
        self.limits.extend(limits);
        self
    }

    /// Uses this price table instead of the built-in one.
    pub fn prices(mut self, prices: PriceTable) -> Self {
        self.prices = Some(prices);
        self
    }

    /// Uses the built-in price table with the LiteLLM-format file named by
    /// `TOKEN_BUDGET_PRICES` merged over it ([`PriceTable::from_env`]); unset or empty, the
    /// built-in table. A file that cannot be read or holds no usable prices is an error naming
    /// it.
    pub fn prices_from_env(self) -> Result<Self, PriceError> {
        Ok(self.prices(PriceTable::from_env()?))
    }

    /// Uses this clock.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Cuts calendar windows in this time zone.
    pub fn time_zone(mut self, tz: TimeZone) -> Self {
        self.time_zone = tz;
        self
    }

    /// Whether to rebuild the current windows from the ledger before the first call (see
    /// [`Budget::restore_from_ledger`]). By default a budget does when its ledger is durable,
    /// so that a restart does not hand out a fresh day; `false` is the explicit opt-out (a
    /// demo that counts each run apart, a ledger shared with unrelated budgets).
    pub fn restore_windows(mut self, restore: bool) -> Self {
        self.restore = Some(restore);
        self
    }

    /// Declares `agent` critical: pausing every non-critical agent leaves it running
    /// ([`Controls::mark_critical`]).
    pub fn critical_agent(mut self, agent: impl Into<Arc<str>>) -> Self {
        self.critical_agents.push(agent.into());
        self
    }

    /// Obeys this control log: the decisions of every budget on it (limits, pauses, kills,
    /// model switches) apply here, replayed before the first call and then as
    /// [`Budget::sync_control`] or [`Budget::watch_control`] read them. Without one, a budget
    /// keeps its decisions in memory, for this process alone.
    pub fn control_log(mut self, log: impl ControlLog) -> Self {
        self.control = Some(ControlBinding::new(log));
        self
    }

    /// Uses this store.
    pub fn store<S2: BudgetStore>(self, store: S2) -> BudgetBuilder<S2, L> {
        BudgetBuilder {
            store,
            ledger: self.ledger,
            limits: self.limits,
            prices: self.prices,
            clock: self.clock,
            time_zone: self.time_zone,
            restore: self.restore,
            control: self.control,
            critical_agents: self.critical_agents,
        }
    }

    /// Uses this ledger.
    pub fn ledger<L2: Ledger>(self, ledger: L2) -> BudgetBuilder<S, L2> {
        BudgetBuilder {
            store: self.store,
            ledger,
            limits: self.limits,
            prices: self.prices,
            clock: self.clock,
            time_zone: self.time_zone,
            restore: self.restore,
            control: self.control,
            critical_agents: self.critical_agents,
        }
    }

    /// Validates the limits and builds the budget.
    pub fn build(self) -> Result<Budget<S, L>, LimitError> {
        let limits = LimitSet::new(self.limits)?;
        let prices = self.prices.unwrap_or_else(PriceTable::builtin);
        let restore_on_start = self.restore.unwrap_or_else(|| self.ledger.is_durable());
        Ok(Budget {
            inner: Arc::new(Inner {
                store: self.store,
                ledger: self.ledger,
                limits: RwLock::new(Arc::new(limits.clone())),
                own_limits: RwLock::new(limits),
                control: self.control.unwrap_or_else(ControlBinding::in_memory),
                prices: RwLock::new(Arc::new(prices)),
                clock: self.clock,
                windows: Windows::new(self.time_zone),
                controls: {
                    let controls = Controls::default();
                    for agent in &self.critical_agents {
                        controls.mark_critical(agent);
                    }
                    controls
                },
                next_event: AtomicU64::new(1),
                denials: Mutex::new(HashMap::new()),
                restore_on_start,
                restored: tokio::sync::OnceCell::new(),
            }),
        })
    }
}
