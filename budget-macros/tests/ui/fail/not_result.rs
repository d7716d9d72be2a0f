use budget_macros::budgeted;

#[budgeted(agent = "a", limit = 10, crate = budget_core)]
async fn f() -> Option<u32> {
    Some(1)
}

fn main() {}
