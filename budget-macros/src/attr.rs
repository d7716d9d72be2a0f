//! Parsing the arguments of `#[budgeted(..)]`.
//!
//! Every argument is parsed into a typed value here, checked (literal kind, range, duplicates,
//! unknown names) and remembered with the span of the user's token, so that `expand` can point
//! any later error at what the user wrote.

use proc_macro2::Span;
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::{Expr, Ident, LitBool, LitInt, LitStr, Path, Token};

/// The argument names, for the "unknown argument" message.
const ARGUMENTS: &str = "agent, limit, cost_limit, max_steps, task, user, critical, runaway, crate";

/// The `runaway(..)` keys, for the "unknown key" message.
const RUNAWAY_KEYS: &str = "repeat, similarity, spike, spike_after, spike_min_tokens, retries";

pub(crate) mod kw {
    syn::custom_keyword!(agent);
    syn::custom_keyword!(limit);
    syn::custom_keyword!(cost_limit);
    syn::custom_keyword!(max_steps);
    syn::custom_keyword!(task);
    syn::custom_keyword!(user);
    syn::custom_keyword!(critical);
    syn::custom_keyword!(runaway);

    syn::custom_keyword!(repeat);
    syn::custom_keyword!(similarity);
    syn::custom_keyword!(spike);
    syn::custom_keyword!(spike_after);
    syn::custom_keyword!(spike_min_tokens);
    syn::custom_keyword!(retries);
}

/// An integer argument's value, with the span of its literal.
#[derive(Clone, Copy)]
pub(crate) struct Int<T> {
    pub(crate) value: T,
    pub(crate) span: Span,
}

/// The arguments of one `#[budgeted(..)]`.
pub(crate) struct Args {
    /// `agent = "name"`.
    pub(crate) agent: LitStr,
    /// `limit = 50_000`: tokens per task.
    pub(crate) limit: Int<u64>,
    /// `cost_limit = "$0.50"`, in yocto-dollar units.
    pub(crate) cost_limit: Option<Int<i128>>,
    /// `max_steps = 20`.
    pub(crate) max_steps: Option<Int<u32>>,
    /// `task = expr`.
    pub(crate) task: Option<Expr>,
    /// `user = expr`.
    pub(crate) user: Option<Expr>,
    /// `critical`: the span of the flag.
    pub(crate) critical: Option<Span>,
    /// `runaway = false` or `runaway(..)`.
    pub(crate) runaway: Option<Runaway>,
    /// `crate = path`.
    pub(crate) krate: Option<Path>,
}

/// The `runaway` argument.
pub(crate) enum Runaway {
    /// `runaway = false`.
    Disabled(Span),
    /// `runaway = true`: the default configuration.
    Default,
    /// `runaway(repeat = 3, ..)`: the default configuration with some fields replaced.
    Custom(RunawayOverrides),
}

/// The keys of `runaway(..)`, each optional.
#[derive(Default)]
pub(crate) struct RunawayOverrides {
    /// `repeat`: `RunawayConfig::repeat_limit`.
    pub(crate) repeat: Option<Int<u32>>,
    /// `similarity`: `RunawayConfig::similarity_bits`.
    pub(crate) similarity: Option<Int<u32>>,
    /// `spike`: `RunawayConfig::spike_factor`.
    pub(crate) spike: Option<Int<u64>>,
    /// `spike_after`: `RunawayConfig::spike_after_steps`.
    pub(crate) spike_after: Option<Int<u32>>,
    /// `spike_min_tokens`: `RunawayConfig::spike_min_tokens`.
    pub(crate) spike_min_tokens: Option<Int<u64>>,
    /// `retries`: `RunawayConfig::retry_factor`.
    pub(crate) retries: Option<Int<u64>>,
}

/// Sets `slot` to the argument's value, parsed by `value` — unless an argument of this name was
/// already given: checked as soon as the name is read, so that a duplicate is reported as such
/// even when its value is also wrong.
fn set_once<T>(
    slot: &mut Option<T>,
    name: &str,
    span: Span,
    value: impl FnOnce() -> syn::Result<T>,
) -> syn::Result<()> {
    if slot.is_some() {
        return Err(syn::Error::new(
            span,
            format!("expected only a single `{name}` argument"),
        ));
    }
    *slot = Some(value()?);
    Ok(())
}

/// An integer type an argument may have.
trait IntType: Sized + std::str::FromStr {
    const NAME: &'static str;
}

impl IntType for u32 {
    const NAME: &'static str = "u32";
}

impl IntType for u64 {
    const NAME: &'static str = "u64";
}

/// `= <integer literal>` that fits in `T`.
fn int_value<T: IntType>(input: ParseStream<'_>, name: &str) -> syn::Result<Int<T>> {
    input.parse::<Token![=]>()?;
    if !input.peek(LitInt) {
        return Err(input.error(format!("`{name}` must be an integer literal")));
    }
    let lit: LitInt = input.parse()?;
    let suffix = lit.suffix();
    if !suffix.is_empty() && suffix != T::NAME {
        return Err(syn::Error::new(
            lit.span(),
            format!(
                "`{name}` is a {}: write it without the `{suffix}` suffix",
                T::NAME
            ),
        ));
    }
    let value = lit.base10_digits().parse::<T>().map_err(|_| {
        syn::Error::new(
            lit.span(),
            format!("`{name}` must fit in a {}", T::NAME),
        )
    })?;
    Ok(Int {
        value,
        span: lit.span(),
    })
}

/// `= "<string literal>"`.
fn str_value(input: ParseStream<'_>, name: &str, example: &str) -> syn::Result<LitStr> {
    input.parse::<Token![=]>()?;
    if !input.peek(LitStr) {
        return Err(input.error(format!(
            "`{name}` must be a string literal, e.g. `{name} = {example}`"
        )));
    }
    input.parse()
}

/// `= <expression>`.
fn expr_value(input: ParseStream<'_>) -> syn::Result<Expr> {
    input.parse::<Token![=]>()?;
    input.parse()
}

impl Parse for Args {
    fn parse(input: ParseStream<'_>) -> syn::Result<Args> {
        let mut agent = None;
        let mut limit = None;
        let mut cost_limit = None;
        let mut max_steps = None;
        let mut task = None;
        let mut user = None;
        let mut critical = None;
        let mut runaway = None;
        let mut krate = None;

        while !input.is_empty() {
            let span = input.span();
            if input.peek(kw::agent) {
                input.parse::<kw::agent>()?;
                set_once(&mut agent, "agent", span, || {
                    let lit = str_value(input, "agent", "\"researcher\"")?;
                    if lit.value().is_empty() {
                        return Err(syn::Error::new(lit.span(), "`agent` must not be empty"));
                    }
                    Ok(lit)
                })?;
            } else if input.peek(kw::limit) {
                input.parse::<kw::limit>()?;
                set_once(&mut limit, "limit", span, || int_value(input, "limit"))?;
            } else if input.peek(kw::cost_limit) {
                input.parse::<kw::cost_limit>()?;
                set_once(&mut cost_limit, "cost_limit", span, || {
                    let lit = str_value(input, "cost_limit", "\"$0.50\"")?;
                    let units = crate::dollars::parse(&lit.value()).map_err(|reason| {
                        syn::Error::new(lit.span(), format!("invalid `cost_limit`: {reason}"))
                    })?;
                    Ok(Int {
                        value: units,
                        span: lit.span(),
                    })
                })?;
            } else if input.peek(kw::max_steps) {
                input.parse::<kw::max_steps>()?;
                set_once(&mut max_steps, "max_steps", span, || {
                    int_value(input, "max_steps")
                })?;
            } else if input.peek(kw::task) {
                input.parse::<kw::task>()?;
                set_once(&mut task, "task", span, || expr_value(input))?;
            } else if input.peek(kw::user) {
                input.parse::<kw::user>()?;
                set_once(&mut user, "user", span, || expr_value(input))?;
            } else if input.peek(kw::critical) {
                input.parse::<kw::critical>()?;
                set_once(&mut critical, "critical", span, || {
                    if input.peek(Token![=]) {
                        return Err(input.error(
                            "`critical` is a flag and takes no value: write `critical` alone",
                        ));
                    }
                    Ok(span)
                })?;
            } else if input.peek(kw::runaway) {
                input.parse::<kw::runaway>()?;
                set_once(&mut runaway, "runaway", span, || parse_runaway(input))?;
            } else if input.peek(Token![crate]) {
                input.parse::<Token![crate]>()?;
                set_once(&mut krate, "crate", span, || {
                    input.parse::<Token![=]>()?;
                    if input.peek(LitStr) {
                        // `crate = "budget_core"`, as serde spells it.
                        input.parse::<LitStr>()?.parse_with(Path::parse_mod_style)
                    } else {
                        input.call(Path::parse_mod_style)
                    }
                })?;
            } else if input.peek(Ident::peek_any) {
                let name = input.call(Ident::parse_any)?;
                return Err(syn::Error::new(
                    name.span(),
                    format!("unknown argument `{name}`; expected one of {ARGUMENTS}"),
                ));
            } else {
                return Err(input.error(format!("expected one of {ARGUMENTS}")));
            }
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }

        let attribute = Span::call_site();
        let agent = agent.ok_or_else(|| {
            syn::Error::new(
                attribute,
                "missing `agent`: write e.g. `#[budgeted(agent = \"researcher\", limit = 50_000)]`",
            )
        })?;
        let limit = limit.ok_or_else(|| {
            syn::Error::new(
                attribute,
                "missing `limit` (tokens per task): write e.g. `#[budgeted(agent = \"researcher\", limit = 50_000)]`",
            )
        })?;
        Ok(Args {
            agent,
            limit,
            cost_limit,
            max_steps,
            task,
            user,
            critical,
            runaway,
            krate,
        })
    }
}

/// What follows `runaway`: `= false`, `= true` or `(key = value, ..)`.
fn parse_runaway(input: ParseStream<'_>) -> syn::Result<Runaway> {
    const EXPECTED: &str = "expected `runaway = false` or `runaway(repeat = 3, ..)`";
    if input.peek(Token![=]) {
        input.parse::<Token![=]>()?;
        if !input.peek(LitBool) {
            return Err(input.error(EXPECTED));
        }
        let on: LitBool = input.parse()?;
        return Ok(if on.value() {
            Runaway::Default
        } else {
            Runaway::Disabled(on.span())
        });
    }
    if !input.peek(syn::token::Paren) {
        return Err(input.error(EXPECTED));
    }
    let content;
    syn::parenthesized!(content in input);
    content.parse().map(Runaway::Custom)
}

impl Parse for RunawayOverrides {
    fn parse(input: ParseStream<'_>) -> syn::Result<RunawayOverrides> {
        let mut out = RunawayOverrides::default();
        while !input.is_empty() {
            let span = input.span();
            if input.peek(kw::repeat) {
                input.parse::<kw::repeat>()?;
                set_once(&mut out.repeat, "repeat", span, || int_value(input, "repeat"))?;
            } else if input.peek(kw::similarity) {
                input.parse::<kw::similarity>()?;
                set_once(&mut out.similarity, "similarity", span, || int_value(input, "similarity"))?;
            } else if input.peek(kw::spike_min_tokens) {
                input.parse::<kw::spike_min_tokens>()?;
                set_once(&mut out.spike_min_tokens, "spike_min_tokens", span, || int_value(input, "spike_min_tokens"))?;
            } else if input.peek(kw::spike_after) {
                input.parse::<kw::spike_after>()?;
                set_once(&mut out.spike_after, "spike_after", span, || int_value(input, "spike_after"))?;
            } else if input.peek(kw::spike) {
                input.parse::<kw::spike>()?;
                set_once(&mut out.spike, "spike", span, || int_value(input, "spike"))?;
            } else if input.peek(kw::retries) {
                input.parse::<kw::retries>()?;
                set_once(&mut out.retries, "retries", span, || int_value(input, "retries"))?;
            } else if input.peek(Ident::peek_any) {
                let name = input.call(Ident::parse_any)?;
                return Err(syn::Error::new(
                    name.span(),
                    format!("unknown `runaway` key `{name}`; expected one of {RUNAWAY_KEYS}"),
                ));
            } else {
                return Err(input.error(format!("expected one of {RUNAWAY_KEYS}")));
            }
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        Ok(out)
    }
}
