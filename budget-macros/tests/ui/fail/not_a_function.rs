use budget_macros::budgeted;

#[budgeted(agent = "a", limit = 10, crate = budget_core)]
struct Agent;

fn main() {}
