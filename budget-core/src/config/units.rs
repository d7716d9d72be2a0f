//! Human units in the configuration file: token counts (`500k`, `2M`), money (`$150`,
//! `$0.25`), durations (`30m`, `1h`), windows (`day`, `task`, `rolling 1h`) and percentages
//! (`90%`, `0.9`). Every parser reads digits, never `f64`.

use jiff::SignedDuration;

use crate::Money;
use crate::limits::{Period, Window};

/// What a token count looks like, for error messages.
pub(crate) const TOKENS_EXPECTED: &str = "a token count such as `4000`, `500k`, `2M` or `1.5M` (k = 1,000, M = 1,000,000, G = 1,000,000,000)";
/// What money looks like, for error messages.
pub(crate) const MONEY_EXPECTED: &str = "an amount of dollars such as `$150` or `$0.25`";
/// What a window looks like, for error messages.
pub(crate) const WINDOW_EXPECTED: &str = "a window: `task`, `hour`, `day`, `week`, `month` \
    (calendar periods in `time_zone`) or `rolling DURATION` such as `rolling 1h`";
/// What a percentage looks like, for error messages.
pub(crate) const PERCENT_EXPECTED: &str = "a percentage from 1 to 100 such as `90%`, `90` or `0.9`";

/// Parses a token count: digits with optional `_` separators, an optional fraction and an
/// optional `k`, `M` or `G` suffix; the result must be a whole number of tokens.
///
/// ```
/// # use budget_core::config::parse_tokens;
/// assert_eq!(parse_tokens("500k"), Some(500_000));
/// assert_eq!(parse_tokens("1.5M"), Some(1_500_000));
/// assert_eq!(parse_tokens("2_000"), Some(2_000));
/// assert_eq!(parse_tokens("1.5"), None);
/// ```
pub fn parse_tokens(text: &str) -> Option<u64> {
    let text: String = text.trim().chars().filter(|&c| c != '_').collect();
    let (number, multiplier) = match text.char_indices().last()? {
        (at, 'k' | 'K') => (&text[..at], 1_000u64),
        (at, 'M') => (&text[..at], 1_000_000),
        (at, 'G' | 'B') => (&text[..at], 1_000_000_000),
        _ => (text.as_str(), 1),
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !fraction.bytes().all(|b| b.is_ascii_digit())
        || (number.contains('.') && fraction.is_empty())
    {
        return None;
    }
    let mut value = whole.parse::<u64>().ok()?.checked_mul(multiplier)?;
    let mut scale = multiplier;
    for digit in fraction.bytes() {
        if scale % 10 != 0 {
            return None;
        }
        scale /= 10;
        value = value.checked_add(u64::from(digit - b'0').checked_mul(scale)?)?;
    }
    Some(value)
}

/// Parses money: what [`Money::parse_dollars`] accepts (`$150`, `0.25`, `$0.000001`).
pub fn parse_money(text: &str) -> Option<Money> {
    Money::parse_dollars(text).ok()
}

/// Parses a duration: a whole number followed by `s`, `m`, `h` or `d`.
///
/// ```
/// # use budget_core::config::parse_duration;
/// # use jiff::SignedDuration;
/// assert_eq!(parse_duration("30m"), Some(SignedDuration::from_mins(30)));
/// assert_eq!(parse_duration("1h"), Some(SignedDuration::from_hours(1)));
/// assert_eq!(parse_duration("1x"), None);
/// ```
pub fn parse_duration(text: &str) -> Option<SignedDuration> {
    let text = text.trim();
    let unit = text.chars().last()?;
    let number: i64 = text[..text.len() - unit.len_utf8()].trim().parse().ok()?;
    if number < 0 {
        return None;
    }
    let seconds = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        _ => return None,
    };
    Some(SignedDuration::from_secs(number.checked_mul(seconds)?))
}

/// Parses a window: `task`, `hour`, `day`, `week`, `month` or `rolling DURATION`.
///
/// ```
/// # use budget_core::config::parse_window;
/// # use budget_core::limits::{Period, Window};
/// # use jiff::SignedDuration;
/// assert_eq!(parse_window("day"), Some(Window::Calendar(Period::Day)));
/// assert_eq!(parse_window("rolling 1h"), Some(Window::Rolling(SignedDuration::from_hours(1))));
/// ```
pub fn parse_window(text: &str) -> Option<Window> {
    let text = text.trim();
    Some(match text {
        "task" => Window::PerTask,
        "hour" => Window::Calendar(Period::Hour),
        "day" => Window::Calendar(Period::Day),
        "week" => Window::Calendar(Period::Week),
        "month" => Window::Calendar(Period::Month),
        _ => Window::Rolling(parse_duration(text.strip_prefix("rolling ")?)?),
    })
}

/// Parses a percentage from 1 to 100: `90%`, `90`, or a ratio `0.9` (read as digits).
///
/// ```
/// # use budget_core::config::parse_percent;
/// assert_eq!(parse_percent("0.9"), Some(90));
/// assert_eq!(parse_percent("70%"), Some(70));
/// assert_eq!(parse_percent("0"), None);
/// ```
pub fn parse_percent(text: &str) -> Option<u8> {
    let text = text.trim();
    let percent = if let Some(number) = text.strip_suffix('%') {
        number.trim().parse::<u8>().ok()?
    } else if let Some(fraction) = text.strip_prefix("0.") {
        // A ratio: two decimal places at most, so the percentage is whole.
        match fraction.len() {
            1 => fraction.parse::<u8>().ok()? * 10,
            2 => fraction.parse::<u8>().ok()?,
            _ => return None,
        }
    } else if text == "1.0" {
        100
    } else {
        text.parse::<u8>().ok()?
    };
    (1..=100).contains(&percent).then_some(percent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_take_suffixes_and_refuse_fractions_of_a_token() {
        assert_eq!(parse_tokens("2M"), Some(2_000_000));
        assert_eq!(parse_tokens("200K"), Some(200_000));
        assert_eq!(parse_tokens("0.5k"), Some(500));
        assert_eq!(parse_tokens("1G"), Some(1_000_000_000));
        assert_eq!(parse_tokens("1.0001k"), None);
        assert_eq!(parse_tokens("-5"), None);
        assert_eq!(parse_tokens("5 apples"), None);
        assert_eq!(parse_tokens(""), None);
        assert_eq!(parse_tokens("1."), None);
        assert_eq!(parse_tokens("99999999999999999999"), None);
    }

    #[test]
    fn money_is_exact() {
        assert_eq!(parse_money("$150"), Some(Money::from_dollars(150)));
        assert_eq!(parse_money("$0.25"), Some(Money::from_cents(25)));
        assert_eq!(parse_money("150 dollars"), None);
    }

    #[test]
    fn windows_and_percents() {
        assert_eq!(parse_window("task"), Some(Window::PerTask));
        assert_eq!(parse_window("month"), Some(Window::Calendar(Period::Month)));
        assert_eq!(
            parse_window("rolling 30m"),
            Some(Window::Rolling(SignedDuration::from_mins(30)))
        );
        assert_eq!(parse_window("daily"), None);
        assert_eq!(parse_percent("0.7"), Some(70));
        assert_eq!(parse_percent("100"), Some(100));
        assert_eq!(parse_percent("101"), None);
        assert_eq!(parse_percent("0.999"), None);
    }
}
