//! Labelled nested loops are instrumented and keep working; loops inside closures, `async`
//! blocks, async closures, nested fns and `const` blocks are not touched; a user binding named
//! `__scope` does not clash with the macro's.
#![deny(warnings)]

use budget_core::BudgetError;
use budget_core::scope::TaskScope;
use budget_macros::budgeted;

fn step() -> u32 {
    TaskScope::current().map_or(0, |s| s.step())
}

#[budgeted(agent = "looper", limit = 1_000, crate = budget_core)]
async fn labelled() -> Result<(u32, u32), BudgetError> {
    let mut count = 0;
    'rows: for row in 0..4 {
        let mut col = 0;
        'cols: loop {
            col += 1;
            if col > 2 {
                break 'cols;
            }
            if row == 3 {
                break 'rows;
            }
            let mut k = 0;
            while k < 1 {
                k += 1;
                if row == 1 {
                    continue 'rows;
                }
            }
            count += 1;
        }
    }
    let found = 'search: {
        for i in 0..10 {
            if i == 2 {
                break 'search i;
            }
        }
        0
    };
    Ok((count + found, step()))
}

#[budgeted(agent = "looper", limit = 1_000, crate = budget_core)]
async fn elsewhere() -> Result<u32, BudgetError> {
    let __scope = 5u32; // the user's own binding, unrelated to the macro's
    let closure = || {
        let mut n = 0;
        loop {
            n += 1;
            if n == 3 {
                break n;
            }
        }
    };
    let block = async {
        let mut n = 0;
        for _ in 0..3 {
            n += 1;
        }
        n
    };
    let async_closure = async || {
        let mut n = 0;
        while n < 3 {
            n += 1;
        }
        n
    };
    fn nested() -> u32 {
        let mut n = 0;
        for _ in 0..3 {
            n += 1;
        }
        n
    }
    const FROM_CONST: u32 = const {
        let mut n = 0;
        while n < 3 {
            n += 1;
        }
        n
    };
    let total = __scope + closure() + block.await + async_closure().await + nested() + FROM_CONST;
    assert_eq!(step(), 0);
    // The macro's step boundary still finds its own scope, not the `__scope` above.
    let mut spins = 0;
    while spins < 2 {
        spins += 1;
    }
    assert_eq!(step(), spins);
    Ok(total)
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let (count, steps) = labelled().await.unwrap();
        // rows 0 and 2 count 2 each; the labelled block finds 2.
        assert_eq!(count, 6);
        // rows 0 and 2: 1 + 3 cols + 2 whiles; row 1: 1 + 1 + 1; row 3: 1 + 1; the search: 3.
        assert_eq!(steps, 6 + 3 + 6 + 2 + 3);
        assert_eq!(elsewhere().await.unwrap(), 5 + 3 * 5);
    });
}
