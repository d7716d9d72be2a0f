//! The shared state: one governor keyed limiter per configured rate, and the admission of a
//! call through them.

use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{InsufficientCapacity, RateLimiter};
use tokio::time::Instant;

use super::{LimitKind, Policy, Rate, RateLimitError, RateLimitKey};

/// A governor limiter keyed by agent or model name.
type Keyed<C> =
    RateLimiter<Arc<str>, DashMapStateStore<Arc<str>>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// Values for named agents (or models), and one for every other name.
#[derive(Debug, Clone)]
pub(super) struct Tier<T> {
    pub(super) named: BTreeMap<Arc<str>, T>,
    pub(super) default: Option<T>,
}

impl<T> Default for Tier<T> {
    fn default() -> Self {
        Tier {
            named: BTreeMap::new(),
            default: None,
        }
    }
}

impl<T> Tier<T> {
    /// The value for `name`: its own, else the default.
    fn get(&self, name: &str) -> Option<&T> {
        self.named.get(name).or(self.default.as_ref())
    }

    fn map<U>(&self, mut f: impl FnMut(&T) -> U) -> Tier<U> {
        Tier {
            named: self.named.iter().map(|(k, v)| (k.clone(), f(v))).collect(),
            default: self.default.as_ref().map(f),
        }
    }

    fn values(&self) -> impl Iterator<Item = &T> {
        self.named.values().chain(self.default.as_ref())
    }
}

/// The configured rates.
#[derive(Debug, Clone, Default)]
pub(super) struct Rates {
    pub(super) agent_requests: Tier<Rate>,
    pub(super) agent_tokens: Tier<Rate>,
    pub(super) model_requests: Tier<Rate>,
    pub(super) model_tokens: Tier<Rate>,
}

/// One configured rate: its capacity and its limiter (none for a capacity of 0, which admits
/// nothing).
struct Limiter<C: Clock> {
    capacity: u32,
    gcra: Option<Keyed<C>>,
}

impl<C: Clock + Clone> Limiter<C> {
    fn new(rate: &Rate, clock: &C) -> Self {
        Limiter {
            capacity: rate.capacity(),
            gcra: rate
                .quota()
                .map(|quota| RateLimiter::dashmap_with_clock(quota, clock.clone())),
        }
    }
}

/// The limiters of a layer, shared by its clones and their services.
pub(super) struct Limits<C: Clock> {
    rates: Rates,
    clock: C,
    agent_requests: Tier<Limiter<C>>,
    agent_tokens: Tier<Limiter<C>>,
    model_requests: Tier<Limiter<C>>,
    model_tokens: Tier<Limiter<C>>,
}

/// The limiters a call must pass, in charging order; see [`Limits::plan`].
pub(super) struct Plan<'a, C: Clock> {
    limits: &'a Limits<C>,
    steps: Vec<Step<'a, C>>,
}

/// One limiter a call must pass, with what it is charged there.
struct Step<'a, C: Clock> {
    key: RateLimitKey,
    kind: LimitKind,
    limiter: &'a Keyed<C>,
    weight: NonZeroU32,
}

impl<C: Clock + Clone> Limits<C> {
    /// Fresh limiters (nothing charged yet) for `rates`, reading `clock`.
    pub(super) fn new(rates: Rates, clock: C) -> Self {
        let build = |tier: &Tier<Rate>| tier.map(|rate| Limiter::new(rate, &clock));
        Limits {
            agent_requests: build(&rates.agent_requests),
            agent_tokens: build(&rates.agent_tokens),
            model_requests: build(&rates.model_requests),
            model_tokens: build(&rates.model_tokens),
            rates,
            clock,
        }
    }
}

impl<C: Clock> Limits<C> {
    pub(super) fn rates(&self) -> &Rates {
        &self.rates
    }

    pub(super) fn clock(&self) -> &C {
        &self.clock
    }

    fn tiers(&self) -> [&Tier<Limiter<C>>; 4] {
        [
            &self.agent_requests,
            &self.agent_tokens,
            &self.model_requests,
            &self.model_tokens,
        ]
    }

    /// Whether no rate is configured at all (calls pass straight through).
    pub(super) fn is_empty(&self) -> bool {
        self.tiers()
            .iter()
            .all(|tier| tier.named.is_empty() && tier.default.is_none())
    }

    /// Forgets the keys whose state is indistinguishable from a fresh one.
    pub(super) fn retain_recent(&self) {
        for limiter in self.tiers().into_iter().flat_map(Tier::values) {
            if let Some(gcra) = &limiter.gcra {
                gcra.retain_recent();
                gcra.shrink_to_fit();
            }
        }
    }

    /// The limiters a call must pass, in charging order (see the module docs): the agent's
    /// request limit, the model's request limit, the agent's token limit, the model's token
    /// limit. `weight` is only evaluated when a token limit applies. Charges nothing; refuses
    /// with `NeverFits` when a limit can never admit the call.
    pub(super) fn plan<E>(
        &self,
        agent: &Arc<str>,
        model: &Arc<str>,
        weight: impl FnOnce() -> u64,
    ) -> Result<Plan<'_, C>, RateLimitError<E>> {
        let agent_tokens = self.agent_tokens.get(agent);
        let model_tokens = self.model_tokens.get(model);
        let tokens = if agent_tokens.is_some() || model_tokens.is_some() {
            weight()
        } else {
            0
        };
        let order = [
            (true, LimitKind::Requests, self.agent_requests.get(agent), 1),
            (
                false,
                LimitKind::Requests,
                self.model_requests.get(model),
                1,
            ),
            (true, LimitKind::Tokens, agent_tokens, tokens),
            (false, LimitKind::Tokens, model_tokens, tokens),
        ];
        let key = |is_agent: bool| match is_agent {
            true => RateLimitKey::Agent(agent.clone()),
            false => RateLimitKey::Model(model.clone()),
        };
        let mut steps = Vec::with_capacity(order.len());
        for (is_agent, kind, limiter, weight) in order {
            let Some(limiter) = limiter else { continue };
            if weight > u64::from(limiter.capacity) {
                return Err(RateLimitError::NeverFits {
                    key: key(is_agent),
                    kind,
                    weight,
                    capacity: limiter.capacity,
                });
            }
            // A weight of zero charges nothing; a capacity of zero only admits such calls.
            let weight = u32::try_from(weight).ok().and_then(NonZeroU32::new);
            let (Some(gcra), Some(weight)) = (&limiter.gcra, weight) else {
                continue;
            };
            steps.push(Step {
                key: key(is_agent),
                kind,
                limiter: gcra,
                weight,
            });
        }
        Ok(Plan {
            limits: self,
            steps,
        })
    }
}

impl<C: Clock> Plan<'_, C> {
    /// Charges every limit of the plan in order, under `policy`.
    pub(super) async fn admit<E>(self, policy: Policy) -> Result<(), RateLimitError<E>> {
        // `None`: no bound (also when `max_wait` is too large to add to now).
        let deadline = match policy {
            Policy::Wait {
                max_wait: Some(max_wait),
            } => Instant::now().checked_add(max_wait),
            Policy::Wait { max_wait: None } | Policy::Reject => None,
        };
        for step in self.steps {
            Self::acquire(self.limits.clock(), step, policy, deadline).await?;
        }
        Ok(())
    }

    /// Charges one limiter, waiting for it under [`Policy::Wait`]. A charge, once made, is
    /// kept: after a wait the same limiter is checked again, never the earlier ones.
    async fn acquire<E>(
        clock: &C,
        step: Step<'_, C>,
        policy: Policy,
        deadline: Option<Instant>,
    ) -> Result<(), RateLimitError<E>> {
        loop {
            let retry_after = match step.limiter.check_key_n(step.key.arc(), step.weight) {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(not_until)) => not_until.wait_time_from(clock.now()),
                // `plan` refused calls heavier than the capacity; kept for safety.
                Err(InsufficientCapacity(capacity)) => {
                    return Err(RateLimitError::NeverFits {
                        key: step.key,
                        kind: step.kind,
                        weight: u64::from(step.weight.get()),
                        capacity,
                    });
                }
            };
            let may_wait = match policy {
                Policy::Reject => false,
                Policy::Wait { .. } => deadline.is_none_or(|deadline| {
                    Instant::now()
                        .checked_add(retry_after)
                        .is_some_and(|ready| ready <= deadline)
                }),
            };
            if !may_wait {
                return Err(RateLimitError::Limited {
                    key: step.key,
                    kind: step.kind,
                    retry_after,
                });
            }
            tokio::time::sleep(retry_after).await;
        }
    }
}

impl<C: Clock> fmt::Debug for Limits<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limits")
            .field("rates", &self.rates)
            .finish_non_exhaustive()
    }
}
