//! What a budget reports: what is left, how close a caller is to its limits, and every
//! counter's status.

use std::sync::Arc;

use jiff::Timestamp;

use super::Budget;
use super::error::{BudgetError, CapDisplay};
use super::plan::CallEstimate;
use crate::Money;
use crate::admission::{Amount, ReserveRequest, headroom};
use crate::attribution::{Attribution, TaskId};
use crate::ledger::Ledger;
use crate::limits::{Cap, Limit, Window, WindowSpan};
use crate::scope::TaskScope;
use crate::store::{BudgetStore, CounterSpec, CounterUsage};

/// How much a caller may still spend under every hard limit that applies to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remaining {
    /// Tokens left under the tightest token cap (`None`: no token cap applies).
    pub tokens: Option<u64>,
    /// Money left under the tightest money cap (`None`: no money cap applies).
    pub money: Option<Money>,
    /// The largest output cap a call with the given prompt could be granted now (`None`: no
    /// limit applies). Zero means the prompt alone does not fit.
    pub max_output_tokens: Option<u64>,
    /// The limit that binds the output cap.
    pub binding_limit: Option<Arc<str>>,
}

/// One limit's counter, for status reports ("what's the budget status?").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitStatus {
    /// The limit.
    pub limit: Arc<Limit>,
    /// The counter's scope value.
    pub scope: Arc<str>,
    /// The task, for per-task limits.
    pub task: Option<TaskId>,
    /// Usage in the current window.
    pub usage: CounterUsage,
    /// When the current window ends (calendar windows).
    pub window_end: Option<Timestamp>,
}

impl LimitStatus {
    /// The larger of the token and money percentages used (committed + reserved), rounded down.
    pub fn percent_used(&self) -> u32 {
        percent_used(&self.limit.cap, self.usage.in_use())
    }
}

/// One line for a person: `research/day (researcher): 12400 tokens / $0.31 of 50000 tokens
/// (24% used), 1200 tokens / $0.012 reserved by 2 calls in flight, until 2026-12-07T05:00:00Z`.
impl std::fmt::Display for LimitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let usage = &self.usage;
        write!(f, "{} ({}", self.limit.id, self.scope)?;
        if let Some(task) = &self.task
            && task.as_str() != &*self.scope
        {
            write!(f, ", task {task}")?;
        }
        write!(
            f,
            "): {} tokens / {} of {} ({}% used",
            usage.committed.tokens,
            usage.committed.money,
            CapDisplay(&self.limit.cap),
            self.percent_used()
        )?;
        if !self.limit.is_hard() {
            f.write_str(", soft")?;
        }
        f.write_str(")")?;
        if usage.in_flight > 0 || !usage.reserved.is_zero() {
            write!(
                f,
                ", {} tokens / {} reserved by {} calls in flight",
                usage.reserved.tokens, usage.reserved.money, usage.in_flight
            )?;
        }
        let overshoot = usage.overshoot();
        if !overshoot.is_zero() {
            write!(
                f,
                ", {} tokens / {} beyond what was reserved",
                overshoot.tokens, overshoot.money
            )?;
        }
        if let Some(end) = self.window_end {
            write!(f, ", until {end}")?;
        }
        Ok(())
    }
}

/// Percent of `cap` used by `used`: the larger of tokens and money, rounded down.
pub fn percent_used(cap: &Cap, used: Amount) -> u32 {
    let tokens = cap
        .tokens
        .map_or(0, |c| ratio(u128::from(used.tokens), u128::from(c)));
    let money = cap.money.map_or(0, |c| {
        ratio(
            u128::try_from(used.money.units()).unwrap_or(0),
            u128::try_from(c.units()).unwrap_or(0),
        )
    });
    tokens.max(money)
}

fn ratio(used: u128, cap: u128) -> u32 {
    if cap == 0 {
        return if used == 0 { 0 } else { u32::MAX };
    }
    u32::try_from(used.saturating_mul(100) / cap).unwrap_or(u32::MAX)
}

/// Denials per agent, kept for reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DenialCounts {
    /// Refused because a window's budget was spent.
    pub exhausted: u64,
    /// Refused because the call alone exceeds a limit.
    pub exceeds_limit: u64,
    /// Refused because the agent was paused or its task cancelled.
    pub stopped: u64,
}

/// The budget handle. Cheap to clone; clones share everything.
impl<S: BudgetStore, L: Ledger> Budget<S, L> {
    /// How much `who` may still spend on `model`, and the largest output cap a call with
    /// `prompt_tokens` could be granted now.
    pub async fn remaining(
        &self,
        who: &Attribution,
        model: &str,
        prompt_tokens: u64,
    ) -> Result<Remaining, BudgetError> {
        self.remaining_in_scope(who, None, model, prompt_tokens)
            .await
    }

    /// [`Budget::remaining`], counting the task scope's own limits (and its parents') too, as
    /// a call made inside `scope` is.
    pub async fn remaining_in_scope(
        &self,
        who: &Attribution,
        scope: Option<&TaskScope>,
        model: &str,
        prompt_tokens: u64,
    ) -> Result<Remaining, BudgetError> {
        let (plan, usages) = self
            .hard_counters_in_use(who, scope, model, prompt_tokens)
            .await?;
        // One choice: one unit is one output token.
        let prompt_cost = plan.request.base.money;
        let per_output = plan.request.per_unit.money;
        let mut out = Remaining {
            tokens: None,
            money: None,
            max_output_tokens: None,
            binding_limit: None,
        };
        for (spec, usage) in plan.counters.iter().zip(usages) {
            let (tokens_left, money_left) = headroom(spec.cap(), usage.in_use());
            let mut output: Option<u64> = None;
            if let Some(t) = tokens_left {
                out.tokens = Some(out.tokens.map_or(t, |o| o.min(t)));
                output = Some(t.saturating_sub(prompt_tokens));
            }
            if let Some(m) = money_left {
                out.money = Some(out.money.map_or(m, |o| o.min(m)));
                let after_prompt = m.saturating_sub(prompt_cost).max(Money::ZERO);
                let by_money = per_output
                    .tokens_affordable(after_prompt)
                    .unwrap_or(u64::MAX);
                output = Some(output.map_or(by_money, |o| o.min(by_money)));
            }
            if let Some(o) = output
                && out.max_output_tokens.is_none_or(|cur| o < cur)
            {
                out.max_output_tokens = Some(o);
                out.binding_limit = Some(spec.key.limit.clone());
            }
        }
        Ok(out)
    }

    /// How close `who` is to its budget for `model`: the highest percentage used (committed +
    /// reserved, tokens or money) over every hard limit that applies, the scope's own task
    /// limits included; `None` when no limit applies. Compression and routing react to it.
    pub async fn pressure(
        &self,
        who: &Attribution,
        scope: Option<&TaskScope>,
        model: &str,
    ) -> Result<Option<u32>, BudgetError> {
        let (plan, usages) = self.hard_counters_in_use(who, scope, model, 0).await?;
        Ok(plan
            .counters
            .iter()
            .zip(usages)
            .map(|(spec, usage)| percent_used(spec.cap(), usage.in_use()))
            .max())
    }

    /// The hard counters a call of `prompt_tokens` by `who` to `model` (in `scope`) is held
    /// to, with their usage now.
    async fn hard_counters_in_use(
        &self,
        who: &Attribution,
        scope: Option<&TaskScope>,
        model: &str,
        prompt_tokens: u64,
    ) -> Result<(HardCounters, Vec<CounterUsage>), BudgetError> {
        self.ensure_restored().await?;
        if let Some(scope) = scope {
            self.bind_scope(scope);
        }
        let now = self.now();
        let plan = self.planner(now, |planner| {
            planner.plan(who, scope, model, &CallEstimate::new(prompt_tokens, 0..=0))
        })?;
        let request = plan.request;
        let counters = plan.into_hard_counters();
        let usages = self.inner.store.usage(&counters, now).await?;
        Ok((HardCounters { request, counters }, usages))
    }

    /// Every counter in a current window, joined with its limit; plus the limits that name one
    /// scope and have not been used yet. Sorted by limit id, then scope.
    pub async fn status(&self) -> Result<Vec<LimitStatus>, BudgetError> {
        self.ensure_restored().await?;
        let now = self.now();
        let limits = self.limits();
        let snapshot = self.inner.store.snapshot(now).await?;
        let mut out = Vec::new();
        for limit in limits.iter() {
            let span = self.inner.windows.span(&limit.window, now)?;
            let window_end = match span {
                WindowSpan::Calendar { end, .. } => Some(end),
                _ => None,
            };
            let mut found = false;
            for (key, usage) in snapshot.iter().filter(|(k, _)| k.limit == limit.id) {
                if key.window != span.id() {
                    continue;
                }
                found = true;
                out.push(LimitStatus {
                    limit: limit.clone(),
                    scope: key.scope.clone(),
                    task: key.task.clone(),
                    usage: *usage,
                    window_end,
                });
            }
            if !found && limit.window != Window::PerTask {
                let scope = limit.selector.named_scope();
                if let Some(scope) = scope {
                    out.push(LimitStatus {
                        limit: limit.clone(),
                        scope,
                        task: None,
                        usage: CounterUsage::default(),
                        window_end,
                    });
                }
            }
        }
        out.sort_by(|a, b| (&a.limit.id, &a.scope, &a.task).cmp(&(&b.limit.id, &b.scope, &b.task)));
        Ok(out)
    }
}

/// A call's hard counters, and what the call asks of each.
struct HardCounters {
    request: ReserveRequest,
    counters: Vec<CounterSpec>,
}
