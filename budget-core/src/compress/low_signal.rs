//! Low-signal turns: greetings, thanks, acknowledgements and farewells that a compressed
//! conversation can lose.

use crate::conversation::{Role, Turn};

use super::tool_groups::{ToolGroups, calls_tools};

/// Greetings, thanks, acknowledgements and farewells, normalised (lower case, apostrophes
/// removed, punctuation as spaces). A message is low-signal when it is a sequence of these
/// (and [`FILLERS`]).
#[rustfmt::skip]
const PHRASES: &[&str] = &[
    // greetings
    "hi", "hello", "hey", "hiya", "howdy", "greetings", "yo", "hi there", "hello there",
    "hey there", "good morning", "good afternoon", "good evening", "morning", "evening",
    // thanks
    "thanks", "thank you", "thank u", "thx", "tnx", "ty", "tysm", "tyvm", "cheers", "ta",
    "many thanks", "much appreciated", "appreciated", "appreciate it", "i appreciate it",
    // acknowledgements
    "ok", "okay", "okey", "okie", "k", "kk", "alright", "all right", "got it", "gotcha",
    "understood", "noted", "roger", "roger that", "copy that", "cool", "great", "nice",
    "awesome", "perfect", "excellent", "wonderful", "fantastic", "brilliant", "sweet", "neat",
    "sounds good", "sounds great", "sounds perfect", "that works", "works for me",
    "makes sense", "that makes sense", "that helps", "that helped", "helpful", "very helpful",
    "good to know", "lol", "haha", "hehe", "wow", "will do",
    // replies to thanks
    "youre welcome", "you are welcome", "welcome", "no problem", "no worries", "np",
    "my pleasure", "glad to help", "happy to help", "glad i could help", "anytime",
    "any time",
    // farewells
    "bye", "goodbye", "good bye", "bye bye", "see you", "see ya", "see you later", "later",
    "take care", "have a nice day", "have a good day", "have a great day", "good night",
    // a few other languages
    "merci", "merci beaucoup", "danke", "danke schön", "vielen dank", "gracias",
    "muchas gracias", "grazie", "obrigado", "obrigada", "hola", "bonjour", "salut", "hallo",
    "ciao", "спасибо", "привет", "谢谢", "谢谢你", "多谢", "好的", "ありがとう",
    "ありがとうございます", "了解", "감사합니다", "고마워",
];

/// Words that may pad a low-signal message but do not make one on their own.
#[rustfmt::skip]
const FILLERS: &[&str] = &[
    "so", "very", "really", "much", "a lot", "again", "too", "and", "all", "everyone",
    "folks", "guys", "oh", "ah", "well", "for that", "for the help", "for your help",
    "for everything", "for this",
];

/// First words that make a message a question even without a question mark.
#[rustfmt::skip]
const QUESTION_WORDS: &[&str] = &[
    "who", "what", "when", "where", "why", "how", "which", "whose", "whom", "can", "could",
    "would", "should", "will", "shall", "is", "are", "am", "was", "were", "do", "does", "did",
    "may", "might", "must", "isnt", "arent", "dont", "doesnt", "didnt", "wont", "cant",
    "couldnt", "wouldnt", "shouldnt",
];

/// Longer messages are never low-signal (and are not scanned).
const LOW_SIGNAL_MAX_BYTES: usize = 120;

/// Whether a message's whole text is a greeting, thanks, acknowledgement or farewell, with no
/// other content: `"hi"`, `"Hello!"`, `"Thanks!"`, `"ok"`, `"got it."`, `"sounds good"`,
/// `"you're welcome"`, `"👍"`.
///
/// Case- and punctuation-insensitive, whole message only (`"Thanks! Now fix the bug"` is not
/// low-signal). Never a question: a message with a question mark, or that starts with a
/// question word (who, what, can, is, do, …), is not low-signal. Never an empty message: its
/// text may be empty because it carries only an image or a file, which [`Turn`] does not see.
/// `"yes"`, `"no"` and `"sure"` are not low-signal either: they answer questions.
///
/// ```
/// use budget_core::compress::is_low_signal;
///
/// for text in ["hi", "Hello!", "Thanks!", "ok", "got it.", "Sounds good", "you’re welcome", "👍", "OK, thanks a lot!!"] {
///     assert!(is_low_signal(text), "{text}");
/// }
/// for text in ["", "yes", "thanks?", "how are you", "Thanks! Now fix the bug", "ok 42"] {
///     assert!(!is_low_signal(text), "{text}");
/// }
/// ```
pub fn is_low_signal(text: &str) -> bool {
    if text.len() > LOW_SIGNAL_MAX_BYTES || text.contains(['?', '？', '¿', '؟']) {
        return false;
    }
    let words = normalised_words(text);
    let Some(first) = words.first() else {
        return is_ack_symbols(text);
    };
    if QUESTION_WORDS.contains(&first.as_str()) {
        return false;
    }
    let mut at = 0;
    let mut saw_phrase = false;
    while at < words.len() {
        let phrase = longest_match(&words[at..], PHRASES);
        let filler = longest_match(&words[at..], FILLERS);
        if phrase == 0 && filler == 0 {
            return false;
        }
        saw_phrase |= phrase > 0;
        at += phrase.max(filler);
    }
    saw_phrase
}

/// Lower-cased alphanumeric words; apostrophes are removed (`you're` → `youre`), anything else
/// separates words.
fn normalised_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    for c in text.chars() {
        if c.is_alphanumeric() {
            word.extend(c.to_lowercase());
        } else if matches!(c, '\'' | '’' | 'ʼ' | '`') {
            // dropped: "you're" and "youre" read the same
        } else if !word.is_empty() {
            words.push(std::mem::take(&mut word));
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// The number of words of the longest phrase of `phrases` that `words` starts with (0: none).
fn longest_match(words: &[String], phrases: &[&str]) -> usize {
    phrases
        .iter()
        .filter_map(|phrase| {
            let mut n = 0;
            for part in phrase.split(' ') {
                if words.get(n).is_none_or(|word| word != part) {
                    return None;
                }
                n += 1;
            }
            Some(n)
        })
        .max()
        .unwrap_or(0)
}

/// A message of acknowledgement emoji only (with punctuation and whitespace), at least one.
fn is_ack_symbols(text: &str) -> bool {
    let is_ack = |c: char| {
        matches!(
            c,
            '👍' | '👌'
                | '🙏'
                | '🙌'
                | '👏'
                | '👋'
                | '🤝'
                | '😊'
                | '🙂'
                | '☺'
                | '😀'
                | '😃'
                | '😄'
                | '😁'
                | '🥳'
                | '🎉'
                | '💯'
                | '✅'
                | '✔'
                | '❤'
                | '♥'
        )
    };
    let is_modifier = |c: char| {
        matches!(
            c,
            '\u{1F3FB}'..='\u{1F3FF}' | '\u{FE0F}' | '\u{FE0E}' | '\u{200D}'
        )
    };
    text.chars().any(is_ack)
        && text
            .chars()
            .all(|c| is_ack(c) || is_modifier(c) || c.is_whitespace() || c.is_ascii_punctuation())
}

/// Whether a turn may be dropped as low-signal (wherever it is).
fn is_droppable(turn: &Turn) -> bool {
    matches!(turn.role, Role::User | Role::Assistant)
        && !calls_tools(turn)
        && is_low_signal(&turn.text)
}

/// For each turn, whether [`drop_low_signal_turns`] drops it.
pub(super) fn low_signal_mask(turns: &[Turn], keep_last: usize) -> Vec<bool> {
    let tail = ToolGroups::new(turns).tail_start(turns.len(), keep_last);
    turns
        .iter()
        .enumerate()
        .map(|(i, turn)| i < tail && is_droppable(turn))
        .collect()
}

/// Drops the low-signal turns ([`is_low_signal`]) older than the last `keep_last` turns.
///
/// Only user and assistant turns are dropped: never instruction turns, never tool turns,
/// never an assistant turn that calls tools, never a question.
pub fn drop_low_signal_turns(turns: &[Turn], keep_last: usize) -> Vec<Turn> {
    let drop = low_signal_mask(turns, keep_last);
    turns
        .iter()
        .zip(drop)
        .filter(|&(_, drop)| !drop)
        .map(|(turn, _)| turn.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn compress_low_signal_phrases() {
        for text in [
            "hi",
            "Hello!",
            "hey there :)",
            "Thanks!",
            "thank you so much!!",
            "ok",
            "OK.",
            "got it.",
            "Sounds good",
            "you're welcome",
            "You’re welcome!",
            "👍",
            "👍🏽",
            "🙏 🙏",
            "ok, thanks",
            "Great, thanks a lot!",
            "Perfect, thank you for your help.",
            "谢谢",
            "Merci beaucoup !",
            "bye!",
            "have a nice day",
        ] {
            assert!(is_low_signal(text), "{text:?} should be low-signal");
        }
        for text in [
            "",
            "   ",
            "...",
            "yes",
            "no",
            "sure",
            "ok?",
            "thanks?",
            "Hi, what is the refund policy",
            "How are you",
            "can you help",
            "is it done",
            "thanks, but the build still fails",
            "ok 42",
            "so",
            "and",
            "😡",
            "hello world",
            "Thanks! Now please deploy to staging.",
        ] {
            assert!(!is_low_signal(text), "{text:?} should not be low-signal");
        }
        assert!(!is_low_signal(&"thanks ".repeat(100)));
    }

    #[test]
    fn compress_drops_greetings_keeps_questions_and_tail() {
        let turns = numbered(vec![
            Turn::new(Role::System, "hi"), // instructions: never dropped
            user("Hi!"),
            assistant("Hello! How can I help?"), // a question: kept
            user("What's our refund window?"),
            assistant("30 days."),
            user("Thanks!"),
            assistant("You're welcome!"),
            user("ok"), // in the last 2: kept
            assistant("👍"),
        ]);
        let out = drop_low_signal_turns(&turns, 2);
        let origins: Vec<_> = out.iter().filter_map(|t| t.origin).collect();
        assert_eq!(origins, [0, 2, 3, 4, 7, 8]);
        // Nothing is dropped when everything is in the kept tail.
        assert_eq!(drop_low_signal_turns(&turns, 100), turns);
    }

    #[test]
    fn compress_never_drops_tool_turns() {
        let turns = numbered(vec![
            user("look it up"),
            Turn {
                text: "ok".into(),
                ..tool_call(&["a"])
            },
            tool_result("a", "ok"),
            user("thanks"),
            assistant("done"),
        ]);
        let out = drop_low_signal_turns(&turns, 0);
        let origins: Vec<_> = out.iter().filter_map(|t| t.origin).collect();
        assert_eq!(origins, [0, 1, 2, 4]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn compress_prop_questions_never_low_signal(
            start in "(who|what|when|where|why|how|can|could|would|should|is|are|do|does)",
            rest in "( [ a-zA-Z!.,']{0,40})?",
            mid in "\\PC{0,20}",
        ) {
            let question = format!("{start}{rest}");
            prop_assert!(!is_low_signal(&question));
            let marked = format!("{question}?");
            let thanks_marked = format!("thanks {mid}?");
            let thanks_question = format!("Thanks! {question}");
            prop_assert!(!is_low_signal(&marked));
            prop_assert!(!is_low_signal(&thanks_marked));
            prop_assert!(!is_low_signal(&thanks_question));
        }
    }
}
