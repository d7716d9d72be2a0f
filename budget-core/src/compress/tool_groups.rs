//! Tool-call groups: an assistant turn that calls tools and the tool turns answering it are
//! kept or removed together.

use std::collections::HashMap;
use std::ops::Range;

use crate::conversation::{Role, Turn};

/// Whether a turn is an assistant turn that calls tools.
pub(super) fn calls_tools(turn: &Turn) -> bool {
    turn.role == Role::Assistant
        && (!turn.tool_call_ids.is_empty() || turn.tool_calls_json.is_some())
}

/// The tool-call groups of a conversation: an assistant turn that calls tools, and the tool
/// turns (after it) that answer one of its call ids.
pub(super) struct ToolGroups {
    /// Each group's members, in order; the first is the assistant turn.
    groups: Vec<Vec<usize>>,
    /// For each turn, its group.
    member_of: Vec<Option<usize>>,
}

impl ToolGroups {
    pub(super) fn new(turns: &[Turn]) -> ToolGroups {
        let mut groups: Vec<Vec<usize>> = Vec::new();
        let mut member_of = vec![None; turns.len()];
        let mut by_call_id: HashMap<&str, usize> = HashMap::new();
        for (i, turn) in turns.iter().enumerate() {
            if calls_tools(turn) {
                let group = groups.len();
                groups.push(vec![i]);
                member_of[i] = Some(group);
                for id in &turn.tool_call_ids {
                    by_call_id.insert(id.as_str(), group);
                }
            } else if turn.role == Role::Tool {
                if let Some(&group) = turn
                    .tool_call_id
                    .as_deref()
                    .and_then(|id| by_call_id.get(id))
                {
                    groups[group].push(i);
                    member_of[i] = Some(group);
                }
            }
        }
        ToolGroups { groups, member_of }
    }

    /// Each group's first and last member.
    fn extents(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.groups
            .iter()
            .filter_map(|members| Some((*members.first()?, *members.last()?)))
    }

    /// Where the kept tail starts: `n - keep_last`, moved back to the start of any group it
    /// would split.
    pub(super) fn tail_start(&self, n: usize, keep_last: usize) -> usize {
        let mut start = n.saturating_sub(keep_last);
        loop {
            let before = start;
            for (first, last) in self.extents() {
                if first < start && last >= start {
                    start = first;
                }
            }
            if start == before {
                return start;
            }
        }
    }

    /// `range` shrunk until no group's extent is partly inside it.
    pub(super) fn shrink_to_whole(&self, mut range: Range<usize>) -> Range<usize> {
        loop {
            let before = range.clone();
            for (first, last) in self.extents() {
                let overlaps = first < range.end && last >= range.start;
                let inside = first >= range.start && last < range.end;
                if overlaps && !inside {
                    if first < range.start {
                        range.start = last + 1;
                    } else {
                        range.end = first;
                    }
                }
                if range.start >= range.end {
                    return range.start..range.start;
                }
            }
            if range == before {
                return range;
            }
        }
    }

    /// The turns removed with turn `i`: its whole group, or itself.
    pub(super) fn unit(&self, i: usize) -> Vec<usize> {
        match self.member_of.get(i).copied().flatten() {
            Some(group) => self.groups[group].clone(),
            None => vec![i],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use crate::compress::{CompressConfig, compress, summarisable_span};

    #[test]
    fn compress_tool_groups_stay_whole() {
        let turns = numbered(vec![
            Turn::new(Role::System, "sys"),
            user("find the invoices"),
            tool_call(&["c1", "c2"]),
            tool_result("c1", &"invoice ".repeat(300)),
            tool_result("c2", &"invoice ".repeat(300)),
            assistant("Found 2."),
            user("and now?"),
        ]);
        // keep_last = 2 -> tail starts at 5; keep_last = 3 would split the group: the tail
        // grows back to the tool call.
        let groups = ToolGroups::new(&turns);
        assert_eq!(groups.tail_start(turns.len(), 2), 5);
        assert_eq!(groups.tail_start(turns.len(), 3), 2);
        assert_eq!(summarisable_span(&turns, 2), Some(1..5));
        assert_eq!(summarisable_span(&turns, 3), None); // only turn 1 is left
        // A span that would cut the group shrinks: with a system turn in the middle.
        let mut split = turns.clone();
        split.insert(4, Turn::new(Role::System, "mid"));
        assert_eq!(summarisable_span(&split, 2), None);
        // Eviction removes the call with both results, oldest first.
        let turns = numbered(vec![
            Turn::new(Role::System, "sys"),
            tool_call(&["c1", "c2"]),
            tool_result("c1", &"invoice ".repeat(300)),
            tool_result("c2", &"invoice ".repeat(300)),
            user("short"),
            assistant("Found 2."),
            user("and now?"),
        ]);
        let target = tokens(&[
            turns[0].clone(),
            turns[4].clone(),
            turns[5].clone(),
            turns[6].clone(),
        ]);
        let out = compress(
            MODEL,
            &turns,
            target,
            &CompressConfig {
                keep_last: 2,
                ..CompressConfig::default()
            },
        )
        .unwrap();
        let origins: Vec<_> = out.turns.iter().filter_map(|t| t.origin).collect();
        assert_eq!(origins, [0, 4, 5, 6]);
        assert_eq!(out.evicted, 3);
        assert_eq!(out.tokens_after, target);
    }
}
