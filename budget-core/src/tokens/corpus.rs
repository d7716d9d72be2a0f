//! A deterministic corpus of mixed prose and code, shared by the token-counting benchmark and
//! the tokenizer-equivalence tests. Not part of the supported API.
//!
//! The text mixes English-like prose (punctuation, numbers, contractions, quotes), accented
//! Latin, Cyrillic, CJK and emoji (ZWJ sequences and skin tones included), and Rust, Python,
//! JSON and Markdown snippets with the whitespace shapes that stress pre-tokenisers: indentation
//! runs, tabs, `\r\n`, trailing spaces and blank lines. A small hand-written SplitMix64 drives
//! it, so the same `(bytes, seed)` gives the same text on every platform and release.

/// SplitMix64 (Steele, Lea & Flood 2014): tiny, fast, good enough for test data.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-ish in `0..n` (`0` when `n == 0`).
    fn below(&mut self, n: usize) -> usize {
        let n = n as u64;
        if n == 0 {
            return 0;
        }
        // Multiply-shift: no modulo bias worth mentioning, no division.
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as usize
    }

    /// In `lo..=hi`.
    fn between(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi.saturating_sub(lo) + 1)
    }

    /// `true` with probability `percent`/100.
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

#[rustfmt::skip]
const WORDS: &[&str] = &[
    "the", "of", "and", "to", "in", "a", "is", "that", "for", "it", "as", "was", "with", "be",
    "by", "on", "not", "he", "this", "are", "or", "his", "from", "at", "which", "but", "have",
    "an", "had", "they", "you", "were", "their", "one", "all", "we", "can", "her", "has",
    "there", "been", "if", "more", "when", "will", "would", "who", "so", "no", "budget",
    "token", "agent", "model", "request", "limit", "ledger", "price", "cache", "stream",
    "reservation", "concurrency", "throughput", "latency", "invoice", "provider", "customer",
    "quarterly", "synergy", "deliverable", "bandwidth", "leverage", "pipeline", "inference",
    "context", "window", "prompt", "completion", "reasoning", "evaluation", "dataset",
    "benchmark", "tokenizer", "encoding", "vocabulary", "merge", "rank", "byte", "pair",
    "mountain", "river", "village", "harvest", "lantern", "orchestra", "velvet", "granite",
    "whisper", "thunder", "meadow", "compass", "harbor", "parchment", "saffron", "quartz",
    "ephemeral", "ubiquitous", "serendipity", "idiosyncratic", "quintessential",
    "antidisestablishmentarianism", "internationalization", "supercalifragilistic",
    "running", "jumped", "carefully", "quickly", "slowly", "beautiful", "enormous", "tiny",
    "ancient", "modern", "bright", "silent", "restless", "curious", "generous", "stubborn",
    "measure", "allocate", "reconcile", "forecast", "throttle", "refund", "charge", "settle",
];

#[rustfmt::skip]
const CAPITALISED: &[&str] = &[
    "The", "However,", "Meanwhile,", "In", "When", "Although", "Because", "Yesterday,",
    "OpenAI", "Anthropic", "Rust", "Python", "London", "Tokyo", "Mr.", "Dr.", "Our", "Every",
    "NASA", "JSON", "HTTP", "McDonald", "iPhone", "eBay", "YouTube", "LaTeX",
];

#[rustfmt::skip]
const CONTRACTIONS: &[&str] = &[
    "don't", "won't", "it's", "we'll", "they're", "I've", "you'd", "she's", "can't",
    "shouldn't", "WE'RE", "Let's", "O'Brien's", "rock'n'roll", "'tis",
];

#[rustfmt::skip]
const FOREIGN: &[&str] = &[
    "café", "naïve", "résumé", "Zürich", "São Paulo", "façade", "jalapeño", "über", "Ærøskøbing",
    "smörgåsbord", "crème brûlée", "Dvořák", "Łódź", "İstanbul", "straße", "Ελληνικά",
    "Москва", "спасибо", "日本語", "東京都", "こんにちは", "ありがとうございます", "中文",
    "北京市", "人工智能", "한국어", "안녕하세요", "हिन्दी", "العربية", "עברית", "ภาษาไทย",
    "Tiếng Việt", "e\u{301}te\u{301}", "A\u{30a}ngstro\u{308}m",
];

#[rustfmt::skip]
const EMOJI: &[&str] = &[
    "🚀", "👍", "👍🏽", "🎉", "😀", "🔥", "✅", "❌", "💸", "📈", "🤖", "🧠", "👨‍👩‍👧‍👦",
    "🏳️‍🌈", "🇯🇵", "🇫🇷", "❤️", "☕", "⚠️", "∑", "→", "≥", "±", "°C", "€", "£", "¥", "™",
];

const SENTENCE_ENDS: &[&str] = &[".", ".", ".", ".", "!", "?", "...", "…", "?!", ".\""];

const FOREIGN_SENTENCES: &[&str] = &[
    "Le café est très bon, n'est-ce pas ? Oui, c'est délicieux.",
    "Die Größe der Straße überrascht uns jedes Mal; außerdem ist sie schön.",
    "¿Dónde está la biblioteca? ¡Está cerca de la estación!",
    "東京は日本の首都であり、人口は約1400万人です。",
    "我们今天讨论了人工智能的预算和令牌计数问题。",
    "Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "오늘 회의는 오후 3시에 시작합니다.",
    "Ça coûte 12,50 € — pas cher du tout !",
    "Μια φορά κι έναν καιρό, σε ένα μακρινό χωριό…",
    "مرحبا بالعالم، هذه جملة تجريبية.",
];

/// Appends words to `out` until a paragraph of prose is written.
fn prose(rng: &mut SplitMix64, out: &mut String) {
    let sentences = rng.between(2, 7);
    for s in 0..sentences {
        if s > 0 {
            out.push_str(if rng.chance(8) { "  " } else { " " });
        }
        if rng.chance(10) {
            out.push_str(rng.pick(FOREIGN_SENTENCES));
            continue;
        }
        out.push_str(rng.pick(CAPITALISED));
        let words = rng.between(5, 18);
        for _ in 0..words {
            out.push(' ');
            word(rng, out);
            if rng.chance(7) {
                out.push_str(rng.pick(&[",", ",", ";", ":", " —", " -", "'s"]));
            }
        }
        out.push_str(rng.pick(SENTENCE_ENDS));
    }
    if rng.chance(5) {
        out.push_str(rng.pick(&[" ", "  ", "\t", " \u{a0}"]));
    }
    out.push_str(rng.pick(&["\n\n", "\n\n", "\n", "\r\n\r\n", "\n\n\n"]));
}

fn word(rng: &mut SplitMix64, out: &mut String) {
    match rng.below(100) {
        0..=69 => out.push_str(rng.pick(WORDS)),
        70..=75 => out.push_str(rng.pick(CONTRACTIONS)),
        76..=81 => out.push_str(rng.pick(FOREIGN)),
        82..=84 => out.push_str(rng.pick(EMOJI)),
        85..=92 => number(rng, out),
        93..=95 => {
            out.push('"');
            out.push_str(rng.pick(WORDS));
            out.push(' ');
            out.push_str(rng.pick(WORDS));
            out.push('"');
        }
        96..=97 => {
            out.push('(');
            out.push_str(rng.pick(WORDS));
            out.push(')');
        }
        _ => {
            out.push_str(rng.pick(WORDS));
            out.push('-');
            out.push_str(rng.pick(WORDS));
        }
    }
}

fn number(rng: &mut SplitMix64, out: &mut String) {
    use std::fmt::Write as _;
    let n = rng.next_u64();
    // Writing to a String cannot fail.
    let _ = match rng.below(8) {
        0 => write!(out, "{}", n % 100),
        1 => write!(out, "{}", n % 1_000_000),
        2 => write!(out, "{}.{:02}", n % 1000, (n >> 20) % 100),
        3 => write!(out, "{}%", n % 101),
        4 => write!(
            out,
            "${},{:03}.{:02}",
            n % 90 + 1,
            (n >> 8) % 1000,
            (n >> 30) % 100
        ),
        5 => write!(
            out,
            "{}-{:02}-{:02}",
            1990 + n % 40,
            (n >> 8) % 12 + 1,
            (n >> 16) % 28 + 1
        ),
        6 => write!(out, "0x{:08x}", n >> 32),
        _ => write!(out, "{}", n),
    };
}

fn identifier(rng: &mut SplitMix64, style: usize) -> String {
    let parts = rng.between(1, 3);
    let mut id = String::new();
    for i in 0..parts {
        let mut w = rng.pick(WORDS).to_owned();
        if w.len() > 12 {
            w.truncate(6);
        }
        match style {
            // snake_case
            0 => {
                if i > 0 {
                    id.push('_');
                }
                id.push_str(&w);
            }
            // camelCase / PascalCase
            _ => {
                let mut chars = w.chars();
                if let Some(first) = chars.next() {
                    if i > 0 || style == 2 {
                        id.extend(first.to_uppercase());
                    } else {
                        id.push(first);
                    }
                    id.push_str(chars.as_str());
                }
            }
        }
    }
    id
}

fn rust_snippet(rng: &mut SplitMix64, out: &mut String) {
    use std::fmt::Write as _;
    let func = identifier(rng, 0);
    let ty = identifier(rng, 2);
    let field = identifier(rng, 0);
    let other = identifier(rng, 0);
    let n = rng.below(10_000);
    let _ = write!(
        out,
        "```rust\n/// Computes the {w1} {w2} for a {w3}.\n#[derive(Debug, Clone, PartialEq)]\npub struct {ty} {{\n    pub {field}: u64,\n    {other}: Vec<String>,\n}}\n\nimpl {ty} {{\n    pub fn {func}(&mut self, input: &str) -> Result<u64, Error> {{\n        let mut total = 0_u64;\n        for (i, line) in input.lines().enumerate() {{\n            if line.trim().is_empty() {{ continue; }}\n            total = total.saturating_add(line.len() as u64 * {n});\n            self.{other}.push(format!(\"{{i}}: {{line:?}}\"));\n        }}\n        // TODO: handle the {w4} case\n        self.{field} += total;\n        Ok(total)\n    }}\n}}\n```\n",
        w1 = rng.pick(WORDS),
        w2 = rng.pick(WORDS),
        w3 = rng.pick(WORDS),
        w4 = rng.pick(WORDS),
    );
    if rng.chance(30) {
        let _ = write!(
            out,
            "\nfn main() {{\n\tlet x: i32 = -{n};\n\tprintln!(\"{{}} {{:?}}\", x, [1, 2, 3]);\n\tassert!(x <= 0 && x >= -10_000);\n}}\n",
        );
    }
    out.push('\n');
}

fn python_snippet(rng: &mut SplitMix64, out: &mut String) {
    use std::fmt::Write as _;
    let func = identifier(rng, 0);
    let class = identifier(rng, 2);
    let arg = identifier(rng, 0);
    let n = rng.below(1000);
    let _ = write!(
        out,
        "```python\nimport json\nfrom typing import Optional\n\n\nclass {class}:\n    \"\"\"A {w1} that {w2} the {w3}.\"\"\"\n\n    def __init__(self, {arg}: Optional[int] = None) -> None:\n        self.{arg} = {arg} or {n}\n        self._cache: dict[str, float] = {{}}\n\n    def {func}(self, items):\n        # {w4}: keep this O(n)\n        total = sum(x ** 2 for x in items if x % 2 == 0)\n        if total > {n}:\n            raise ValueError(f\"too many: {{total!r}} > {n}\")\n        return json.dumps({{'total': total, \"ok\": True}}, indent=2)\n\n\nif __name__ == \"__main__\":\n    print({class}().{func}(range({n})))\n```\n\n",
        w1 = rng.pick(WORDS),
        w2 = rng.pick(WORDS),
        w3 = rng.pick(WORDS),
        w4 = rng.pick(WORDS),
    );
}

fn json_value(rng: &mut SplitMix64, out: &mut String, depth: usize, indent: Option<usize>) {
    use std::fmt::Write as _;
    let newline = |out: &mut String, level: usize| {
        if let Some(width) = indent {
            out.push('\n');
            out.extend(std::iter::repeat_n(' ', width * level));
        }
    };
    let kind = if depth >= 3 {
        rng.below(5)
    } else {
        rng.below(7)
    };
    let _ = match kind {
        0 => write!(out, "\"{} {}\"", rng.pick(WORDS), rng.pick(FOREIGN)),
        1 => write!(out, "{}", rng.below(100_000)),
        2 => write!(out, "{}.{}", rng.below(1000), rng.below(1000)),
        3 => write!(out, "{}", rng.pick(&["true", "false", "null"])),
        4 => write!(
            out,
            "\"{}\\n{}\\\"{}\"",
            rng.pick(WORDS),
            rng.pick(EMOJI),
            rng.pick(WORDS)
        ),
        5 => {
            out.push('[');
            let items = rng.between(0, 4);
            for i in 0..items {
                if i > 0 {
                    out.push(',');
                    if indent.is_none() {
                        out.push(' ');
                    }
                }
                newline(out, depth + 1);
                json_value(rng, out, depth + 1, indent);
            }
            if items > 0 {
                newline(out, depth);
            }
            out.push(']');
            Ok(())
        }
        _ => {
            out.push('{');
            let fields = rng.between(1, 5);
            for i in 0..fields {
                if i > 0 {
                    out.push(',');
                }
                newline(out, depth + 1);
                let style = rng.below(2);
                let key = identifier(rng, style);
                let _ = write!(out, "\"{key}\":");
                if indent.is_some() {
                    out.push(' ');
                }
                json_value(rng, out, depth + 1, indent);
            }
            newline(out, depth);
            out.push('}');
            Ok(())
        }
    };
}

fn json_snippet(rng: &mut SplitMix64, out: &mut String) {
    let indent = rng.pick(&[None, Some(2), Some(2), Some(4)]);
    out.push_str("```json\n{");
    let fields = rng.between(2, 6);
    for i in 0..fields {
        if i > 0 {
            out.push(',');
        }
        if let Some(width) = indent {
            out.push('\n');
            out.extend(std::iter::repeat_n(' ', width));
        }
        out.push('"');
        out.push_str(&identifier(rng, 0));
        out.push_str("\": ");
        json_value(rng, out, 1, indent);
    }
    out.push_str("\n}\n```\n\n");
}

fn markdown_snippet(rng: &mut SplitMix64, out: &mut String) {
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        "{} {} {}\n",
        rng.pick(&["#", "##", "###"]),
        rng.pick(CAPITALISED),
        rng.pick(WORDS)
    );
    for i in 0..rng.between(2, 6) {
        let bullet = rng.pick(&["-", "*", "1.", "  -", "\t-"]);
        let _ = write!(
            out,
            "{bullet} **{}** {} `{}`",
            rng.pick(WORDS),
            rng.pick(WORDS),
            identifier(rng, 0)
        );
        if rng.chance(30) {
            out.push(' ');
            out.push_str(rng.pick(EMOJI));
        }
        if i % 2 == 1 && rng.chance(20) {
            out.push_str("   ");
        }
        out.push('\n');
    }
    if rng.chance(40) {
        out.push_str("\n| model | input | output |\n|------:|:-----:|--------|\n");
        for _ in 0..rng.between(1, 4) {
            let _ = writeln!(
                out,
                "| {} | {} | {}.{:02} |",
                identifier(rng, 0),
                rng.below(200_000),
                rng.below(100),
                rng.below(100)
            );
        }
    }
    out.push('\n');
}

/// A deterministic mix of prose and code, exactly `bytes` bytes long (padded with ASCII
/// spaces after cutting at a character boundary). The same `(bytes, seed)` always gives the
/// same text.
///
/// ```
/// use budget_core::tokens::corpus::mixed_corpus;
///
/// let text = mixed_corpus(4096, 7);
/// assert_eq!(text.len(), 4096);
/// assert_eq!(text, mixed_corpus(4096, 7));
/// ```
pub fn mixed_corpus(bytes: usize, seed: u64) -> String {
    let mut rng = SplitMix64(seed);
    let mut out = String::with_capacity(bytes.saturating_add(4096));
    while out.len() < bytes {
        match rng.below(100) {
            0..=54 => prose(&mut rng, &mut out),
            55..=69 => rust_snippet(&mut rng, &mut out),
            70..=81 => python_snippet(&mut rng, &mut out),
            82..=93 => json_snippet(&mut rng, &mut out),
            _ => markdown_snippet(&mut rng, &mut out),
        }
    }
    let mut cut = bytes;
    while !out.is_char_boundary(cut) {
        cut -= 1;
    }
    out.truncate(cut);
    while out.len() < bytes {
        out.push(' ');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_corpus_is_deterministic_and_sized() {
        for bytes in [0, 1, 2, 3, 100, 10_000] {
            let a = mixed_corpus(bytes, 42);
            assert_eq!(a.len(), bytes);
            assert_eq!(a, mixed_corpus(bytes, 42));
        }
        assert_ne!(mixed_corpus(10_000, 1), mixed_corpus(10_000, 2));
    }

    #[test]
    fn tokens_corpus_is_mixed() {
        let text = mixed_corpus(1 << 20, 2024);
        for needle in [
            "```rust",
            "```python",
            "```json",
            "def ",
            "fn ",
            "{\n",
            "\r\n",
            "\t",
        ] {
            assert!(text.contains(needle), "missing {needle:?}");
        }
        assert!(
            text.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c)),
            "no CJK"
        );
        assert!(text.chars().any(|c| c > '\u{1f000}'), "no emoji");
        assert!(text.contains('é'), "no accents");
        let ascii = text.bytes().filter(u8::is_ascii).count();
        assert!(
            ascii > text.len() / 2 && ascii < text.len(),
            "ascii share {ascii}"
        );
    }
}
