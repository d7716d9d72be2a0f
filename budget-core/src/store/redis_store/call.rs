//! The one Lua script and the calls it runs: which operation, its keys and arguments.

use std::sync::LazyLock;

use redis::aio::ConnectionManager;
use redis::{RedisError, Script, Value};

use super::wire::{clamp_tokens, money_arg};
use crate::limits::Cap;

/// Which operation a call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::store) enum Which {
    Reserve,
    Settle,
    Release,
    Usage,
    Forget,
    Grant,
    ReleaseLost,
}

impl Which {
    /// Whether an attempt that could not reach Redis is retried in the background: settles
    /// and releases (their caller does not wait, and each applies once however often sent).
    pub(super) fn retried(self) -> bool {
        matches!(self, Which::Settle | Which::Release | Which::ReleaseLost)
    }

    /// The operation's code in the batch script.
    fn code(self) -> &'static str {
        match self {
            Which::Reserve => "r",
            Which::Settle => "s",
            Which::Release => "l",
            Which::Usage => "u",
            Which::Forget => "f",
            Which::Grant => "g",
            Which::ReleaseLost => "x",
        }
    }
}

/// The one script: the shared prelude, each operation as a function, and the batch loop.
static BATCH: LazyLock<Script> = LazyLock::new(|| {
    let op =
        |name: &str, body: &str| format!("local function op_{name}(KEYS, ARGV)\n{body}\nend\n");
    Script::new(
        &[
            include_str!("prelude.lua").to_owned(),
            op("reserve", include_str!("reserve.lua")),
            op("settle", include_str!("settle.lua")),
            op("release", include_str!("release.lua")),
            op("usage", include_str!("usage.lua")),
            op("forget", include_str!("forget.lua")),
            op("grant", include_str!("grant.lua")),
            op("release_lost", include_str!("release_lost.lua")),
            include_str!("batch.lua").to_owned(),
        ]
        .concat(),
    )
});

/// One script call running `calls` in order.
pub(super) async fn run_batch(
    conn: &mut ConnectionManager,
    calls: &[&Call],
) -> Result<Vec<Value>, RedisError> {
    let mut invocation = BATCH.prepare_invoke();
    invocation.arg(calls.len());
    for call in calls {
        invocation
            .arg(call.script.code())
            .arg(call.keys.len())
            .arg(call.args.len());
        for key in &call.keys {
            invocation.key(key);
        }
        for arg in &call.args {
            invocation.arg(arg);
        }
    }
    match invocation.invoke_async(conn).await? {
        Value::Array(values) => Ok(values),
        other => Err(RedisError::from((
            redis::ErrorKind::Parse,
            "the batch script answered with no list",
            format!("{other:?}"),
        ))),
    }
}

/// A script call with owned keys and arguments, so that it can be run again.
#[derive(Debug)]
pub(in crate::store) struct Call {
    pub(super) script: Which,
    pub(super) keys: Vec<String>,
    pub(super) args: Vec<String>,
}

impl Call {
    pub(in crate::store) fn new(script: Which) -> Call {
        Call {
            script,
            keys: Vec::with_capacity(8),
            args: Vec::with_capacity(24),
        }
    }

    pub(in crate::store) fn key(&mut self, key: String) -> &mut Call {
        self.keys.push(key);
        self
    }

    pub(in crate::store) fn arg(&mut self, arg: impl ToString) -> &mut Call {
        self.args.push(arg.to_string());
        self
    }

    /// A cap as the scripts take it: tokens, then money; `''` for an uncapped side.
    pub(in crate::store) fn cap(&mut self, cap: &Cap) -> &mut Call {
        self.arg(
            cap.tokens
                .map(clamp_tokens)
                .map(|t| t.to_string())
                .unwrap_or_default(),
        )
        .arg(cap.money.map(money_arg).unwrap_or_default())
    }

    /// Runs this call alone (the settle retries, which must not wait behind a batch).
    pub(super) async fn run(&self, conn: &mut ConnectionManager) -> Result<Value, RedisError> {
        run_batch(conn, &[self]).await?.pop().ok_or_else(|| {
            RedisError::from((redis::ErrorKind::Parse, "the batch script answered nothing"))
        })
    }
}
