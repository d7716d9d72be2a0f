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
    let value = lit
        .base10_digits()
        .parse::<T>()
        .map_err(|_| syn::Error::new(lit.span(), format!("`{name}` must fit in a {}", T::NAME)))?;
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
                    let units = parse_dollars(&lit.value()).map_err(|reason| {
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
                set_once(&mut out.repeat, "repeat", span, || {
                    int_value(input, "repeat")
                })?;
            } else if input.peek(kw::similarity) {
                input.parse::<kw::similarity>()?;
                set_once(&mut out.similarity, "similarity", span, || {
                    int_value(input, "similarity")
                })?;
            } else if input.peek(kw::spike_min_tokens) {
                input.parse::<kw::spike_min_tokens>()?;
                set_once(&mut out.spike_min_tokens, "spike_min_tokens", span, || {
                    int_value(input, "spike_min_tokens")
                })?;
            } else if input.peek(kw::spike_after) {
                input.parse::<kw::spike_after>()?;
                set_once(&mut out.spike_after, "spike_after", span, || {
                    int_value(input, "spike_after")
                })?;
            } else if input.peek(kw::spike) {
                input.parse::<kw::spike>()?;
                set_once(&mut out.spike, "spike", span, || int_value(input, "spike"))?;
            } else if input.peek(kw::retries) {
                input.parse::<kw::retries>()?;
                set_once(&mut out.retries, "retries", span, || {
                    int_value(input, "retries")
                })?;
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

/// Yocto-dollar units per dollar: `budget_core::money::UNITS_PER_DOLLAR` has 24 decimal places.
const DECIMAL_PLACES: i64 = 24;

/// Parses an amount of dollars exactly, digit by digit (no `f64`), into yocto-dollar units:
/// an optional `$`, digits (`_` may separate them), an optional `.` and fraction, an optional
/// exponent (`e-06`). The reason for a refusal is returned as text for the compile error.
pub(crate) fn parse_dollars(text: &str) -> Result<i128, String> {
    const EXPECTED: &str = "expected dollars such as \"$0.50\", \"0.5\" or \"2.5e-06\"";
    let out_of_range = || format!("{text:?} is out of range");
    let body = text.strip_prefix('$').unwrap_or(text);
    let mut chars = body.chars().peekable();
    let mut mantissa: i128 = 0;
    let mut digits = 0u32;
    let mut frac_digits: i64 = 0;
    let mut seen_point = false;
    let mut exponent: i64 = 0;
    let mut last_was_digit = false;
    while let Some(c) = chars.next() {
        match c {
            '0'..='9' => {
                digits += 1;
                mantissa = mantissa
                    .checked_mul(10)
                    .and_then(|m| m.checked_add(i128::from(c as u8 - b'0')))
                    .ok_or_else(out_of_range)?;
                if seen_point {
                    frac_digits += 1;
                }
            }
            '_' if last_was_digit => {}
            '.' if !seen_point => seen_point = true,
            'e' | 'E' if digits > 0 => {
                let negative = chars.next_if(|c| matches!(c, '-' | '+')) == Some('-');
                let mut exp_digits = 0u32;
                for c in chars.by_ref() {
                    let digit = c
                        .to_digit(10)
                        .ok_or_else(|| format!("unexpected {c:?} in the exponent; {EXPECTED}"))?;
                    exp_digits += 1;
                    exponent = exponent
                        .checked_mul(10)
                        .and_then(|e| e.checked_add(i64::from(digit)))
                        .filter(|e| *e <= 10_000)
                        .ok_or_else(out_of_range)?;
                }
                if exp_digits == 0 {
                    return Err(format!(
                        "the exponent of {text:?} has no digits; {EXPECTED}"
                    ));
                }
                if negative {
                    exponent = -exponent;
                }
                break;
            }
            '-' if digits == 0 && !seen_point => {
                return Err("a cost limit cannot be negative".to_owned());
            }
            other => return Err(format!("unexpected {other:?} in {text:?}; {EXPECTED}")),
        }
        last_was_digit = c.is_ascii_digit();
    }
    if digits == 0 {
        return Err(format!("{text:?} has no digits; {EXPECTED}"));
    }
    // value = mantissa × 10^(exponent − frac_digits) dollars = mantissa × 10^shift units
    let shift = DECIMAL_PLACES + exponent - frac_digits;
    if mantissa == 0 {
        return Ok(0);
    }
    if shift >= 0 {
        let factor = u32::try_from(shift)
            .ok()
            .and_then(|s| 10i128.checked_pow(s))
            .ok_or_else(out_of_range)?;
        mantissa.checked_mul(factor).ok_or_else(out_of_range)
    } else {
        let divisor = u32::try_from(-shift)
            .ok()
            .and_then(|s| 10i128.checked_pow(s));
        match divisor {
            Some(d) if mantissa % d == 0 => Ok(mantissa / d),
            _ => Err(format!(
                "{text:?} has more than {DECIMAL_PLACES} decimal places of a dollar and cannot be represented exactly"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_dollars;
    use budget_core::Money;

    #[test]
    fn dollars_match_the_runtime_parser() {
        for text in [
            "$0.50",
            "0.5",
            "2.5e-06",
            "2.5E-6",
            "1e3",
            "1e+3",
            "$1234.50",
            "0",
            "$0",
            ".5",
            "5.",
            "1_000.25",
            "0.000000000000000000000001",
            "0.500000000000000000000000000000",
            "170141183460346",
            "3.75e-7",
        ] {
            let expected = Money::parse_dollars(text).unwrap().units();
            assert_eq!(parse_dollars(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn bad_amounts_are_refused_with_a_reason() {
        for (text, reason) in [
            ("", "no digits"),
            ("$", "no digits"),
            ("50 cents", "unexpected ' '"),
            ("-1", "negative"),
            ("$-1", "negative"),
            ("1.2.3", "unexpected '.'"),
            ("1e", "exponent"),
            ("1e-x", "exponent"),
            ("e5", "unexpected 'e'"),
            ("_1", "unexpected '_'"),
            ("0.0000000000000000000000001", "24 decimal places"),
            ("1e200", "out of range"),
            ("1e99999999999999999999", "out of range"),
            ("999999999999999999999999999999999999999999", "out of range"),
            ("$$1", "unexpected '$'"),
        ] {
            let err = parse_dollars(text).unwrap_err();
            assert!(err.contains(reason), "{text}: {err}");
        }
    }
}
