//! Every layer's service hands its wrapped service back, as tower middleware does.

use budget_tower::{BudgetLayer, CacheLayer, CompressLayer, RateLimitLayer, RouteLayer};
use tower::Layer;

mod support;
use support::no_limits;

/// A stand-in for any inner service.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Inner(u32);

#[test]
fn every_service_gives_its_inner_service_back() {
    let budget = no_limits();
    let mut budgeted = BudgetLayer::new(budget.clone()).layer(Inner(1));
    budgeted.get_mut().0 += 1;
    assert_eq!(budgeted.get_ref(), &Inner(2));
    assert_eq!(budgeted.into_inner(), Inner(2));

    let mut cached = CacheLayer::new(budget.clone()).layer(Inner(3));
    cached.get_mut().0 += 1;
    assert_eq!(cached.into_inner(), Inner(4));

    let mut routed = RouteLayer::new(budget.clone()).layer(Inner(5));
    routed.get_mut().0 += 1;
    assert_eq!(routed.get_ref(), &Inner(6));
    assert_eq!(routed.into_inner(), Inner(6));

    let mut compressed = CompressLayer::new(budget).layer(Inner(7));
    compressed.get_mut().0 += 1;
    assert_eq!(compressed.get_ref(), &Inner(8));
    assert_eq!(compressed.into_inner(), Inner(8));

    let mut limited = RateLimitLayer::new().layer(Inner(9));
    limited.get_mut().0 += 1;
    assert_eq!(limited.into_inner(), Inner(10));
}
