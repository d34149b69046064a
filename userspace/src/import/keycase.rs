//! Field names matched case-insensitively, as Go's encoding/json does for
//! Tailscale's policy files (`"Action"`, `"ACLs"`, `"tagowners"` are
//! `action`, `acls`, `tagOwners` there). Before serde reads the JSON, every
//! object key that a [`Shape`] knows is rewritten in place to its canonical
//! spelling: an ASCII case change keeps the length, so positions still
//! point into the original file. Keys of maps (group, host, tag names) are
//! data and are left alone, as are unknown keys: serde then refuses them
//! with their position. Malformed JSON is left for serde to report.

/// What a JSON value is expected to be, as far as field names go.
pub enum Shape {
    /// Anything; its keys are not field names (or not read at all).
    Any,
    /// An object with these fields.
    Object(&'static [(&'static str, Shape)]),
    /// An array of values of one shape.
    Array(&'static Shape),
}

/// Deeper than any policy file nests; past it nothing is rewritten.
const MAX_DEPTH: usize = 64;

/// Rewrites, in `json`, the keys `shape` knows to their canonical case.
pub fn canonicalize(json: String, shape: &Shape) -> String {
    let mut b = json.into_bytes();
    let mut i = 0;
    value(&mut b, &mut i, shape, 0);
    // Only ASCII letters were replaced by ASCII letters.
    String::from_utf8(b).expect("ASCII case changes keep UTF-8")
}

fn ws(b: &[u8], i: &mut usize) {
    while *i < b.len() && matches!(b[*i], b' ' | b'\t' | b'\n' | b'\r') {
        *i += 1;
    }
}

/// Past the string starting at `b[*i]` (a `"`); its contents' range.
fn string(b: &[u8], i: &mut usize) -> Option<(usize, usize)> {
    let start = *i + 1;
    let mut j = start;
    while j < b.len() {
        match b[j] {
            b'\\' => j += 2,
            b'"' => {
                *i = j + 1;
                return Some((start, j));
            }
            _ => j += 1,
        }
    }
    None
}

/// Walks one value; false when the JSON is malformed (then stop).
fn value(b: &mut [u8], i: &mut usize, shape: &Shape, depth: usize) -> bool {
    ws(b, i);
    if *i >= b.len() || depth > MAX_DEPTH {
        return false;
    }
    match b[*i] {
        b'{' => {
            *i += 1;
            loop {
                ws(b, i);
                match b.get(*i) {
                    Some(b'}') => {
                        *i += 1;
                        return true;
                    }
                    Some(b'"') => {}
                    _ => return false,
                }
                let Some((ks, ke)) = string(b, i) else {
                    return false;
                };
                let mut inner = &Shape::Any;
                if let Shape::Object(fields) = shape {
                    if let Some((canon, s)) = fields.iter().find(|(name, _)| {
                        name.len() == ke - ks && name.as_bytes().eq_ignore_ascii_case(&b[ks..ke])
                    }) {
                        b[ks..ke].copy_from_slice(canon.as_bytes());
                        inner = s;
                    }
                }
                ws(b, i);
                if b.get(*i) != Some(&b':') {
                    return false;
                }
                *i += 1;
                if !value(b, i, inner, depth + 1) {
                    return false;
                }
                ws(b, i);
                match b.get(*i) {
                    Some(b',') => *i += 1,
                    Some(b'}') => {}
                    _ => return false,
                }
            }
        }
        b'[' => {
            *i += 1;
            let inner = match shape {
                Shape::Array(s) => *s,
                _ => &Shape::Any,
            };
            loop {
                ws(b, i);
                if b.get(*i) == Some(&b']') {
                    *i += 1;
                    return true;
                }
                if !value(b, i, inner, depth + 1) {
                    return false;
                }
                ws(b, i);
                match b.get(*i) {
                    Some(b',') => *i += 1,
                    Some(b']') => {}
                    _ => return false,
                }
            }
        }
        b'"' => string(b, i).is_some(),
        _ => {
            // A number, true, false or null.
            let start = *i;
            while *i < b.len()
                && !matches!(b[*i], b',' | b']' | b'}' | b' ' | b'\t' | b'\n' | b'\r')
            {
                *i += 1;
            }
            *i > start
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ITEM: Shape = Shape::Object(&[("action", Shape::Any), ("src", Shape::Any)]);
    const TOP: Shape = Shape::Object(&[("acls", Shape::Array(&ITEM)), ("tagOwners", Shape::Any)]);

    #[test]
    fn known_keys_take_their_case_and_data_keeps_its_own() {
        let src = r#"{"ACLs": [{"Action": "Accept", "SRC": ["x"], "Other": 1}],
                      "tagowners": {"tag:Web": []}, "Unknown": {"Action": 2}}"#;
        let out = canonicalize(src.to_string(), &TOP);
        assert_eq!(out.len(), src.len());
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["acls"][0]["action"], "Accept", "values keep their case");
        assert_eq!(v["acls"][0]["src"][0], "x");
        assert_eq!(v["acls"][0]["Other"], 1, "unknown keys are left for serde");
        assert!(v["tagOwners"]["tag:Web"].is_array(), "map keys are data");
        assert_eq!(
            v["Unknown"]["Action"], 2,
            "below an unknown key: not fields"
        );
    }

    #[test]
    fn malformed_input_keeps_its_length_and_is_left_to_serde() {
        for s in [
            "{\"ACLs\": [",
            "{\"ACLs\"",
            "[1, {\"a\": }]",
            "\"\\",
            "{",
            "",
            "{\"x\"::}",
        ] {
            let out = canonicalize(s.to_string(), &TOP);
            assert_eq!(out.len(), s.len());
            assert_eq!(out.to_ascii_lowercase(), s.to_ascii_lowercase());
        }
    }
}
