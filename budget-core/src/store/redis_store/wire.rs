//! Numbers on their way to and from the scripts.
//!
//! Lua in Redis has only doubles: token counts go as integers below 2^53 and money as decimal
//! text of yocto-dollars, which the scripts compute on exactly.

use redis::Value;

use crate::Money;
use crate::admission::Amount;
use crate::store::CounterUsage;

/// The largest integer a double holds exactly.
pub(super) const MAX_EXACT: u64 = (1 << 53) - 1;

/// A token count as the scripts take it: clamped to [`MAX_EXACT`]. A cap is clamped down (it
/// only gets stricter) and no real request comes near it.
pub(in crate::store) fn clamp_tokens(tokens: u64) -> u64 {
    tokens.min(MAX_EXACT)
}

/// Money as the scripts take it: whole yocto-dollars, never negative.
pub(in crate::store) fn money_arg(money: Money) -> String {
    money.units().max(0).to_string()
}

/// A script's reply, read front to back.
#[derive(Debug)]
pub(in crate::store) struct Reply {
    values: std::vec::IntoIter<Value>,
}

impl Reply {
    pub(super) fn new(value: Value) -> Reply {
        let values = match value {
            Value::Array(values) => values,
            other => vec![other],
        };
        Reply {
            values: values.into_iter(),
        }
    }

    fn next(&mut self) -> Result<Value, String> {
        self.values
            .next()
            .ok_or_else(|| "the reply ended early".to_owned())
    }

    pub(in crate::store) fn int(&mut self) -> Result<i64, String> {
        match self.next()? {
            Value::Int(n) => Ok(n),
            Value::BulkString(text) => std::str::from_utf8(&text)
                .ok()
                .and_then(|t| t.parse().ok())
                .ok_or_else(|| format!("not an integer: {:?}", String::from_utf8_lossy(&text))),
            other => Err(format!("expected an integer, got {other:?}")),
        }
    }

    pub(in crate::store) fn u64(&mut self) -> Result<u64, String> {
        let n = self.int()?;
        u64::try_from(n).map_err(|_| format!("expected a count, got {n}"))
    }

    pub(in crate::store) fn money(&mut self) -> Result<Money, String> {
        match self.next()? {
            Value::BulkString(text) => std::str::from_utf8(&text)
                .ok()
                .and_then(|t| t.parse::<i128>().ok())
                .map(Money::from_units)
                .ok_or_else(|| format!("not an amount: {:?}", String::from_utf8_lossy(&text))),
            Value::Int(n) => Ok(Money::from_units(i128::from(n))),
            other => Err(format!("expected an amount, got {other:?}")),
        }
    }

    /// Seven values: committed, admitted and reserved (tokens, money each), in flight.
    pub(in crate::store) fn usage(&mut self) -> Result<CounterUsage, String> {
        let committed = Amount::new(self.u64()?, self.money()?);
        let admitted = Amount::new(self.u64()?, self.money()?);
        let reserved = Amount::new(self.u64()?, self.money()?);
        let in_flight = u32::try_from(self.u64()?).unwrap_or(u32::MAX);
        Ok(CounterUsage {
            committed,
            admitted,
            reserved,
            in_flight,
        })
    }
}
