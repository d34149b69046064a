//! JSON values with their position: serde_json keeps no spans, but a
//! borrowed [`RawValue`] is a slice of the input, so its address gives the
//! offset. Only works when deserializing with `serde_json::from_str` from the
//! text the offsets are taken against.

use serde::{de::Error as _, Deserialize, Deserializer};
use serde_json::value::RawValue;

/// A value and the address of its first byte in the input.
#[derive(Debug, Clone)]
pub struct Located<T> {
    pub value: T,
    addr: usize,
}

impl<T> Located<T> {
    /// The value's byte offset in `text` (the string it was parsed from).
    pub fn offset(&self, text: &str) -> usize {
        self.addr
            .checked_sub(text.as_ptr() as usize)
            .filter(|o| *o <= text.len())
            .unwrap_or(0)
    }

    pub fn get(&self) -> &T {
        &self.value
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Located<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw: &'de RawValue = Deserialize::deserialize(d)?;
        let s: &'de str = raw.get();
        let value = serde_json::from_str::<T>(s).map_err(|e| {
            // The inner position is relative to the value: drop it, the
            // outer deserializer adds its own.
            let msg = e.to_string();
            let msg = msg
                .rsplit_once(" at line ")
                .map_or(msg.as_str(), |(m, _)| m)
                .to_string();
            D::Error::custom(format!("{msg} (found {})", truncate(s)))
        })?;
        Ok(Located {
            value,
            addr: s.as_ptr() as usize,
        })
    }
}

fn truncate(s: &str) -> String {
    let mut out: String = s.chars().take(40).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}
