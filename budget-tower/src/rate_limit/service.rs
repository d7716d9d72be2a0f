use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use budget_core::scope::TaskScope;
use governor::clock::Clock;
use tower::Service;

use super::future::ResponseFuture;

use super::limiter::Limits;
use super::{Policy, RateLimitError, TokioClock};
use crate::llm::{LlmRequest, attribution_of, take_readied};

/// The service of [`RateLimitLayer`](super::RateLimitLayer).
pub struct RateLimitService<S, C: Clock = TokioClock> {
    inner: S,
    limits: Arc<Limits<C>>,
    policy: Policy,
    default_output_cap: u64,
}

impl<S: Clone, C: Clock> Clone for RateLimitService<S, C> {
    fn clone(&self) -> Self {
        RateLimitService {
            inner: self.inner.clone(),
            limits: self.limits.clone(),
            policy: self.policy,
            default_output_cap: self.default_output_cap,
        }
    }
}

impl<S: fmt::Debug, C: Clock> fmt::Debug for RateLimitService<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitService")
            .field("inner", &self.inner)
            .field("limits", &self.limits)
            .field("policy", &self.policy)
            .field("default_output_cap", &self.default_output_cap)
            .finish()
    }
}

impl<S, C: Clock> RateLimitService<S, C> {
    pub(super) fn new(
        inner: S,
        limits: Arc<Limits<C>>,
        policy: Policy,
        default_output_cap: u64,
    ) -> Self {
        RateLimitService {
            inner,
            limits,
            policy,
            default_output_cap,
        }
    }

    inner_service_accessors!();
}

impl<S, R, C> Service<R> for RateLimitService<S, C>
where
    R: LlmRequest + Send + 'static,
    S: Service<R> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send + 'static,
    C: Clock + Send + Sync + 'static,
{
    type Response = S::Response;
    type Error = RateLimitError<S::Error>;
    type Future = ResponseFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(RateLimitError::Inner)
    }

    fn call(&mut self, request: R) -> Self::Future {
        // The readied service goes into the future; this one keeps a fresh clone (tower's
        // convention: a clone starts without readiness).
        let mut inner = take_readied(&mut self.inner);
        let limits = self.limits.clone();
        let policy = self.policy;
        let default_cap = self.default_output_cap;
        ResponseFuture::new(async move {
            if !limits.is_empty() {
                let agent = attribution_of(TaskScope::current().as_ref(), &request)
                    .agent_arc()
                    .clone();
                let model: Arc<str> = Arc::from(request.model());
                let weight = || {
                    let cap = request.max_output_tokens().unwrap_or(default_cap);
                    request.count_prompt().tokens.saturating_add(cap)
                };
                limits.plan(&agent, &model, weight)?.admit(policy).await?;
            }
            inner.call(request).await.map_err(RateLimitError::Inner)
        })
    }
}
