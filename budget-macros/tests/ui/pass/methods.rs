//! Methods with `&self` and `&mut self` receivers, in an inherent impl.
#![deny(warnings)]

use budget_core::BudgetError;
use budget_macros::budgeted;

struct Agent {
    name: String,
    seen: Vec<String>,
}

impl Agent {
    #[budgeted(agent = "reader", limit = 1_000, task = self.name, crate = budget_core)]
    async fn read(&self, pages: &[&str]) -> Result<usize, BudgetError> {
        let mut total = 0;
        for page in pages {
            total += page.len();
        }
        Ok(total)
    }

    #[budgeted(agent = "writer", limit = 1_000, crate = budget_core)]
    pub(crate) async fn write(&mut self, pages: &[&str]) -> Result<(), BudgetError> {
        for page in pages {
            self.seen.push(page.to_string());
        }
        Ok(())
    }

    #[budgeted(agent = "owner", limit = 1_000, crate = budget_core)]
    async fn finish(self) -> Result<Vec<String>, BudgetError> {
        Ok(self.seen)
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut agent = Agent {
            name: "a-1".into(),
            seen: Vec::new(),
        };
        assert_eq!(agent.read(&["ab", "c"]).await.unwrap(), 3);
        agent.write(&["x", "y"]).await.unwrap();
        assert_eq!(agent.finish().await.unwrap(), ["x", "y"]);
    });
}
