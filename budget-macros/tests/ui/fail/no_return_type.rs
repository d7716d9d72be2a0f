use budget_macros::budgeted;

#[budgeted(agent = "a", limit = 10, crate = budget_core)]
async fn f(x: u32) {
    let _ = x;
}

fn main() {}
