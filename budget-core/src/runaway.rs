//! Runaway detection: an agent stuck in a loop, found from what it sends and spends.
//!
//! Three signals, each configurable ([`RunawayConfig`]) and on by default:
//!
//! - **Repetition**: the newest input of a step is near-identical to the previous steps'
//!   (64-bit SimHash of word shingles within a few bits) for `repeat_limit` consecutive steps —
//!   the agent asks the same thing again and makes no progress.
//! - **Spike**: one step uses `spike_factor` times the task's running average per step (after
//!   a few steps, above a floor) — a reasoning step that exploded.
//! - **Retry loop**: the tokens spent under one task id, across every run of it (retries),
//!   exceed `retry_factor` times the task's limit — the users' rule
//!   `agent_tokens_per_task > task_limit * 3`.
//!
//! Detection feeds cancellation: the task scope cancels itself and reports which signal fired.

use std::collections::HashMap;
use std::fmt;
use std::sync::LazyLock;

use parking_lot::Mutex;

use crate::attribution::TaskId;

/// Which runaway signal fired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunawayKind {
    /// Near-identical inputs across consecutive steps.
    Repetition {
        /// How many consecutive steps asked the same (the last of them was refused before it
        /// was sent).
        repeats: u32,
    },
    /// A step far above the task's running average.
    Spike {
        /// The step.
        step: u32,
        /// Its tokens.
        tokens: u64,
        /// The average tokens per earlier step.
        average: u64,
    },
    /// The task id spent far beyond its limit across its runs.
    RetryLoop {
        /// Tokens spent under this task id so far, every run together.
        tokens: u64,
        /// The task's token limit.
        limit: u64,
    },
}

impl fmt::Display for RunawayKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunawayKind::Repetition { repeats } => {
                // Detection sees a step's request before it is sent: the last of the
                // repeats is refused, so a task stopped here completed one step fewer.
                write!(
                    f,
                    "the same request in {repeats} consecutive steps (the last one was not sent)"
                )
            }
            RunawayKind::Spike {
                step,
                tokens,
                average,
            } => write!(
                f,
                "step {step} used {tokens} tokens against an average of {average} per step"
            ),
            RunawayKind::RetryLoop { tokens, limit } => write!(
                f,
                "{tokens} tokens spent under one task id across its runs, over its limit of {limit} per run"
            ),
        }
    }
}

/// Runaway detection settings. `Default` turns every signal on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunawayConfig {
    /// Master switch.
    pub enabled: bool,
    /// Consecutive near-identical step inputs that count as a loop (0 disables).
    pub repeat_limit: u32,
    /// How many of 64 SimHash bits may differ for two inputs to be near-identical.
    pub similarity_bits: u32,
    /// A step above this multiple of the running average is a spike (0 disables).
    pub spike_factor: u64,
    /// Steps to average before spikes are judged.
    pub spike_after_steps: u32,
    /// Steps below this many tokens are never spikes.
    pub spike_min_tokens: u64,
    /// Tokens under one task id across runs above this multiple of its limit is a retry loop
    /// (0 disables).
    pub retry_factor: u64,
}

impl Default for RunawayConfig {
    fn default() -> RunawayConfig {
        RunawayConfig {
            enabled: true,
            repeat_limit: 3,
            similarity_bits: 3,
            spike_factor: 5,
            spike_after_steps: 3,
            spike_min_tokens: 2_000,
            retry_factor: 3,
        }
    }
}

impl RunawayConfig {
    /// Every signal off.
    pub fn disabled() -> RunawayConfig {
        RunawayConfig {
            enabled: false,
            ..RunawayConfig::default()
        }
    }
}

/// 64-bit SimHash of `text`'s lower-cased word 3-shingles (single words for short texts):
/// near-identical texts differ in few bits.
pub fn simhash(text: &str) -> u64 {
    let words: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    let mut weights = [0i64; 64];
    let mut add = |feature: &[String]| {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325; // FNV-1a
        for w in feature {
            for b in w.bytes().chain([0x1f]) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        }
        for (bit, weight) in weights.iter_mut().enumerate() {
            *weight += if h >> bit & 1 == 1 { 1 } else { -1 };
        }
    };
    if words.len() < 3 {
        words.iter().for_each(|w| add(std::slice::from_ref(w)));
    } else {
        words.windows(3).for_each(&mut add);
    }
    weights.iter().enumerate().fold(
        0u64,
        |acc, (bit, &w)| if w > 0 { acc | 1 << bit } else { acc },
    )
}

/// The per-task detector state.
#[derive(Debug, Default)]
pub(crate) struct Detector {
    last: Option<(u32, u64)>,
    repeats: u32,
    finished_steps: u64,
    finished_tokens: u64,
    step: u32,
    step_tokens: u64,
}

impl Detector {
    /// The input of a call in `step`.
    pub(crate) fn observe_input(
        &mut self,
        config: &RunawayConfig,
        step: u32,
        text: &str,
    ) -> Option<RunawayKind> {
        if !config.enabled || config.repeat_limit == 0 || text.trim().is_empty() {
            return None;
        }
        let hash = simhash(text);
        match self.last {
            // Only consecutive steps count; calls within one step may legitimately repeat.
            Some((last_step, last_hash)) if last_step + 1 == step => {
                if (last_hash ^ hash).count_ones() <= config.similarity_bits {
                    self.repeats += 1;
                } else {
                    self.repeats = 0;
                }
            }
            Some((last_step, _)) if last_step == step => return None,
            _ => self.repeats = 0,
        }
        self.last = Some((step, hash));
        // `repeats` counts repetitions of the first input: n repeats = n + 1 identical steps.
        (self.repeats + 1 >= config.repeat_limit && self.repeats > 0).then_some(
            RunawayKind::Repetition {
                repeats: self.repeats + 1,
            },
        )
    }

    /// Tokens committed in `step`.
    pub(crate) fn observe_usage(
        &mut self,
        config: &RunawayConfig,
        step: u32,
        tokens: u64,
    ) -> Option<RunawayKind> {
        if step != self.step {
            if self.step != 0 {
                self.finished_steps += 1;
                self.finished_tokens = self.finished_tokens.saturating_add(self.step_tokens);
            }
            self.step = step;
            self.step_tokens = 0;
        }
        self.step_tokens = self.step_tokens.saturating_add(tokens);
        if !config.enabled
            || config.spike_factor == 0
            || self.finished_steps < u64::from(config.spike_after_steps.max(1))
            || self.step_tokens < config.spike_min_tokens
        {
            return None;
        }
        let average = self.finished_tokens / self.finished_steps;
        (self.step_tokens > average.saturating_mul(config.spike_factor)).then_some(
            RunawayKind::Spike {
                step,
                tokens: self.step_tokens,
                average,
            },
        )
    }
}

/// Tokens spent per task id across all of its runs in this process (bounded: forgotten
/// wholesale beyond 100,000 task ids).
static TASK_HISTORY: LazyLock<Mutex<HashMap<TaskId, u64>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Adds `tokens` to the task id's history; a retry loop when the total passes the limit.
pub(crate) fn observe_task_total(
    config: &RunawayConfig,
    task: &TaskId,
    tokens: u64,
    limit: Option<u64>,
) -> Option<RunawayKind> {
    let limit = limit?;
    if !config.enabled || config.retry_factor == 0 || tokens == 0 {
        return None;
    }
    let mut history = TASK_HISTORY.lock();
    if history.len() >= 100_000 && !history.contains_key(task) {
        history.clear();
    }
    let total = history.entry(task.clone()).or_insert(0);
    *total = total.saturating_add(tokens);
    (*total > limit.saturating_mul(config.retry_factor)).then_some(RunawayKind::RetryLoop {
        tokens: *total,
        limit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simhash_tells_near_identical_from_different() {
        let a = simhash("Search the web for the latest GPU prices and summarise them for me");
        let b = simhash("Search the web for the latest GPU prices and summarise them for me.");
        let c = simhash("Write a haiku about the sea in winter, with a kigo for the season");
        assert_eq!(
            (a ^ b).count_ones(),
            0,
            "punctuation and case do not matter"
        );
        assert!((a ^ c).count_ones() > 10, "{}", (a ^ c).count_ones());
    }

    #[test]
    fn repetition_fires_after_consecutive_steps() {
        let cfg = RunawayConfig::default();
        let mut d = Detector::default();
        let q = "Find the answer to the question about budget limits";
        assert_eq!(d.observe_input(&cfg, 1, q), None);
        assert_eq!(d.observe_input(&cfg, 1, q), None, "same step: not a repeat");
        assert_eq!(d.observe_input(&cfg, 2, q), None);
        assert_eq!(
            d.observe_input(&cfg, 3, q),
            Some(RunawayKind::Repetition { repeats: 3 })
        );
        let mut progress = Detector::default();
        for step in 1..10 {
            let text = format!("step {step}: now look at topic number {}", step * 7919);
            assert_eq!(progress.observe_input(&cfg, step, &text), None);
        }
    }

    #[test]
    fn spikes_are_judged_against_the_running_average() {
        let cfg = RunawayConfig::default();
        let mut d = Detector::default();
        for step in 1..=3 {
            assert_eq!(d.observe_usage(&cfg, step, 1_000), None);
        }
        assert_eq!(d.observe_usage(&cfg, 4, 4_000), None);
        assert_eq!(
            d.observe_usage(&cfg, 5, 9_000),
            Some(RunawayKind::Spike {
                step: 5,
                tokens: 9_000,
                average: 1_750
            })
        );
        assert_eq!(
            Detector::default().observe_usage(&RunawayConfig::disabled(), 9, u64::MAX),
            None
        );
    }

    #[test]
    fn retry_loops_add_up_across_runs() {
        let cfg = RunawayConfig::default();
        let task = TaskId::generate();
        assert_eq!(observe_task_total(&cfg, &task, 1_000, Some(1_000)), None);
        assert_eq!(observe_task_total(&cfg, &task, 2_000, Some(1_000)), None);
        assert_eq!(
            observe_task_total(&cfg, &task, 1, Some(1_000)),
            Some(RunawayKind::RetryLoop {
                tokens: 3_001,
                limit: 1_000
            })
        );
        assert_eq!(observe_task_total(&cfg, &TaskId::generate(), 1, None), None);
    }
}
