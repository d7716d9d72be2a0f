//! Integer money.
//!
//! Every amount on its way to a ledger or a limit is a [`Money`]: a signed count of
//! yocto-dollars (10⁻²⁴ USD) in an `i128`. The unit is that small because LiteLLM's price file
//! publishes per-token prices with up to 24 decimal places (values such as
//! `5.0000000000000004e-08` are float artefacts, but they are what the file says, and we bill
//! what the file says). An `i128` of yocto-dollars still spans ±1.7 × 10¹⁴ dollars.
//!
//! Prices are parsed from their decimal *text* ([`Money::parse_dollars`]); nothing here goes
//! through `f64`. Dollars appear only when an amount is displayed.

use std::fmt;
use std::str::FromStr;

/// How many money units make one US dollar (10²⁴).
pub const UNITS_PER_DOLLAR: i128 = 1_000_000_000_000_000_000_000_000;

/// The number of decimal places of a dollar that [`Money`] represents exactly.
pub const DECIMAL_PLACES: u32 = 24;

/// The fewest decimal places the exact [`Display`](fmt::Display) of [`Money`] prints (cents).
const MIN_DISPLAY_DECIMALS: usize = 2;

/// An exact amount of money in yocto-dollars (10⁻²⁴ USD).
///
/// ```
/// use budget_core::Money;
///
/// let per_token = Money::parse_dollars("2.5e-06").unwrap(); // gpt-4o input
/// let cost = per_token.checked_mul_tokens(1_000_000).unwrap();
/// assert_eq!(cost, Money::from_dollars(2) + Money::from_cents(50));
/// assert_eq!(cost.to_string(), "$2.50");
/// // Exact by default; a precision asks for rounding.
/// let odd = Money::parse_dollars("0.3087125").unwrap();
/// assert_eq!(odd.to_string(), "$0.3087125");
/// assert_eq!(format!("{odd:.2}"), "$0.31");
/// ```
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Money(i128);

/// Why a decimal text is not an amount of money.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyParseError {
    /// The text is empty (after an optional sign and `$`).
    #[error("empty amount")]
    Empty,
    /// A character that has no place in a decimal number.
    #[error("unexpected character {found:?} at byte {at} of {text:?}")]
    UnexpectedChar {
        /// The whole text.
        text: String,
        /// The offending character.
        found: char,
        /// Its byte offset.
        at: usize,
    },
    /// More decimal places than [`DECIMAL_PLACES`]: the amount cannot be represented exactly.
    #[error("{text:?} has more than {DECIMAL_PLACES} decimal places of a dollar")]
    TooPrecise {
        /// The whole text.
        text: String,
    },
    /// The amount is beyond what an `i128` of yocto-dollars holds.
    #[error("{text:?} is out of range")]
    OutOfRange {
        /// The whole text.
        text: String,
    },
}

impl Money {
    /// No money.
    pub const ZERO: Money = Money(0);
    /// The largest representable amount; saturating arithmetic stops here.
    pub const MAX: Money = Money(i128::MAX);

    /// An amount from raw yocto-dollar units.
    pub const fn from_units(units: i128) -> Money {
        Money(units)
    }

    /// The raw yocto-dollar units.
    pub const fn units(self) -> i128 {
        self.0
    }

    /// Whole dollars.
    pub const fn from_dollars(dollars: i64) -> Money {
        Money(dollars as i128 * UNITS_PER_DOLLAR)
    }

    /// Whole cents.
    pub const fn from_cents(cents: i64) -> Money {
        Money(cents as i128 * (UNITS_PER_DOLLAR / 100))
    }

    /// Whole micro-dollars (10⁻⁶ USD).
    pub const fn from_micros(micros: i64) -> Money {
        Money(micros as i128 * (UNITS_PER_DOLLAR / 1_000_000))
    }

    /// Whole nano-dollars (10⁻⁹ USD).
    pub const fn from_nanos(nanos: i64) -> Money {
        Money(nanos as i128 * (UNITS_PER_DOLLAR / 1_000_000_000))
    }

    /// The price of one token, given a price per million tokens as decimal dollar text
    /// (`"2.50"` for $2.50 / 1M). Exact for any price with up to 18 decimal places.
    pub fn per_million_tokens(dollars: &str) -> Result<Money, MoneyParseError> {
        let per_million = Money::parse_dollars(dollars)?;
        if per_million.0 % 1_000_000 != 0 {
            return Err(MoneyParseError::TooPrecise {
                text: dollars.to_owned(),
            });
        }
        Ok(Money(per_million.0 / 1_000_000))
    }

    /// Parses an exact decimal amount of dollars: `"0.0000375"`, `"2.5e-06"`, `"$1,234.50"` is
    /// *not* accepted (no thousands separators) but `"$1234.50"`, `"-0.5"` and `"1E3"` are.
    ///
    /// The text is read digit by digit, never through `f64`.
    pub fn parse_dollars(text: &str) -> Result<Money, MoneyParseError> {
        parse_decimal(text).map(Money)
    }

    /// `true` when the amount is below zero.
    pub const fn is_negative(self) -> bool {
        self.0 < 0
    }

    /// Checked addition.
    pub const fn checked_add(self, other: Money) -> Option<Money> {
        match self.0.checked_add(other.0) {
            Some(v) => Some(Money(v)),
            None => None,
        }
    }

    /// Checked subtraction.
    pub const fn checked_sub(self, other: Money) -> Option<Money> {
        match self.0.checked_sub(other.0) {
            Some(v) => Some(Money(v)),
            None => None,
        }
    }

    /// Saturating addition: a sum that would overflow sticks at [`Money::MAX`] (or the minimum),
    /// which a limit treats as "over budget" — failing closed.
    pub const fn saturating_add(self, other: Money) -> Money {
        Money(self.0.saturating_add(other.0))
    }

    /// Saturating subtraction.
    pub const fn saturating_sub(self, other: Money) -> Money {
        Money(self.0.saturating_sub(other.0))
    }

    /// The price of `tokens` tokens at `self` per token, or `None` on overflow.
    pub const fn checked_mul_tokens(self, tokens: u64) -> Option<Money> {
        match self.0.checked_mul(tokens as i128) {
            Some(v) => Some(Money(v)),
            None => None,
        }
    }

    /// The price of `tokens` tokens at `self` per token, saturating at [`Money::MAX`].
    pub const fn saturating_mul_tokens(self, tokens: u64) -> Money {
        Money(self.0.saturating_mul(tokens as i128))
    }

    /// How many whole tokens at `self` per token fit in `budget` (rounded down), or `None` when
    /// the price is zero or negative (any number fits).
    pub fn tokens_affordable(self, budget: Money) -> Option<u64> {
        if self.0 <= 0 {
            return None;
        }
        if budget.0 <= 0 {
            return Some(0);
        }
        Some(u64::try_from(budget.0 / self.0).unwrap_or(u64::MAX))
    }

    /// The exact decimal dollar text, with no trailing zeros: `"0.0000375"`, `"-12"`.
    pub fn to_decimal_string(self) -> String {
        let negative = self.0 < 0;
        let abs = self.0.unsigned_abs();
        let whole = abs / UNITS_PER_DOLLAR as u128;
        let frac = abs % UNITS_PER_DOLLAR as u128;
        let mut out = String::new();
        if negative {
            out.push('-');
        }
        out.push_str(&whole.to_string());
        if frac != 0 {
            let digits = format!("{frac:024}");
            out.push('.');
            out.push_str(digits.trim_end_matches('0'));
        }
        out
    }

    /// The amount rounded half away from zero to `decimals` places of a dollar, as
    /// `(negative, whole dollars, fractional digits)`.
    fn rounded(self, decimals: u32) -> (bool, u128, u128) {
        let decimals = decimals.min(DECIMAL_PLACES);
        let abs = self.0.unsigned_abs();
        let step = 10u128.pow(DECIMAL_PLACES - decimals);
        let rounded = abs / step + u128::from(abs % step >= step / 2 && step > 1);
        let scale = 10u128.pow(decimals);
        (self.0 < 0, rounded / scale, rounded % scale)
    }
}

impl std::ops::Add for Money {
    type Output = Money;
    /// Saturating, so that a ledger total can never wrap around.
    fn add(self, rhs: Money) -> Money {
        self.saturating_add(rhs)
    }
}

impl std::ops::AddAssign for Money {
    fn add_assign(&mut self, rhs: Money) {
        *self = self.saturating_add(rhs);
    }
}

impl std::ops::Sub for Money {
    type Output = Money;
    /// Saturating, like [`Add`](std::ops::Add).
    fn sub(self, rhs: Money) -> Money {
        self.saturating_sub(rhs)
    }
}

impl std::ops::SubAssign for Money {
    fn sub_assign(&mut self, rhs: Money) {
        *self = self.saturating_sub(rhs);
    }
}

impl std::iter::Sum for Money {
    fn sum<I: Iterator<Item = Money>>(iter: I) -> Money {
        iter.fold(Money::ZERO, |a, b| a + b)
    }
}

/// Dollars, **exactly** by default: every significant decimal place is printed, trailing zeros
/// trimmed down to cents (`$1.50`, `$0.3087125`, `$3.00`, `-$0.0000375`). A budget tool must
/// not misstate an amount, so rounding happens only when the caller asks for it with a
/// precision, which rounds half away from zero to that many places (`{:.2}` → `$0.31`).
/// Width, fill and alignment apply to the whole text.
impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match f.precision() {
            Some(precision) => {
                let decimals = u32::try_from(precision)
                    .unwrap_or(DECIMAL_PLACES)
                    .min(DECIMAL_PLACES);
                let (negative, whole, frac) = self.rounded(decimals);
                let sign = if negative && (whole != 0 || frac != 0) {
                    "-"
                } else {
                    ""
                };
                if decimals == 0 {
                    format!("{sign}${whole}")
                } else {
                    format!("{sign}${whole}.{frac:0width$}", width = decimals as usize)
                }
            }
            None => {
                let abs = self.0.unsigned_abs();
                let whole = abs / UNITS_PER_DOLLAR as u128;
                let digits = format!("{:024}", abs % UNITS_PER_DOLLAR as u128);
                let significant = digits.trim_end_matches('0');
                // Cents are always shown, so `$1.50` never reads as `$1.5`.
                let frac = &digits[..significant.len().max(MIN_DISPLAY_DECIMALS)];
                let sign = if self.0 < 0 { "-" } else { "" };
                format!("{sign}${whole}.{frac}")
            }
        };
        f.pad_integral(true, "", &text)
    }
}

impl fmt::Debug for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Money(${})", self.to_decimal_string())
    }
}

impl FromStr for Money {
    type Err = MoneyParseError;
    fn from_str(s: &str) -> Result<Money, MoneyParseError> {
        Money::parse_dollars(s)
    }
}

impl serde::Serialize for Money {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_decimal_string())
    }
}

impl<'de> serde::Deserialize<'de> for Money {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Money, D::Error> {
        let text = String::deserialize(deserializer)?;
        Money::parse_dollars(&text).map_err(serde::de::Error::custom)
    }
}

/// Parses decimal text (optional sign, optional `$`, digits, optional fraction, optional
/// exponent) into yocto-dollars, exactly.
fn parse_decimal(text: &str) -> Result<i128, MoneyParseError> {
    let trimmed = text.trim();
    let unexpected = |found: char, at: usize| MoneyParseError::UnexpectedChar {
        text: text.to_owned(),
        found,
        at,
    };
    let out_of_range = || MoneyParseError::OutOfRange {
        text: text.to_owned(),
    };
    let offset = text.len() - text.trim_start().len();
    let mut chars = trimmed.char_indices().peekable();
    let mut negative = false;
    if let Some(&(_, c)) = chars.peek()
        && (c == '-' || c == '+')
    {
        negative = c == '-';
        chars.next();
    }
    if let Some(&(_, '$')) = chars.peek() {
        chars.next();
    }
    let mut mantissa: i128 = 0;
    let mut digits = 0u32;
    let mut frac_digits: i64 = 0;
    let mut seen_point = false;
    let mut exponent: i64 = 0;
    while let Some((at, c)) = chars.next() {
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
            '.' if !seen_point => seen_point = true,
            'e' | 'E' if digits > 0 => {
                exponent = parse_exponent(&mut chars, text, offset)?;
                break;
            }
            '_' if digits > 0 => {}
            other => return Err(unexpected(other, offset + at)),
        }
    }
    if digits == 0 {
        return Err(MoneyParseError::Empty);
    }
    // value = mantissa × 10^(exponent − frac_digits) dollars = mantissa × 10^(shift) units
    let shift = i64::from(DECIMAL_PLACES) + exponent - frac_digits;
    let units = if mantissa == 0 {
        0
    } else if shift >= 0 {
        let factor = u32::try_from(shift)
            .ok()
            .and_then(|s| 10i128.checked_pow(s))
            .ok_or_else(out_of_range)?;
        mantissa.checked_mul(factor).ok_or_else(out_of_range)?
    } else {
        let too_precise = || MoneyParseError::TooPrecise {
            text: text.to_owned(),
        };
        let divisor = u32::try_from(-shift)
            .ok()
            .and_then(|s| 10i128.checked_pow(s));
        match divisor {
            Some(d) if mantissa % d == 0 => mantissa / d,
            _ => return Err(too_precise()),
        }
    };
    Ok(if negative { -units } else { units })
}

fn parse_exponent(
    chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>,
    text: &str,
    offset: usize,
) -> Result<i64, MoneyParseError> {
    let mut negative = false;
    if let Some(&(_, c)) = chars.peek()
        && (c == '-' || c == '+')
    {
        negative = c == '-';
        chars.next();
    }
    let mut value: i64 = 0;
    let mut digits = 0;
    for (at, c) in chars {
        let Some(d) = c.to_digit(10) else {
            return Err(MoneyParseError::UnexpectedChar {
                text: text.to_owned(),
                found: c,
                at: offset + at,
            });
        };
        digits += 1;
        // Exponents beyond a few hundred can only overflow or underflow; cap to stay in i64.
        value = (value * 10 + i64::from(d)).min(100_000);
    }
    if digits == 0 {
        return Err(MoneyParseError::UnexpectedChar {
            text: text.to_owned(),
            found: 'e',
            at: offset + text.trim().len().saturating_sub(1),
        });
    }
    Ok(if negative { -value } else { value })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_litellm_price_texts_exactly() {
        let cases = [
            ("2.5e-06", 2_500_000_000_000_000_000),
            ("0.0000375", 37_500_000_000_000_000_000),
            ("3.75e-08", 37_500_000_000_000_000),
            ("1e-05", 10_000_000_000_000_000_000),
            ("5.0000000000000004e-08", 50_000_000_000_000_004),
            ("0", 0),
            ("$0.50", UNITS_PER_DOLLAR / 2),
            ("-1.5", -(UNITS_PER_DOLLAR * 3 / 2)),
            ("1E3", 1000 * UNITS_PER_DOLLAR),
            ("1_000", 1000 * UNITS_PER_DOLLAR),
            (" 12 ", 12 * UNITS_PER_DOLLAR),
        ];
        for (text, units) in cases {
            assert_eq!(Money::parse_dollars(text), Ok(Money(units)), "{text}");
        }
    }

    #[test]
    fn per_million_is_exact_for_the_smallest_published_prices() {
        // $0.0375 per 1M tokens: the issue's example of a price that must stay exact.
        let p = Money::per_million_tokens("0.0375").unwrap();
        assert_eq!(p, Money::parse_dollars("3.75e-08").unwrap());
        assert_eq!(
            p.checked_mul_tokens(1_000_000).unwrap(),
            Money::parse_dollars("0.0375").unwrap()
        );
    }

    #[test]
    fn rejects_bad_text_with_position() {
        assert_eq!(Money::parse_dollars(""), Err(MoneyParseError::Empty));
        assert_eq!(Money::parse_dollars("$"), Err(MoneyParseError::Empty));
        assert!(matches!(
            Money::parse_dollars("1.2.3"),
            Err(MoneyParseError::UnexpectedChar {
                found: '.',
                at: 3,
                ..
            })
        ));
        assert!(matches!(
            Money::parse_dollars("1,000"),
            Err(MoneyParseError::UnexpectedChar { found: ',', .. })
        ));
        assert!(matches!(
            Money::parse_dollars("1e"),
            Err(MoneyParseError::UnexpectedChar { .. })
        ));
        assert!(matches!(
            Money::parse_dollars("1e-25"),
            Err(MoneyParseError::TooPrecise { .. })
        ));
        assert!(matches!(
            Money::parse_dollars("1e40"),
            Err(MoneyParseError::OutOfRange { .. })
        ));
        assert!(matches!(
            Money::parse_dollars("NaN"),
            Err(MoneyParseError::UnexpectedChar { found: 'N', .. })
        ));
        // Huge exponents neither panic nor loop.
        assert!(Money::parse_dollars("1e999999999999999999999").is_err());
        assert_eq!(Money::parse_dollars("0e999999"), Ok(Money::ZERO));
        assert_eq!(Money::parse_dollars("0e-999999"), Ok(Money::ZERO));
    }

    #[test]
    fn displays_rounded_dollars() {
        let m = Money::parse_dollars("0.0000375").unwrap();
        assert_eq!(m.to_string(), "$0.0000375");
        assert_eq!(format!("{m:.6}"), "$0.000038");
        assert_eq!(format!("{m:.7}"), "$0.0000375");
        assert_eq!(
            format!("{:.2}", Money::parse_dollars("1.005").unwrap()),
            "$1.01"
        );
        assert_eq!(
            format!("{:.2}", Money::parse_dollars("-1.005").unwrap()),
            "-$1.01"
        );
        assert_eq!(format!("{:.0}", Money::from_dollars(3)), "$3");
        assert_eq!(format!("{:>8.2}", Money::from_cents(150)), "   $1.50");
        assert_eq!(m.to_decimal_string(), "0.0000375");
        assert_eq!(Money::from_dollars(-2).to_decimal_string(), "-2");
    }

    #[test]
    fn display_is_exact_unless_a_precision_asks_for_rounding() {
        let exact = |text: &str| Money::parse_dollars(text).unwrap().to_string();
        // The issue's example: rounding to six places printed $0.308713.
        assert_eq!(exact("0.3087125"), "$0.3087125");
        assert_eq!(exact("1.5"), "$1.50");
        assert_eq!(exact("3"), "$3.00");
        assert_eq!(exact("0"), "$0.00");
        assert_eq!(exact("0.1"), "$0.10");
        assert_eq!(exact("-0.0000375"), "-$0.0000375");
        assert_eq!(exact("1e-24"), "$0.000000000000000000000001");
        assert_eq!(exact("123456.789"), "$123456.789");
        assert_eq!(
            Money::from_units(i128::MIN).to_string(),
            "-$170141183460469.231731687303715884105728"
        );
        assert_eq!(format!("{:>7}", Money::from_cents(150)), "  $1.50");
        assert_eq!(format!("{:<7}|", Money::from_cents(-5)), "-$0.05 |");
    }

    proptest! {
        #[test]
        fn exact_display_round_trips(units in any::<i128>()) {
            let m = Money::from_units(units);
            prop_assert_eq!(Money::parse_dollars(&m.to_string()), Ok(m));
        }
    }

    #[test]
    fn arithmetic_saturates_instead_of_wrapping() {
        assert_eq!(Money::MAX + Money::from_dollars(1), Money::MAX);
        assert_eq!(Money::MAX.checked_add(Money::from_units(1)), None);
        assert_eq!(Money::MAX.saturating_mul_tokens(2), Money::MAX);
        assert_eq!(
            Money::from_micros(2).tokens_affordable(Money::from_micros(7)),
            Some(3)
        );
        assert_eq!(Money::ZERO.tokens_affordable(Money::from_micros(7)), None);
    }

    #[test]
    fn serde_round_trips_as_exact_text() {
        let m = Money::parse_dollars("5.0000000000000004e-08").unwrap();
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, "\"0.000000050000000000000004\"");
        assert_eq!(serde_json::from_str::<Money>(&json).unwrap(), m);
    }

    proptest! {
        #[test]
        fn decimal_text_round_trips(units in any::<i128>()) {
            let m = Money::from_units(units);
            prop_assert_eq!(Money::parse_dollars(&m.to_decimal_string()), Ok(m));
        }

        #[test]
        fn parsing_never_panics(text in "\\PC{0,40}") {
            let _ = Money::parse_dollars(&text);
        }

        #[test]
        fn scientific_and_plain_agree(mantissa in 0u64..10_000_000, exp in 0u32..18) {
            let sci = format!("{mantissa}e-{exp}");
            let plain = if exp == 0 {
                mantissa.to_string()
            } else {
                let s = format!("{mantissa:0>width$}", width = exp as usize + 1);
                let (w, f) = s.split_at(s.len() - exp as usize);
                format!("{w}.{f}")
            };
            prop_assert_eq!(Money::parse_dollars(&sci), Money::parse_dollars(&plain));
        }
    }
}
