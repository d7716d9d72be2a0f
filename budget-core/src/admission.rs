//! The admission decision, as a pure function.
//!
//! Everything concurrent in a budget store reduces to one question asked under its lock (or in
//! its server-side script): *given what this counter has committed and reserved, may this
//! request reserve this much more?* [`decide`] answers it and nothing else, so it is tested
//! exhaustively on its own (governor's pattern).

use crate::Money;
use crate::limits::Cap;

/// An amount of budget: tokens and money together.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Amount {
    /// Tokens (input + output).
    pub tokens: u64,
    /// Money.
    pub money: Money,
}

impl Amount {
    /// Nothing.
    pub const ZERO: Amount = Amount {
        tokens: 0,
        money: Money::ZERO,
    };

    /// An amount.
    pub const fn new(tokens: u64, money: Money) -> Amount {
        Amount { tokens, money }
    }

    /// Saturating sum.
    pub fn saturating_add(self, other: Amount) -> Amount {
        Amount {
            tokens: self.tokens.saturating_add(other.tokens),
            money: self.money.saturating_add(other.money),
        }
    }

    /// Saturating difference, floored at zero on each side.
    pub fn saturating_sub(self, other: Amount) -> Amount {
        Amount {
            tokens: self.tokens.saturating_sub(other.tokens),
            money: self.money.saturating_sub(other.money).max(Money::ZERO),
        }
    }

    /// Field-wise minimum.
    pub fn min(self, other: Amount) -> Amount {
        Amount {
            tokens: self.tokens.min(other.tokens),
            money: self.money.min(other.money),
        }
    }

    /// Field-wise maximum.
    pub fn max(self, other: Amount) -> Amount {
        Amount {
            tokens: self.tokens.max(other.tokens),
            money: self.money.max(other.money),
        }
    }

    /// `true` when both fields are zero.
    pub fn is_zero(&self) -> bool {
        self.tokens == 0 && self.money == Money::ZERO
    }
}

/// Which part of a cap decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CapKind {
    /// The token cap.
    Tokens,
    /// The money cap.
    Money,
}

/// The answer of [`decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The request fits.
    Admit,
    /// The request does not fit *now*: what is committed and reserved leaves too little. It may
    /// fit later (a new window, or reservations that settle below their estimate).
    NotNow(CapKind),
    /// The request is larger than the cap itself: it can never fit.
    Never(CapKind),
}

/// May `request` be reserved on a counter whose committed plus reserved amount is `in_use`,
/// under `cap`?
///
/// `Never` takes precedence over `NotNow`, and tokens are checked before money.
pub fn decide(cap: &Cap, in_use: Amount, request: Amount) -> Decision {
    if cap.tokens.is_some_and(|c| request.tokens > c) {
        return Decision::Never(CapKind::Tokens);
    }
    if cap.money.is_some_and(|c| request.money > c) {
        return Decision::Never(CapKind::Money);
    }
    if let Some(c) = cap.tokens
        && in_use.tokens.saturating_add(request.tokens) > c
    {
        return Decision::NotNow(CapKind::Tokens);
    }
    if let Some(c) = cap.money
        && in_use.money.saturating_add(request.money) > c
    {
        return Decision::NotNow(CapKind::Money);
    }
    Decision::Admit
}

/// What a call asks to reserve: a fixed part (the prompt) plus as many units (output tokens)
/// as fit, at least `min_units` and at most `max_units`. A fixed amount is `max_units == 0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReserveRequest {
    /// Reserved whatever happens (the prompt's tokens and worst-case cost).
    pub base: Amount,
    /// The amount of one unit (one output token: 1 token and its worst-case price).
    pub per_unit: Amount,
    /// Fewer units than this is a refusal.
    pub min_units: u64,
    /// No more units than this are wanted.
    pub max_units: u64,
}

impl ReserveRequest {
    /// Exactly `amount`.
    pub const fn fixed(amount: Amount) -> ReserveRequest {
        ReserveRequest {
            base: amount,
            per_unit: Amount::ZERO,
            min_units: 0,
            max_units: 0,
        }
    }

    /// `base + units × per_unit`, saturating.
    pub fn amount(&self, units: u64) -> Amount {
        Amount {
            tokens: self
                .base
                .tokens
                .saturating_add(self.per_unit.tokens.saturating_mul(units)),
            money: self
                .base
                .money
                .saturating_add(self.per_unit.money.saturating_mul_tokens(units)),
        }
    }
}

/// How many units of `request` fit under `cap` on a counter using `in_use` — at least
/// `min_units`, at most `max_units` — or why not even `min_units` fit.
pub fn fit(cap: &Cap, in_use: Amount, request: &ReserveRequest) -> Result<u64, Decision> {
    let min_units = request.min_units;
    match decide(cap, in_use, request.amount(min_units)) {
        Decision::Admit => {}
        refusal => return Err(refusal),
    }
    let mut units = request.max_units.max(min_units);
    let used = in_use.saturating_add(request.base);
    if let Some(c) = cap.tokens
        && request.per_unit.tokens > 0
    {
        units = units.min(c.saturating_sub(used.tokens) / request.per_unit.tokens);
    }
    if let Some(c) = cap.money
        && let Some(affordable) = request
            .per_unit
            .money
            .tokens_affordable(c.saturating_sub(used.money))
    {
        units = units.min(affordable);
    }
    Ok(units.max(min_units))
}

/// What is left under `cap` after `in_use`: `None` in a field that is not capped.
pub fn headroom(cap: &Cap, in_use: Amount) -> (Option<u64>, Option<Money>) {
    (
        cap.tokens.map(|c| c.saturating_sub(in_use.tokens)),
        cap.money
            .map(|c| c.saturating_sub(in_use.money).max(Money::ZERO)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cap(tokens: Option<u64>, money: Option<i64>) -> Cap {
        Cap {
            tokens,
            money: money.map(Money::from_micros),
        }
    }

    fn amount(tokens: u64, micros: i64) -> Amount {
        Amount::new(tokens, Money::from_micros(micros))
    }

    #[test]
    fn boundaries() {
        let c = cap(Some(100), Some(1000));
        assert_eq!(decide(&c, amount(60, 0), amount(40, 0)), Decision::Admit);
        assert_eq!(
            decide(&c, amount(61, 0), amount(40, 0)),
            Decision::NotNow(CapKind::Tokens)
        );
        assert_eq!(
            decide(&c, amount(0, 0), amount(101, 0)),
            Decision::Never(CapKind::Tokens)
        );
        assert_eq!(
            decide(&c, amount(0, 999), amount(1, 2)),
            Decision::NotNow(CapKind::Money)
        );
        assert_eq!(
            decide(&c, amount(0, 0), amount(1, 1001)),
            Decision::Never(CapKind::Money)
        );
        assert_eq!(
            decide(&cap(None, None), amount(u64::MAX, 0), amount(u64::MAX, 0)),
            Decision::Admit
        );
        assert_eq!(
            decide(&c, amount(u64::MAX, 0), amount(1, 0)),
            Decision::NotNow(CapKind::Tokens),
            "saturation never wraps into admission"
        );
    }

    proptest! {
        /// `fit` grants the most units that fit, within bounds, and exactly when `decide`
        /// admits the minimum.
        #[test]
        fn fit_grants_the_most_that_fits(
            ct in proptest::option::of(0u64..20_000), cm in proptest::option::of(0i64..20_000),
            ut in 0u64..10_000, um in 0i64..10_000, bt in 0u64..5_000, bm in 0i64..5_000,
            pt in 0u64..4, pm in 0i64..4, min in 0u64..50, extra in 0u64..5_000,
        ) {
            let c = cap(ct, cm);
            let req = ReserveRequest {
                base: amount(bt, bm),
                per_unit: amount(pt, pm),
                min_units: min,
                max_units: min + extra,
            };
            let in_use = amount(ut, um);
            match fit(&c, in_use, &req) {
                Ok(units) => {
                    prop_assert!(units >= req.min_units && units <= req.max_units);
                    prop_assert_eq!(decide(&c, in_use, req.amount(units)), Decision::Admit);
                    if units < req.max_units {
                        prop_assert_ne!(decide(&c, in_use, req.amount(units + 1)), Decision::Admit);
                    }
                }
                Err(refusal) => {
                    prop_assert_eq!(decide(&c, in_use, req.amount(req.min_units)), refusal);
                    prop_assert_ne!(refusal, Decision::Admit);
                }
            }
        }

        /// Admission is exactly "fits under every set cap".
        #[test]
        fn admit_iff_fits(
            ct in proptest::option::of(0u64..10_000), cm in proptest::option::of(0i64..10_000),
            ut in 0u64..10_000, um in 0i64..10_000, rt in 0u64..10_000, rm in 0i64..10_000,
        ) {
            let c = cap(ct, cm);
            let d = decide(&c, amount(ut, um), amount(rt, rm));
            let fits_t = ct.is_none_or(|c| ut + rt <= c);
            let fits_m = cm.is_none_or(|c| um + rm <= c);
            prop_assert_eq!(d == Decision::Admit, fits_t && fits_m);
            let never = ct.is_some_and(|c| rt > c) || cm.is_some_and(|c| rm > c);
            prop_assert_eq!(matches!(d, Decision::Never(_)), never);
        }

        /// Admitted requests never push a counter past its cap, and headroom agrees.
        #[test]
        fn admitted_stays_within_cap(
            ct in 0u64..10_000, ut in 0u64..10_000, rt in 0u64..10_000,
        ) {
            let c = cap(Some(ct), None);
            if decide(&c, amount(ut, 0), amount(rt, 0)) == Decision::Admit {
                prop_assert!(ut + rt <= ct);
                prop_assert!(headroom(&c, amount(ut, 0)).0.unwrap() >= rt);
            }
        }

        /// Decisions are monotone: a smaller request is admitted whenever a larger one is.
        #[test]
        fn monotone(ct in 0u64..1000, ut in 0u64..1000, small in 0u64..1000, extra in 0u64..1000) {
            let c = cap(Some(ct), None);
            if decide(&c, amount(ut, 0), amount(small + extra, 0)) == Decision::Admit {
                prop_assert_eq!(decide(&c, amount(ut, 0), amount(small, 0)), Decision::Admit);
            }
        }
    }
}
