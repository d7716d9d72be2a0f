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
