//! What the outer layers tell the budget layer about a call: the one channel between layers.
//!
//! A request type is the caller's (async-openai's, or any [`LlmRequest`](crate::LlmRequest)),
//! so the layers cannot add fields to it, and async-openai's request has no extensions. The
//! layers that change a call before the budget layer sees it note what they did in a
//! [`CallNote`] instead, which travels with the inner call's future (a tokio task-local, set
//! for exactly the duration of that future):
//!
//! | written by | field | read by the budget layer as |
//! |---|---|---|
//! | [`RouteLayer`](crate::RouteLayer) | `requested_model`: the model before routing | the event's requested model |
//! | [`CompressLayer`](crate::CompressLayer) | `saved_input_tokens`: prompt tokens removed | the event's `saved` (priced at the model's input rate) |
//! | [`CompressLayer`](crate::CompressLayer), its summary call | `kind`: [`EventKind::Summary`] | the event's kind |
//!
//! Notes nest: an inner note's fields win over an outer one's, savings add up. Nothing else
//! reads or writes it; a service outside these layers sees no difference.

use std::future::Future;
use std::sync::Arc;

use budget_core::ledger::{EventKind, Ledger};
use budget_core::store::BudgetStore;
use budget_core::{Amount, Budget, CommitDetails, Money, Usage};

tokio::task_local! {
    static NOTE: CallNote;
}

/// What outer layers noted about the call they pass down (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallNote {
    /// The kind of spend, when not a plain call.
    pub kind: Option<EventKind>,
    /// The model the caller asked for, when a router changed it.
    pub requested_model: Option<Arc<str>>,
    /// Prompt tokens removed before the call (compression).
    pub saved_input_tokens: u64,
}

impl CallNote {
    /// The note of the calling task (empty outside any).
    pub fn current() -> CallNote {
        NOTE.try_with(CallNote::clone).unwrap_or_default()
    }

    /// Runs `fut` with this note merged over the current one (fields set here win; savings
    /// add up).
    pub async fn run<F: Future>(self, fut: F) -> F::Output {
        let outer = CallNote::current();
        let merged = CallNote {
            kind: self.kind.or(outer.kind),
            requested_model: self.requested_model.or(outer.requested_model),
            saved_input_tokens: self
                .saved_input_tokens
                .saturating_add(outer.saved_input_tokens),
        };
        NOTE.scope(merged, fut).await
    }

    /// The ledger details of a call to `model` under this note, with how its usage was
    /// obtained: what the budget layer commits.
    pub(crate) fn commit_details<St: BudgetStore, L: Ledger>(
        &self,
        budget: &Budget<St, L>,
        model: &str,
        served_model: Option<Arc<str>>,
        estimated: bool,
    ) -> CommitDetails {
        let saved_money = match self.saved_input_tokens {
            0 => Money::ZERO,
            tokens => budget
                .prices()
                .resolve(model)
                .map_or(Money::ZERO, |r| r.price.cost(&Usage::new(tokens, 0))),
        };
        CommitDetails {
            served_model,
            estimated,
            kind: self.kind,
            saved: Amount::new(self.saved_input_tokens, saved_money),
            requested_model: self.requested_model.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_inner_note_wins_and_savings_add_up() {
        let outer = CallNote {
            kind: Some(EventKind::Summary),
            requested_model: Some("gpt-4o".into()),
            saved_input_tokens: 100,
        };
        let inner = CallNote {
            requested_model: Some("gpt-4o-mini".into()),
            saved_input_tokens: 20,
            ..CallNote::default()
        };
        let seen = outer.run(inner.run(async { CallNote::current() })).await;
        assert_eq!(
            seen,
            CallNote {
                kind: Some(EventKind::Summary),
                requested_model: Some("gpt-4o-mini".into()),
                saved_input_tokens: 120,
            }
        );
        assert_eq!(
            CallNote::current(),
            CallNote::default(),
            "gone after the call"
        );
    }
}
