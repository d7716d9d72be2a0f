//! # budget-macros
//!
//! The `#[budgeted]` attribute of token-budget: it runs an agent's `async fn` as one **task**
//! with its own token, money and step budget, and makes every loop iteration in it a **step**.
//!
//! Use it through the `token-budget` crate (`token_budget::budgeted`). The examples here run
//! against `budget-core`, which is what `token_budget` re-exports.
//!
//! ```
//! # extern crate budget_core as token_budget; // what `token_budget` re-exports
//! use budget_macros::budgeted;
//! use token_budget::BudgetError;
//!
//! #[derive(Debug)]
//! enum AgentError {
//!     Budget(BudgetError),
//! }
//!
//! impl From<BudgetError> for AgentError {
//!     fn from(e: BudgetError) -> AgentError {
//!         AgentError::Budget(e)
//!     }
//! }
//!
//! #[budgeted(agent = "researcher", limit = 50_000, max_steps = 3)]
//! async fn research(sources: &[&str]) -> Result<Vec<String>, AgentError> {
//!     let mut notes = Vec::new();
//!     for source in sources {
//!         // each iteration is a step: cancelled, out of steps or out of budget → Err here
//!         notes.push(format!("notes on {source}"));
//!     }
//!     Ok(notes)
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! assert_eq!(research(&["a", "b", "c"]).await.unwrap().len(), 3);
//! // A fourth source is a fourth step: over `max_steps`, stopped before it runs.
//! let stopped = research(&["a", "b", "c", "d"]).await.unwrap_err();
//! assert!(matches!(stopped, AgentError::Budget(BudgetError::StepLimit { .. })));
//! # }
//! ```
//!
//! ## What it does
//!
//! The function keeps its attributes, doc comments, visibility, generics, `where` clause,
//! receiver (`&self`, `&mut self`, ..), arguments (`impl Trait` included) and return type. Its
//! body becomes:
//!
//! ```ignore
//! let __scope = ::token_budget::scope::TaskScope::builder(
//!         ::token_budget::Attribution::agent("researcher"), // + .with_task / .with_user / .critical
//!     )
//!     .tokens(50_000u64)                                   // + .money / .max_steps / .runaway
//!     .child_of_current() // called inside another budgeted fn: a sub-task of it
//!     .build();
//! __scope.clone().run(async move { /* the body */ }).await
//! ```
//!
//! Inside the body, every loop that is a step (see below) gets a **step boundary** as the
//! first statement of its block:
//!
//! ```ignore
//! if let Err(e) = __scope.step_boundary() {
//!     return Err(From::from(e));
//! }
//! ```
//!
//! so an iteration starts only when the task was not cancelled (from outside, or by runaway
//! detection), has steps left and has budget left; otherwise the function returns the
//! `BudgetError` converted into its own error type. Labels (`break 'outer`) keep working.
//! `__scope` is hygienic: your code can neither see nor shadow it.
//!
//! ## What counts as a step
//!
//! A **step** is one iteration of a `loop`, `while` or `for` that runs in the function's own
//! body, where a `return` leaves the function:
//!
//! - loops directly in the body, in nested blocks, `if`/`match` arms, `unsafe` blocks and
//!   loop conditions, at any depth;
//! - loops inside **macro invocations** in those places: `tokio::select!` arms and
//!   preconditions, the arguments of `tokio::join!`, `vec!`, `assert!`, `format!`,
//!   `println!`, a macro of your own, and macros nested in them.
//!
//! These are **not** steps, and keep their own semantics: loops in closures, `async` blocks
//! (so the loops of futures handed to `join!` or `select!` as `async { .. }` are not steps;
//! an `async` block's spend is still charged to the task through its scope), `const` blocks,
//! nested functions and other nested items, and compile-time positions (array lengths, const
//! generic arguments, types and patterns). A loop in a spawned task is not a step either; a
//! spawned task that should count carries the scope (`TaskScope::run`).
//!
//! Inside a macro invocation the attribute sees only tokens, so it assumes what `vec!`,
//! `assert!`, `select!` and `join!` do: the code runs in place. When the tokens parse as
//! comma-separated expressions they are handled exactly like the body; otherwise (a
//! `select!`, `vec![x; n]`, a DSL) a token walk finds `loop {`, `while .. {` and `for .. in
//! .. {` and skips closures, `async`/`const` blocks and items. It is conservative:
//!
//! - a `while`/`for` whose first brace group might belong to its condition (the header holds
//!   `match`, `if`, `unsafe`, a block, a closure or a label, or does not end in an
//!   identifier, a literal, `)`, `]`, `?` or `..`) is left without a boundary of its own; its
//!   condition and body are still searched for loops;
//! - macros that do not run their input are never touched: `stringify!`, `concat!`,
//!   `include!`/`include_str!`/`include_bytes!`, `env!`, `option_env!`, `cfg!`,
//!   `compile_error!`, `quote!`/`quote_spanned!`/`parse_quote!`, `format_ident!`, `asm!`,
//!   `macro_rules!`, ..;
//! - a macro with no loop in it gets its tokens back exactly as written.
//!
//! A macro of your own that does *not* run its input in place — it quotes or stringifies
//! it, or moves it into a closure or a function of its own — sees the boundary in its input
//! like any other code: in a closure that is a `return` from the closure, in a function it
//! does not compile. Call such a macro outside the budgeted function, or from a closure in it.
//!
//! ## Requirements
//!
//! - The function is an `async fn` (with a body).
//! - It returns a `Result`: any path whose last segment is `Result` with one or two generic
//!   arguments — `Result<T, E>`, `std::result::Result<T, E>`, `anyhow::Result<T>`,
//!   `io::Result<T>` — whose error type implements `From<BudgetError>` (token-budget's own
//!   error does). The check is by name; a function without loops never needs the conversion,
//!   and one whose error type lacks it gets the compiler's trait error at the loop.
//!
//! ## Arguments
//!
//! `agent` and `limit` are required; the rest are optional, in any order, each at most once.
//! Anything else is a compile error.
//!
//! ### `agent = "name"` (required)
//!
//! The agent the task's spend is attributed to; a non-empty string literal.
//!
//! ```
//! # extern crate budget_core as token_budget; // what `token_budget` re-exports
//! # use budget_macros::budgeted;
//! # type AgentError = token_budget::BudgetError;
//! #[budgeted(agent = "researcher", limit = 50_000)]
//! # async fn f() -> Result<(), AgentError> { Ok(()) }
//! ```
//!
//! ### `limit = <integer>` (required)
//!
//! Tokens (input + output) the task may spend, sub-tasks included; an integer literal that fits
//! a `u64` (underscores allowed).
//!
//! ```
//! # extern crate budget_core as token_budget; // what `token_budget` re-exports
//! # use budget_macros::budgeted;
//! # type AgentError = token_budget::BudgetError;
//! #[budgeted(agent = "researcher", limit = 50_000)]
//! # async fn f() -> Result<(), AgentError> { Ok(()) }
//! ```
//!
//! ### `cost_limit = "$0.50"`
//!
//! Money the task may spend, as exact decimal dollars in a string literal: an optional `$`,
//! digits, an optional fraction and an optional exponent (`"$0.50"`, `"0.5"`, `"2.5e-06"`). It
//! is parsed at compile time, without floating point, into `Money::from_units(..)`
//! (yocto-dollars); more than 24 decimal places, a negative amount or an amount out of range is
//! a compile error.
//!
//! ```
//! # extern crate budget_core as token_budget; // what `token_budget` re-exports
//! # use budget_macros::budgeted;
//! # type AgentError = token_budget::BudgetError;
//! #[budgeted(agent = "researcher", limit = 50_000, cost_limit = "$0.50")]
//! # async fn f() -> Result<(), AgentError> { Ok(()) }
//! ```
//!
//! ### `max_steps = <integer>`
//!
//! Steps (loop iterations) the task may take; a `u32`. The iteration after the last allowed
//! one returns `BudgetError::StepLimit`.
//!
//! ```
//! # extern crate budget_core as token_budget; // what `token_budget` re-exports
//! # use budget_macros::budgeted;
//! # type AgentError = token_budget::BudgetError;
//! #[budgeted(agent = "planner", limit = 20_000, max_steps = 12)]
//! # async fn f() -> Result<(), AgentError> { Ok(()) }
//! ```
//!
//! ### `task = <expr>`
//!
//! The task id, from any expression that implements `Display` — typically an argument; it is
//! evaluated once, before the body runs. Without it, the scope generates a fresh id for each
//! call.
//!
//! ```
//! # extern crate budget_core as token_budget; // what `token_budget` re-exports
//! # use budget_macros::budgeted;
//! # type AgentError = token_budget::BudgetError;
//! # struct Ticket { id: u64 }
//! #[budgeted(agent = "support", limit = 8_000, task = ticket.id)]
//! async fn answer(ticket: &Ticket) -> Result<String, AgentError> {
//!     Ok(format!("re: ticket {}", ticket.id))
//! }
//! ```
//!
//! ### `user = <expr>`
//!
//! The end user the work is done for, from any expression that implements `Display`.
//!
//! ```
//! # extern crate budget_core as token_budget; // what `token_budget` re-exports
//! # use budget_macros::budgeted;
//! # type AgentError = token_budget::BudgetError;
//! # struct Request { user_id: String }
//! #[budgeted(agent = "support", limit = 8_000, user = request.user_id)]
//! async fn answer(request: Request) -> Result<(), AgentError> {
//!     Ok(())
//! }
//! ```
//!
//! ### `critical`
//!
//! A bare flag: the agent is critical, exempt from "pause all non-critical agents".
//!
//! ```
//! # extern crate budget_core as token_budget; // what `token_budget` re-exports
//! # use budget_macros::budgeted;
//! # type AgentError = token_budget::BudgetError;
//! #[budgeted(agent = "billing", limit = 4_000, critical)]
//! # async fn f() -> Result<(), AgentError> { Ok(()) }
//! ```
//!
//! ### `runaway = false` or `runaway(..)`
//!
//! Runaway detection is on by default with `RunawayConfig::default()`. `runaway = false`
//! turns it off; `runaway(..)` changes some of its settings and keeps the defaults for the
//! rest. The keys, each optional and an integer literal: `repeat` (consecutive near-identical
//! step inputs that count as a loop), `similarity` (SimHash bits that may differ), `spike`
//! (multiple of the running average that is a spike), `spike_after` (steps before spikes are
//! judged), `spike_min_tokens` (steps below this are never spikes), `retries` (multiple of the
//! limit spent under one task id across runs that is a retry loop). A key of 0 turns that
//! signal off where the runtime says so.
//!
//! ```
//! # extern crate budget_core as token_budget; // what `token_budget` re-exports
//! # use budget_macros::budgeted;
//! # type AgentError = token_budget::BudgetError;
//! #[budgeted(agent = "crawler", limit = 100_000, runaway = false)]
//! async fn crawl_everything() -> Result<(), AgentError> {
//!     Ok(())
//! }
//!
//! #[budgeted(agent = "crawler", limit = 100_000, runaway(repeat = 5, spike = 10, retries = 2))]
//! async fn crawl_carefully() -> Result<(), AgentError> {
//!     Ok(())
//! }
//! ```
//!
//! ### `crate = <path>`
//!
//! Where the runtime is, as serde's `crate = ..`: `::token_budget` by default. Users of
//! `budget-core` directly write `crate = budget_core` (or `crate = ::budget_core`, or
//! `crate = "budget_core"`).
//!
//! ```
//! # extern crate budget_core as token_budget; // what `token_budget` re-exports
//! # use budget_macros::budgeted;
//! # type AgentError = token_budget::BudgetError;
//! #[budgeted(agent = "researcher", limit = 50_000, crate = budget_core)]
//! # async fn f() -> Result<(), AgentError> { Ok(()) }
//! ```
//!
//! ## Errors
//!
//! Every mistake is a compile error pointing at the offending token: an unknown argument or
//! `runaway` key, an argument given twice, a literal of the wrong kind or out of range, a
//! `cost_limit` that is not an exact amount, a missing `agent` or `limit` (at the attribute),
//! a function that is not `async` (at `fn`) or does not return a `Result` (at its return type).
#![forbid(unsafe_code)]

use proc_macro::TokenStream;

mod attr;
mod expand;
mod in_macros;

/// Runs an `async fn` as a budgeted task: see the [crate documentation](crate) for the
/// arguments and the expansion.
///
/// ```
/// # extern crate budget_core as token_budget; // what `token_budget` re-exports
/// # use budget_macros::budgeted;
/// # type AgentError = token_budget::BudgetError;
/// #[budgeted(agent = "researcher", limit = 50_000, cost_limit = "$0.50", max_steps = 20)]
/// async fn research(topic: &str) -> Result<String, AgentError> {
///     Ok(format!("a report on {topic}"))
/// }
/// ```
#[proc_macro_attribute]
pub fn budgeted(args: TokenStream, item: TokenStream) -> TokenStream {
    let original = proc_macro2::TokenStream::from(item.clone());
    let args = syn::parse::<attr::Args>(args);
    let function = syn::parse::<syn::ItemFn>(item).map_err(|e| {
        syn::Error::new(
            e.span(),
            "#[budgeted] works on async fns only (with a body)",
        )
    });
    let checked = function.and_then(|f| expand::check(&f.sig).map(|()| f));
    let error = match (args, checked) {
        (Ok(args), Ok(function)) => return expand::expand(args, function).into(),
        (Err(mut error), Err(other)) => {
            error.combine(other);
            error
        }
        (Err(error), Ok(_)) | (Ok(_), Err(error)) => error,
    };
    // The function as written, so that its callers do not get errors of their own.
    let mut out = error.into_compile_error();
    out.extend(original);
    out.into()
}
