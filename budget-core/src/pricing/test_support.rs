//! Helpers shared by the pricing tests.

use crate::money::Money;

use super::{FieldProblem, PriceError, PriceTable, ResolvedPrice};

pub(super) fn dollars(text: &str) -> Money {
    Money::parse_dollars(text).unwrap()
}

pub(super) fn per_million(text: &str) -> Money {
    Money::per_million_tokens(text).unwrap()
}

pub(super) fn builtin(model: &str) -> ResolvedPrice<'static> {
    PriceTable::builtin_ref().resolve(model).unwrap()
}

pub(super) fn load_err(text: &str) -> PriceError {
    PriceTable::from_litellm_json(text).unwrap_err()
}

pub(super) fn field_problem(text: &str) -> (String, String, FieldProblem) {
    match load_err(text) {
        PriceError::InvalidField {
            model,
            field,
            problem,
        } => (model, field, problem),
        other => panic!("expected InvalidField, got {other:?}"),
    }
}
