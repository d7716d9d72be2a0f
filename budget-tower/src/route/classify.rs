//! How hard a conversation is: the classifier trait and the heuristic default.

use budget_core::conversation::{Difficulty, Role, Turn, count_turns};

/// Decides how hard a request is, when the request carries no hint of its own.
///
/// Implement it to plug in a better judge (a classifier model's verdict cached per task
/// type, a lookup by agent...); it must be cheap, it runs before every routed call.
pub trait DifficultyClassifier: Send + Sync + std::fmt::Debug {
    /// The difficulty of the conversation `turns`, sent to `model` (the model the caller asked
    /// for: token counts depend on it).
    fn classify(&self, model: &str, turns: &[Turn]) -> Difficulty;
}

/// The hard-task keywords of [`HeuristicClassifier::default`], matched case-insensitively as
/// whole words or phrases.
pub const DEFAULT_HARD_KEYWORDS: &[&str] = &[
    "prove",
    "proof",
    "derive",
    "design",
    "architect",
    "architecture",
    "plan",
    "planning",
    "refactor",
    "refactoring",
    "debug",
    "debugging",
    "optimise",
    "optimize",
    "optimisation",
    "optimization",
    "analyse",
    "analyze",
    "analysis",
    "step by step",
    "step-by-step",
    "trade-off",
    "trade-offs",
    "tradeoff",
    "tradeoffs",
    "root cause",
];

/// A cheap rule-based [`DifficultyClassifier`].
///
/// It looks at the **newest user input** — the newest user turn and the user turns directly
/// before it (tool results and assistant tool calls after it are skipped over) — and at the
/// conversation as a whole. In order, the first rule that applies wins:
///
/// 1. the newest user input is longer than `hard_above_tokens` (default 2,000, counted
///    with [`count_turns`] for the requested model) -> [`Difficulty::Hard`];
/// 2. it contains a hard-task keyword (default [`DEFAULT_HARD_KEYWORDS`]: prove, design,
///    architect, plan, refactor, debug, optimise/optimize, analyse/analyze, "step by step"...;
///    whole words or phrases, any case) -> [`Difficulty::Hard`];
/// 3. the conversation holds a code fence (```` ``` ````), an assistant's tool call or a tool
///    result -> [`Difficulty::Medium`] (at least);
/// 4. there is no user turn at all -> [`Difficulty::Medium`] (nothing to judge by);
/// 5. the newest user input is shorter than `easy_below_tokens` (default 150) ->
///    [`Difficulty::Easy`];
/// 6. otherwise [`Difficulty::Medium`].
///
/// ```
/// use budget_core::conversation::{Difficulty, Role, Turn};
/// use budget_tower::route::{DifficultyClassifier, HeuristicClassifier};
///
/// let classifier = HeuristicClassifier::default();
/// let ask = |text: &str| vec![Turn::new(Role::User, text)];
/// assert_eq!(classifier.classify("gpt-4o", &ask("What is the capital of France?")), Difficulty::Easy);
/// assert_eq!(classifier.classify("gpt-4o", &ask("Design a sharded rate limiter.")), Difficulty::Hard);
/// assert_eq!(classifier.classify("gpt-4o", &ask("Fix this:\n```rust\nfn f() {}\n```")), Difficulty::Medium);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeuristicClassifier {
    hard_above_tokens: u64,
    easy_below_tokens: u64,
    hard_keywords: Vec<String>,
}

impl Default for HeuristicClassifier {
    fn default() -> Self {
        HeuristicClassifier {
            hard_above_tokens: 2_000,
            easy_below_tokens: 150,
            hard_keywords: DEFAULT_HARD_KEYWORDS
                .iter()
                .map(|k| (*k).to_owned())
                .collect(),
        }
    }
}

impl HeuristicClassifier {
    /// The default rules (see the type's docs).
    pub fn new() -> Self {
        HeuristicClassifier::default()
    }

    /// A newest user input longer than `tokens` is hard.
    pub fn hard_above_tokens(mut self, tokens: u64) -> Self {
        self.hard_above_tokens = tokens;
        self
    }

    /// A newest user input shorter than `tokens` (with no keyword, code or tools) is easy.
    pub fn easy_below_tokens(mut self, tokens: u64) -> Self {
        self.easy_below_tokens = tokens;
        self
    }

    /// Replaces the hard-task keywords (whole words or phrases, any case; empty ones are
    /// ignored).
    pub fn hard_keywords<I, K>(mut self, keywords: I) -> Self
    where
        I: IntoIterator<Item = K>,
        K: Into<String>,
    {
        self.hard_keywords = normalised(keywords);
        self
    }

    /// Adds hard-task keywords to the current ones.
    pub fn add_hard_keywords<I, K>(mut self, keywords: I) -> Self
    where
        I: IntoIterator<Item = K>,
        K: Into<String>,
    {
        self.hard_keywords.extend(normalised(keywords));
        self
    }

    /// Whether `text` contains one of the hard-task keywords as a whole word or phrase.
    pub fn has_hard_keyword(&self, text: &str) -> bool {
        let text = text.to_lowercase();
        // The keywords are stored lower-cased.
        self.hard_keywords.iter().any(|k| contains_word(&text, k))
    }
}

fn normalised<I, K>(keywords: I) -> Vec<String>
where
    I: IntoIterator<Item = K>,
    K: Into<String>,
{
    keywords
        .into_iter()
        .map(|k| k.into().trim().to_lowercase())
        .filter(|k| !k.is_empty())
        .collect()
}

/// Whether `needle` occurs in `haystack` with no letter or digit directly before or after it.
fn contains_word(haystack: &str, needle: &str) -> bool {
    if needle.is_empty() {
        return false;
    }
    haystack.match_indices(needle).any(|(at, _)| {
        let before = haystack[..at].chars().next_back();
        let after = haystack[at + needle.len()..].chars().next();
        !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
    })
}

/// The newest user input: the last user turn and the user turns directly before it, skipping
/// the non-user turns (tool calls and results) that follow it.
fn newest_user_turns(turns: &[Turn]) -> &[Turn] {
    let Some(last) = turns.iter().rposition(|t| t.role == Role::User) else {
        return &[];
    };
    let first = turns[..last]
        .iter()
        .rposition(|t| t.role != Role::User)
        .map_or(0, |i| i + 1);
    &turns[first..=last]
}

fn uses_code_or_tools(turn: &Turn) -> bool {
    turn.role == Role::Tool
        || turn.tool_call_id.is_some()
        || turn.tool_calls_json.is_some()
        || !turn.tool_call_ids.is_empty()
        || turn.text.contains("```")
}

impl DifficultyClassifier for HeuristicClassifier {
    fn classify(&self, model: &str, turns: &[Turn]) -> Difficulty {
        let newest = newest_user_turns(turns);
        let tokens = if newest.is_empty() {
            0
        } else {
            count_turns(model, newest).tokens
        };
        if tokens > self.hard_above_tokens || newest.iter().any(|t| self.has_hard_keyword(&t.text))
        {
            return Difficulty::Hard;
        }
        if newest.is_empty() || turns.iter().any(uses_code_or_tools) {
            return Difficulty::Medium;
        }
        if tokens < self.easy_below_tokens {
            Difficulty::Easy
        } else {
            Difficulty::Medium
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(text: &str) -> Turn {
        Turn::new(Role::User, text)
    }

    fn classify(turns: &[Turn]) -> Difficulty {
        HeuristicClassifier::default().classify("gpt-4o", turns)
    }

    #[test]
    fn short_plain_questions_are_easy() {
        assert_eq!(classify(&[user("What's 2 + 2?")]), Difficulty::Easy);
        let with_system = [
            Turn::new(Role::System, "You are terse."),
            user("Translate 'cat' to French."),
        ];
        assert_eq!(classify(&with_system), Difficulty::Easy);
    }

    #[test]
    fn keywords_make_it_hard_as_whole_words_in_any_case() {
        for ask in [
            "Please PROVE that the sum converges.",
            "design a schema for invoices",
            "Can you refactor this module?",
            "Explain it step by step.",
            "Optimize the query; it is slow.",
            "analyse the churn numbers",
            "Help me debug the crash",
        ] {
            assert_eq!(classify(&[user(ask)]), Difficulty::Hard, "{ask}");
        }
        // Inside other words they do not count.
        for ask in [
            "Name a planet.",
            "Who is the designer of the Eiffel tower?",
            "Is it improved?",
        ] {
            assert_eq!(classify(&[user(ask)]), Difficulty::Easy, "{ask}");
        }
    }

    #[test]
    fn only_the_newest_user_input_is_judged_for_keywords_and_length() {
        let turns = [
            user("Design a whole architecture for me."),
            Turn::new(Role::Assistant, "Done."),
            user("Thanks! What's the time zone of Paris?"),
        ];
        assert_eq!(classify(&turns), Difficulty::Easy);
        // Consecutive user turns form the newest input together.
        let split = [
            user("Here is my question."),
            user("Please plan the release."),
        ];
        assert_eq!(classify(&split), Difficulty::Hard);
    }

    #[test]
    fn long_input_is_hard_and_middling_input_is_medium() {
        let long = "the quarterly spend rose again ".repeat(500);
        assert_eq!(classify(&[user(&long)]), Difficulty::Hard);
        let middling = "the quarterly spend rose again ".repeat(40);
        assert_eq!(classify(&[user(&middling)]), Difficulty::Medium);
    }

    #[test]
    fn code_and_tools_are_at_least_medium() {
        assert_eq!(
            classify(&[user("What does this print?\n```py\nprint(1)\n```")]),
            Difficulty::Medium
        );
        let mut call = Turn::new(Role::Assistant, "");
        call.tool_call_ids = vec!["c1".into()];
        call.tool_calls_json = Some(r#"[{"name":"weather"}]"#.into());
        let mut result = Turn::new(Role::Tool, "12 degrees");
        result.tool_call_id = Some("c1".into());
        let turns = [user("Weather in Oslo?"), call, result];
        assert_eq!(classify(&turns), Difficulty::Medium);
        // A keyword still makes it hard.
        let mut turns = turns.to_vec();
        turns[0] = user("Plan my trip around the weather in Oslo.");
        assert_eq!(classify(&turns), Difficulty::Hard);
    }

    #[test]
    fn no_user_turn_is_medium() {
        assert_eq!(classify(&[]), Difficulty::Medium);
        assert_eq!(
            classify(&[Turn::new(Role::System, "Summarise the log.")]),
            Difficulty::Medium
        );
    }

    #[test]
    fn thresholds_and_keywords_are_configurable() {
        let strict = HeuristicClassifier::new()
            .easy_below_tokens(12)
            .hard_above_tokens(30)
            .hard_keywords(["Summarise", "  "]);
        assert_eq!(strict.classify("gpt-4o", &[user("Hi")]), Difficulty::Easy);
        assert_eq!(
            strict.classify("gpt-4o", &[user("What is the capital of France, please?")]),
            Difficulty::Medium
        );
        assert_eq!(
            strict.classify("gpt-4o", &[user(&"word ".repeat(40))]),
            Difficulty::Hard
        );
        assert_eq!(
            strict.classify("gpt-4o", &[user("summarise it")]),
            Difficulty::Hard
        );
        // "design" is no longer a keyword.
        assert_eq!(
            strict.classify("gpt-4o", &[user("design")]),
            Difficulty::Easy
        );
        let more = HeuristicClassifier::new().add_hard_keywords(["translate"]);
        assert_eq!(
            more.classify("gpt-4o", &[user("Translate 'cat'.")]),
            Difficulty::Hard
        );
        assert!(more.has_hard_keyword("then PROVE it"));
    }
}
