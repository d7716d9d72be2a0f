//! A provider-neutral view of a chat conversation, for the optimisations that rewrite one
//! (context compression) and the ones that read one (routing, caching).
//!
//! A request adapter turns its messages into [`Turn`]s, an optimisation returns a new list of
//! turns, and the adapter rebuilds its messages from it: a turn whose [`Turn::origin`] names
//! an original message keeps that message (its text replaced if the turn's text changed); a
//! turn without an origin is new (a summary).

/// Who said a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Instructions (`system`).
    System,
    /// Instructions for o-series models (`developer`).
    Developer,
    /// The user.
    User,
    /// The model.
    Assistant,
    /// A tool's result.
    Tool,
}

impl Role {
    /// The chat-format name: `system`, `developer`, `user`, `assistant`, `tool`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::Developer => "developer",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }

    /// Whether the turn carries instructions (system or developer).
    pub fn is_instruction(self) -> bool {
        matches!(self, Role::System | Role::Developer)
    }
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    /// Who said it.
    pub role: Role,
    /// Its text (text parts joined).
    pub text: String,
    /// The participant name, if any.
    pub name: Option<String>,
    /// For an assistant turn that calls tools: the ids of the calls.
    pub tool_call_ids: Vec<String>,
    /// For an assistant turn that calls tools: the JSON text of the calls (counted as tokens).
    pub tool_calls_json: Option<String>,
    /// For a tool turn: the id of the call it answers.
    pub tool_call_id: Option<String>,
    /// The index of the original message this turn stands for; `None` for a new turn.
    pub origin: Option<usize>,
}

impl Turn {
    /// A plain turn that is not tied to an original message.
    pub fn new(role: Role, text: impl Into<String>) -> Turn {
        Turn {
            role,
            text: text.into(),
            name: None,
            tool_call_ids: Vec::new(),
            tool_calls_json: None,
            tool_call_id: None,
            origin: None,
        }
    }

    /// The same turn, standing for original message `index`.
    pub fn from_message(mut self, index: usize) -> Turn {
        self.origin = Some(index);
        self
    }

    /// The borrowed form the token counter reads.
    pub fn as_chat_message(&self) -> crate::ChatMessage<'_> {
        crate::ChatMessage {
            role: self.role.as_str(),
            content: &self.text,
            name: self.name.as_deref(),
            tool_calls: self.tool_calls_json.as_deref(),
            tool_call_id: self.tool_call_id.as_deref(),
        }
    }
}

/// Exact (or labelled) prompt tokens of `turns` for `model`, chat-format overhead included.
pub fn count_turns(model: &str, turns: &[Turn]) -> crate::TokenCount {
    let messages: Vec<_> = turns.iter().map(Turn::as_chat_message).collect();
    crate::count_chat(model, &messages, None)
}

/// How hard a request is, for routing it to a model tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Difficulty {
    /// A cheap model will do (classification, extraction, short answers).
    Easy,
    /// A mid-tier model.
    Medium,
    /// The strongest model (reasoning, long code, planning).
    Hard,
}
