//! Loops written inside macro invocations (`tokio::select!`, `tokio::join!`, `vec!`,
//! `assert!`, `format!`, ..) are steps like any other loop of the function's own body: a step
//! cap or a cancel stops them. Inside those macros the same exceptions hold as everywhere else:
//! loops in closures, `async` blocks and nested items are not steps.

use std::future::ready;
use std::time::Duration;

use budget_core::BudgetError;
use budget_core::scope::TaskScope;
use budget_macros::budgeted;

#[derive(Debug)]
enum AgentError {
    Budget(BudgetError),
}

impl From<BudgetError> for AgentError {
    fn from(e: BudgetError) -> AgentError {
        AgentError::Budget(e)
    }
}

fn here() -> TaskScope {
    TaskScope::current().expect("inside the budgeted function's scope")
}

fn is_step_limit(err: &AgentError) -> bool {
    matches!(
        err,
        AgentError::Budget(BudgetError::StepLimit { max_steps: 3, .. })
    )
}

#[budgeted(agent = "selector", limit = 1_000, max_steps = 3, crate = budget_core)]
async fn loops_in_a_select_arm(iterations: &mut u32) -> Result<(), AgentError> {
    tokio::select! {
        () = ready(()) => {
            for _ in 0..10 {
                *iterations += 1;
            }
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_loop_in_a_select_arm_is_stopped_at_max_steps() {
    let mut iterations = 0;
    let err = loops_in_a_select_arm(&mut iterations).await.unwrap_err();
    assert!(is_step_limit(&err), "{err:?}");
    assert_eq!(iterations, 3, "the fourth iteration never started");
}

#[budgeted(agent = "selector", limit = 1_000, crate = budget_core)]
async fn every_kind_in_select(pick_second: bool) -> Result<Vec<u32>, AgentError> {
    let mut seen = Vec::new();
    let first = async { !pick_second };
    let second = async { pick_second };
    tokio::select! {
        biased;
        true = first, if !pick_second => {
            'outer: loop {
                seen.push(here().step());
                let mut i = 0;
                while i < 2 {
                    i += 1;
                    seen.push(here().step());
                    if i == 2 {
                        break 'outer;
                    }
                }
            }
        }
        true = second => {
            for x in [10, 20] {
                seen.push(here().step() + x);
            }
        }
        else => {}
    }
    Ok(seen)
}

#[tokio::test]
async fn loops_of_every_kind_in_select_arms_are_steps() {
    assert_eq!(every_kind_in_select(false).await.unwrap(), vec![1, 2, 3]);
    assert_eq!(every_kind_in_select(true).await.unwrap(), vec![11, 22]);
}

type Handle = std::sync::Arc<std::sync::Mutex<Option<TaskScope>>>;

#[budgeted(agent = "watched", limit = 1_000, crate = budget_core)]
async fn waits_in_a_select_arm(handle: Handle) -> Result<(), AgentError> {
    *handle.lock().unwrap() = Some(here());
    tokio::select! {
        () = ready(()) => loop {
            tokio::time::sleep(Duration::from_millis(1)).await;
        },
    }
}

#[tokio::test]
async fn a_cancel_from_outside_stops_a_loop_in_a_select_arm() {
    let handle = Handle::default();
    let task = tokio::spawn(waits_in_a_select_arm(handle.clone()));
    let scope = loop {
        if let Some(scope) = handle.lock().unwrap().clone() {
            break scope;
        }
        tokio::task::yield_now().await;
    };
    // Wait for the loop to take a step, however slow the machine.
    while scope.step() == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    scope.cancel();
    let err = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the cancel stopped the loop")
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(err, AgentError::Budget(BudgetError::TaskCancelled { .. })),
        "{err:?}"
    );
}

#[budgeted(agent = "joiner", limit = 1_000, max_steps = 3, crate = budget_core)]
async fn loops_in_a_join_argument(iterations: &mut u32) -> Result<(), AgentError> {
    let (a, b) = tokio::join!(ready(1), {
        for _ in 0..10 {
            *iterations += 1;
        }
        ready(2)
    });
    assert_eq!(a + b, 3);
    Ok(())
}

#[tokio::test]
async fn a_loop_in_a_join_argument_is_stopped_at_max_steps() {
    let mut iterations = 0;
    let err = loops_in_a_join_argument(&mut iterations).await.unwrap_err();
    assert!(is_step_limit(&err), "{err:?}");
    assert_eq!(iterations, 3);
}

#[budgeted(agent = "joiner", limit = 1_000, max_steps = 3, crate = budget_core)]
async fn loops_in_joined_async_blocks() -> Result<(u32, u32), AgentError> {
    // An `async` block is its own future: a `return` in it would not leave the function, so
    // its loops are not steps, inside `join!` as anywhere else.
    let (a, b) = tokio::join!(
        async {
            let mut n = 0;
            for _ in 0..10 {
                n += 1;
            }
            n
        },
        async {
            let mut n = 0;
            while n < 10 {
                n += 1;
            }
            n
        },
    );
    Ok((a + b, here().step()))
}

#[tokio::test]
async fn loops_in_joined_async_blocks_are_not_steps() {
    assert_eq!(loops_in_joined_async_blocks().await.unwrap(), (20, 0));
}

#[budgeted(agent = "plain-macros", limit = 1_000, crate = budget_core)]
async fn loops_in_std_macros() -> Result<(Vec<u32>, String, u32), AgentError> {
    // Comma-separated expressions: a loop per element.
    let mut v = vec![
        {
            let mut n = 0;
            loop {
                n += 1;
                if n == 1 {
                    break n;
                }
            }
        },
        {
            let mut n = 0;
            while n < 2 {
                n += 1;
            }
            n
        },
    ];
    // `[value; count]`: the value's loop.
    v.extend(vec![
        {
            let mut n = 0;
            for _ in 0..3 {
                n += 1;
            }
            n
        };
        2
    ]);
    assert!(
        {
            let mut ok = true;
            for x in &v {
                ok &= *x > 0;
            }
            ok
        },
        "{:?}",
        v
    );
    let text = format!(
        "{}-{}",
        {
            let mut s = String::new();
            for c in "a".chars() {
                s.push(c);
            }
            s
        },
        v.len()
    );
    Ok((v, text, here().step()))
}

#[tokio::test]
async fn loops_in_vec_assert_and_format_are_steps() {
    let (v, text, steps) = loops_in_std_macros().await.unwrap();
    assert_eq!(v, vec![1, 2, 3, 3]);
    assert_eq!(text, "a-4");
    // vec!: 1 + 2; vec![..; 2]: 3 (the value is evaluated once); assert!: 4; format!: 1.
    assert_eq!(steps, 1 + 2 + 3 + 4 + 1);
}

#[budgeted(agent = "nested", limit = 1_000, max_steps = 3, crate = budget_core)]
async fn loops_in_nested_macros(iterations: &mut u32) -> Result<Vec<String>, AgentError> {
    let out = tokio::select! {
        v = ready(2) => vec![format!("{}", {
            let mut n = 0;
            loop {
                *iterations += 1;
                n += v;
                if n > 100 {
                    break n;
                }
            }
        })],
    };
    Ok(out)
}

#[tokio::test]
async fn a_loop_in_a_macro_inside_a_select_arm_is_stopped() {
    let mut iterations = 0;
    let err = loops_in_nested_macros(&mut iterations).await.unwrap_err();
    assert!(is_step_limit(&err), "{err:?}");
    assert_eq!(iterations, 3);
}

#[budgeted(agent = "elsewhere", limit = 1_000, crate = budget_core)]
async fn loops_elsewhere_in_macros() -> Result<(u32, String, u32), AgentError> {
    assert_eq!(
        [1u32].map(|k| {
            let mut n = k;
            while n < 3 {
                n += 1;
            }
            n
        })[0],
        3
    );
    let from_select = tokio::select! {
        n = ready(4) => {
            fn nested(n: u32) -> u32 {
                let mut total = 0;
                for _ in 0..n {
                    total += 1;
                }
                total
            }
            let add = |k: u32| {
                let mut total = k;
                for _ in 0..k {
                    total += 1;
                }
                total
            };
            add(nested(n))
        }
    };
    let text = stringify!(loop {});
    Ok((3 + from_select, text.to_string(), here().step()))
}

#[tokio::test]
async fn closures_nested_fns_and_stringify_in_macros_are_left_alone() {
    let (total, text, steps) = loops_elsewhere_in_macros().await.unwrap();
    assert_eq!(total, 3 + 8);
    assert_eq!(text, "loop {}", "stringify! sees the tokens as written");
    assert_eq!(steps, 0);
}
