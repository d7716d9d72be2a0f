//! Limits that change while a budget runs, task scopes nested in each other, and cancelling a
//! task tree from outside (issue #9: items 4, 6 and 7, and the nested-scope suspicions).

use budget_core::limits::LimitError;
use budget_core::{Budget, Limit, Selector, Window};

// ---- item 4: duplicate limit ids -------------------------------------------------------------

#[test]
fn duplicate_limit_ids_fail_the_build() {
    let err = Budget::builder()
        .limit(Limit::new("same", Selector::Global, Window::PerTask).tokens(10))
        .limit(Limit::new("same", Selector::agent("a"), Window::PerTask).tokens(1_000_000))
        .build()
        .unwrap_err();
    assert_eq!(err, LimitError::DuplicateId("same".into()));
    let err = budget_core::limits::LimitSet::new([
        Limit::new("x", Selector::Global, Window::PerTask).tokens(1),
        Limit::new("x", Selector::Global, Window::PerTask).tokens(2),
    ])
    .unwrap_err();
    assert!(err.to_string().contains("\"x\""), "{err}");
}
