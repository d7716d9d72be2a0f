use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::Quota;
use governor::clock::Clock;
use tower::Layer;

use super::limiter::{Limits, Rates};
use super::{RateLimitService, TokioClock};
use crate::enforce::DEFAULT_OUTPUT_CAP;

/// A per-minute rate: how many units (requests or tokens) a minute replenishes, and how many
/// may be spent at once (the burst, by default the whole minute's worth).
///
/// A `u32` converts into the rate with that many units per minute:
/// `.agent_rpm("researcher", 60)` is `.agent_rpm("researcher", Rate::per_minute(60))`.
///
/// ```
/// use budget_tower::rate_limit::Rate;
///
/// // 600 a minute, one every 100 ms, and at most 10 at once.
/// let rate = Rate::per_minute(600).burst(10);
/// assert_eq!(rate.capacity(), 10);
/// assert_eq!(Rate::from(200_000).capacity(), 200_000);
/// assert_eq!(Rate::per_minute(0).capacity(), 0); // admits nothing
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    per_minute: u32,
    burst: Option<u32>,
}

/// A minute in nanoseconds, governor's unit.
const MINUTE_NANOS: u64 = 60_000_000_000;
/// The largest burst tolerance (in nanoseconds of replenishment, ~146 years) this layer asks
/// governor for, so that its `u64` nanosecond arithmetic cannot overflow.
const MAX_TOLERANCE_NANOS: u64 = 1 << 62;

impl Rate {
    /// `n` units a minute, replenished evenly (one every `60 s / n`); the burst is `n`. A rate
    /// of 0 admits nothing: every call is refused with
    /// [`RateLimitError::NeverFits`](super::RateLimitError::NeverFits).
    pub const fn per_minute(n: u32) -> Rate {
        Rate {
            per_minute: n,
            burst: None,
        }
    }

    /// Sets the burst: the most units that can be spent at once, and so the heaviest call that
    /// can ever pass. A burst of 0 admits nothing.
    pub const fn burst(self, burst: u32) -> Rate {
        Rate {
            burst: Some(burst),
            ..self
        }
    }

    /// Units replenished per minute.
    pub const fn units_per_minute(&self) -> u32 {
        self.per_minute
    }

    /// The most units that can be spent at once: the burst, or the rate per minute when no
    /// burst was set; 0 when the rate or the burst is 0. A burst that would take more than
    /// ~146 years to replenish is lowered to what does.
    pub fn capacity(&self) -> u32 {
        if self.per_minute == 0 {
            return 0;
        }
        let wanted = self.burst.unwrap_or(self.per_minute);
        // As governor computes it: the time one unit takes to replenish (at least 13 ns).
        let interval = MINUTE_NANOS / u64::from(self.per_minute);
        let most = (MAX_TOLERANCE_NANOS / interval).saturating_add(1);
        u32::try_from(most).map_or(wanted, |most| wanted.min(most))
    }

    /// The governor quota, or `None` when the rate admits nothing.
    pub(super) fn quota(&self) -> Option<Quota> {
        let per_minute = NonZeroU32::new(self.per_minute)?;
        let capacity = NonZeroU32::new(self.capacity())?;
        Some(Quota::per_minute(per_minute).allow_burst(capacity))
    }
}

impl From<u32> for Rate {
    fn from(per_minute: u32) -> Rate {
        Rate::per_minute(per_minute)
    }
}

/// What the layer does with a call that a limit cannot admit now.
///
/// A call that no limit can *ever* admit (heavier than a burst) is refused at once with
/// [`RateLimitError::NeverFits`](super::RateLimitError::NeverFits) under both policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Refuse at once with [`RateLimitError::Limited`](super::RateLimitError::Limited) and its
    /// `retry_after`. The default.
    #[default]
    Reject,
    /// Sleep (on tokio's timer) until the limit admits the call, then send it. With
    /// `max_wait`, a call whose wait would end later than `max_wait` after it arrived is
    /// refused with `Limited` as soon as that is known, without sleeping first.
    ///
    /// The clock must advance with tokio's timer: [`TokioClock`] (the default) or a real-time
    /// clock such as governor's `DefaultClock`; a fake clock nobody advances would wait
    /// forever.
    Wait {
        /// The longest a call may wait in total; `None` waits as long as it takes.
        max_wait: Option<Duration>,
    },
}

/// Limits requests and tokens per minute, per agent and per model. See the
/// [module docs](super).
///
/// Clones share their limiters (behind one `Arc`). Every configuring method returns a layer
/// with *fresh* limiters: configure first, then clone and apply.
pub struct RateLimitLayer<C: Clock = TokioClock> {
    limits: Arc<Limits<C>>,
    policy: Policy,
    default_output_cap: u64,
}

impl<C: Clock> Clone for RateLimitLayer<C> {
    fn clone(&self) -> Self {
        RateLimitLayer {
            limits: self.limits.clone(),
            policy: self.policy,
            default_output_cap: self.default_output_cap,
        }
    }
}

impl<C: Clock> fmt::Debug for RateLimitLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("rates", self.limits.rates())
            .field("policy", &self.policy)
            .field("default_output_cap", &self.default_output_cap)
            .finish()
    }
}

impl RateLimitLayer<TokioClock> {
    /// A layer without limits (every call passes) that rejects, reading tokio's clock. Add
    /// limits with the methods below.
    pub fn new() -> Self {
        RateLimitLayer::with_clock(TokioClock::new())
    }
}

impl Default for RateLimitLayer<TokioClock> {
    fn default() -> Self {
        RateLimitLayer::new()
    }
}

impl<C: Clock + Clone> RateLimitLayer<C> {
    /// A layer without limits whose limiters read `clock` (e.g. governor's `FakeRelativeClock`
    /// in tests of [`Policy::Reject`]; clones of it share its time).
    pub fn with_clock(clock: C) -> Self {
        RateLimitLayer {
            limits: Arc::new(Limits::new(Rates::default(), clock)),
            policy: Policy::default(),
            default_output_cap: DEFAULT_OUTPUT_CAP,
        }
    }

    fn configure(self, change: impl FnOnce(&mut Rates)) -> Self {
        let mut rates = self.limits.rates().clone();
        change(&mut rates);
        RateLimitLayer {
            limits: Arc::new(Limits::new(rates, self.limits.clock().clone())),
            ..self
        }
    }

    /// Requests per minute of the agent named `agent`.
    pub fn agent_rpm(self, agent: impl Into<Arc<str>>, rate: impl Into<Rate>) -> Self {
        let (agent, rate) = (agent.into(), rate.into());
        self.configure(|r| {
            r.agent_requests.named.insert(agent, rate);
        })
    }

    /// Tokens per minute of the agent named `agent`.
    pub fn agent_tpm(self, agent: impl Into<Arc<str>>, rate: impl Into<Rate>) -> Self {
        let (agent, rate) = (agent.into(), rate.into());
        self.configure(|r| {
            r.agent_tokens.named.insert(agent, rate);
        })
    }

    /// Requests per minute of every agent without its own [`agent_rpm`](Self::agent_rpm),
    /// each agent on its own (unattributed calls count as the agent
    /// [`budget_core::UNATTRIBUTED`]).
    pub fn default_agent_rpm(self, rate: impl Into<Rate>) -> Self {
        let rate = rate.into();
        self.configure(|r| r.agent_requests.default = Some(rate))
    }

    /// Tokens per minute of every agent without its own [`agent_tpm`](Self::agent_tpm), each
    /// agent on its own.
    pub fn default_agent_tpm(self, rate: impl Into<Rate>) -> Self {
        let rate = rate.into();
        self.configure(|r| r.agent_tokens.default = Some(rate))
    }

    /// Requests per minute to the model `model` (the exact id the request asks for), all
    /// agents together.
    pub fn model_rpm(self, model: impl Into<Arc<str>>, rate: impl Into<Rate>) -> Self {
        let (model, rate) = (model.into(), rate.into());
        self.configure(|r| {
            r.model_requests.named.insert(model, rate);
        })
    }

    /// Tokens per minute to the model `model`, all agents together.
    pub fn model_tpm(self, model: impl Into<Arc<str>>, rate: impl Into<Rate>) -> Self {
        let (model, rate) = (model.into(), rate.into());
        self.configure(|r| {
            r.model_tokens.named.insert(model, rate);
        })
    }

    /// Requests per minute to every model without its own [`model_rpm`](Self::model_rpm),
    /// each model on its own.
    pub fn default_model_rpm(self, rate: impl Into<Rate>) -> Self {
        let rate = rate.into();
        self.configure(|r| r.model_requests.default = Some(rate))
    }

    /// Tokens per minute to every model without its own [`model_tpm`](Self::model_tpm), each
    /// model on its own.
    pub fn default_model_tpm(self, rate: impl Into<Rate>) -> Self {
        let rate = rate.into();
        self.configure(|r| r.model_tokens.default = Some(rate))
    }
}

impl<C: Clock> RateLimitLayer<C> {
    /// What to do with a call that cannot pass now (default [`Policy::Reject`]). Keeps the
    /// limiters.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// The output cap a request without one is weighed with (default
    /// [`DEFAULT_OUTPUT_CAP`]). Keeps the limiters.
    pub fn default_output_cap(mut self, cap: u64) -> Self {
        self.default_output_cap = cap;
        self
    }

    /// Forgets the agents and models whose limits have fully replenished (their state is the
    /// same as a fresh one), so that a default limit keyed by many names does not grow
    /// without bound. Call it now and then, e.g. from a periodic task.
    pub fn retain_recent(&self) {
        self.limits.retain_recent();
    }
}

impl<S, C: Clock> Layer<S> for RateLimitLayer<C> {
    type Service = RateLimitService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimitService::new(
            inner,
            self.limits.clone(),
            self.policy,
            self.default_output_cap,
        )
    }
}
