//! Cutting one text to a token count: the longest head that fits, followed by the marker.

use crate::tokens::Encoding;

#[cfg(doc)]
use super::CompressConfig;
use super::TRUNCATION_MARKER;

/// The encoding `count_chat` uses for `model`.
pub(super) fn encoding_for(model: &str) -> Encoding {
    Encoding::for_model(model).unwrap_or(Encoding::O200kBase)
}

/// `text` cut to at most `max_tokens` tokens of `model`'s encoding (the encoding
/// [`crate::count_text`] uses): unchanged when it fits, otherwise its longest head that fits
/// followed by `" "` and [`TRUNCATION_MARKER`] (or the longest head alone, when even the
/// marker does not fit).
///
/// For capping a model's summary at [`CompressConfig::summary_max_tokens`].
///
/// ```
/// use budget_core::compress::{truncate_text, TRUNCATION_MARKER};
/// use budget_core::count_text;
///
/// let long = "word ".repeat(1_000);
/// let cut = truncate_text("gpt-4o", &long, 50);
/// assert!(count_text("gpt-4o", &cut).tokens <= 50);
/// assert!(cut.ends_with(TRUNCATION_MARKER));
/// assert_eq!(truncate_text("gpt-4o", "short", 50), "short");
/// ```
pub fn truncate_text(model: &str, text: &str, max_tokens: u64) -> String {
    let encoding = encoding_for(model);
    if encoding.count_till_limit(text, max_tokens).is_some() {
        return text.to_owned();
    }
    cut(encoding, text, max_tokens)
}

/// The longest head of `text` that, followed by the marker, counts at most `limit` tokens;
/// the longest head alone when the marker does not fit. Never the whole text.
pub(super) fn cut(encoding: Encoding, text: &str, limit: u64) -> String {
    // Probes are counted with `count` (its piece cache makes short texts cheap) rather than
    // `count_till_limit`: the galloping search keeps every probe within a few times the head
    // it ends up with, so a probe never reads far past the limit.
    let guess = usize::try_from(limit)
        .unwrap_or(usize::MAX)
        .saturating_mul(4);
    if encoding.count(TRUNCATION_MARKER) <= limit {
        let mut candidate = String::new();
        let end = longest_fitting_prefix(text, guess, |head| {
            with_marker(&mut candidate, head);
            encoding.count(&candidate) <= limit
        });
        with_marker(&mut candidate, text.get(..end).unwrap_or_default());
        candidate
    } else {
        let end = longest_fitting_prefix(text, guess, |head| encoding.count(head) <= limit);
        text.get(..end).unwrap_or_default().to_owned()
    }
}

/// Writes `head`, a space and the marker (the marker alone for an empty head) into `out`.
fn with_marker(out: &mut String, head: &str) {
    out.clear();
    if !head.is_empty() {
        out.push_str(head);
        out.push(' ');
    }
    out.push_str(TRUNCATION_MARKER);
}

/// The largest char boundary `end < text.len()` (or 0) for which `fits(&text[..end])`, found
/// by galloping from `guess` bytes and then bisecting; `fits("")` is assumed. Each step moves
/// a bound strictly, so it terminates; if `fits` is not monotone the answer still fits.
fn longest_fitting_prefix(text: &str, guess: usize, mut fits: impl FnMut(&str) -> bool) -> usize {
    let head = |end: usize| text.get(..end).unwrap_or_default();
    let mut lo = 0_usize; // fits
    let mut hi = text.len(); // not tried: treated as too long
    let mut step = guess.max(16);
    loop {
        let probe = ceil_char_boundary(text, lo.saturating_add(step));
        if probe >= hi {
            break;
        }
        if fits(head(probe)) {
            lo = probe;
            step = step.saturating_mul(2);
        } else {
            hi = probe;
            break;
        }
    }
    loop {
        let mut mid = floor_char_boundary(text, lo + (hi - lo) / 2);
        if mid <= lo {
            mid = ceil_char_boundary(text, lo + 1);
        }
        if mid >= hi {
            return lo;
        }
        if fits(head(mid)) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
}

fn floor_char_boundary(text: &str, index: usize) -> usize {
    let mut index = index.min(text.len());
    while !text.is_char_boundary(index) {
        index -= 1;
    }
    index
}

fn ceil_char_boundary(text: &str, index: usize) -> usize {
    let mut index = index.min(text.len());
    while !text.is_char_boundary(index) {
        index += 1;
    }
    index
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn compress_truncate_text_caps() {
        for max in 0..12 {
            let out = truncate_text(MODEL, &"漢字とかな ".repeat(50), max);
            assert!(
                crate::count_text(MODEL, &out).tokens <= max,
                "{max}: {out:?}"
            );
        }
    }
}
