//! Loops inside macro invocations are steps whatever their header looks like; what the token
//! walk cannot be sure of compiles as written; closures, `async` and `const` blocks and nested
//! items inside a macro keep their loops to themselves, as outside one.
#![deny(warnings)]

use budget_core::BudgetError;
use budget_core::scope::TaskScope;
use budget_macros::budgeted;

fn step() -> u32 {
    TaskScope::current().map_or(0, |s| s.step())
}

/// Runs its input in place, as a DSL would: its tokens are not comma-separated expressions,
/// so the attribute walks them.
macro_rules! run {
    ($($t:tt)*) => { $($t)* };
}

struct Pair {
    a: u32,
    b: u32,
}

#[budgeted(agent = "looper", limit = 1_000, crate = budget_core)]
async fn in_a_dsl(items: Vec<u32>) -> Result<(u32, u32), BudgetError> {
    let mut total = 0;
    run! {
        for x in &items {
            total += x;
        }
        for (i, x) in items.iter().enumerate() {
            total += i as u32 * x;
        }
        let mut n = 0;
        while n < items.len() {
            n += 1;
        }
        'open: for i in 0.. {
            if i == 2 {
                break 'open;
            }
        }
        let mut stack = vec![1, 2];
        while let Some(top) = stack.pop() {
            total += top;
        }
        while n > 5 || n == 100 {
            n += 1;
        }
        for x in [4, 5] {
            total += x;
        }
        for x in items.iter().filter(|x| { **x > 1 }) {
            total += x;
        }
        let pair = Pair { a: 1, b: loop { break 2; } };
        total += pair.a + pair.b;
        // No boundary of its own (a `match` in the header); the loop in its body has one.
        while match n { 0 => false, _ => true } {
            n -= 1;
            loop {
                break;
            }
        }
        fn helper() -> u32 {
            let mut k = 0;
            loop {
                k += 1;
                if k == 3 {
                    break k;
                }
            }
        }
        let add = |k: u32| {
            let mut s = 0;
            for _ in 0..k {
                s += 1;
            }
            s
        };
        let add_to = |a: u32, b: u32| {
            let mut s = a;
            for _ in 0..b {
                s += 1;
            }
            s
        };
        let looping = move || loop {
            break 1;
        };
        let block = async move {
            let mut s = 0;
            while s < 2 {
                s += 1;
            }
            s
        };
        const C: u32 = {
            let mut i = 0;
            while i < 3 {
                i += 1;
            }
            i
        };
        let c = const {
            let mut i = 0u32;
            while i < 2 {
                i += 1;
            }
            i
        };
        struct W<const N: usize>;
        impl W<{ 1 + 1 }> {
            fn count() -> u32 {
                let mut i = 0;
                while i < 2 {
                    i += 1;
                }
                i
            }
        }
        let s: &'static str = "static";
        total += helper() + add(2) + looping() + block.await + C + c + W::<2>::count();
        total += s.len() as u32 + add_to(1, 2);
    }
    Ok((total, step()))
}

#[budgeted(agent = "selector", limit = 1_000, crate = budget_core)]
async fn in_select(rounds: u32) -> Result<u32, BudgetError> {
    let mut seen = 0;
    tokio::select! {
        biased;
        v = std::future::ready(rounds), if rounds > 0 => {
            for _ in 0..v {
                seen += 1;
            }
        }
        _ = std::future::pending::<()>(), if rounds > 100 => {}
        else => {
            while seen < 2 {
                seen += 1;
            }
        }
    }
    Ok(seen * 100 + step())
}

#[budgeted(agent = "consts", limit = 1_000, crate = budget_core)]
async fn in_const_positions() -> Result<usize, BudgetError> {
    // Array lengths and const generic arguments are compile-time code: no boundaries there.
    let a = [0u8; {
        let mut n = 0;
        while n < 2 {
            n += 1;
        }
        n
    }];
    let b: [u8; {
        let mut n = 0;
        while n < 3 {
            n += 1;
        }
        n
    }] = [0; 3];
    Ok(a.len() + b.len() + step() as usize)
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let (total, steps) = in_a_dsl(vec![1, 2, 3]).await.unwrap();
        // 6 + 8 (enumerate) + 3 (pop) + 9 + 5 (filter) + 3 (pair) + 24 (not steps).
        assert_eq!(total, 58);
        // 3 + 3 + 3 + 3 (`0..`) + 2 + 0 + 2 + 2 + 1 (pair) + 3 (the loop in the `match` one).
        assert_eq!(steps, 22);
        assert_eq!(in_select(3).await.unwrap(), 303);
        assert_eq!(in_select(0).await.unwrap(), 202);
        assert_eq!(in_const_positions().await.unwrap(), 5);
    });
}
