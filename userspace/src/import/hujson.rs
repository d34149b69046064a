//! HuJSON ("human JSON", the format of Tailscale's policy files) to JSON:
//! `//` and `/* */` comments and trailing commas, nothing else.
//!
//! The output has exactly the bytes of the input, with every comment byte
//! and every trailing comma turned into a space (newlines inside block
//! comments are kept). So a byte offset, a line and a column in the JSON
//! are the same in the HuJSON file, and serde_json's error positions can be
//! reported against the original text. Strings are copied untouched: a `//`
//! or a `,` inside a string is data.

/// Where and why the input is not HuJSON (byte offset into the input).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HujsonError {
    pub offset: usize,
    pub message: String,
}

/// Turns HuJSON into JSON of the same length and layout.
pub fn normalize(text: &str) -> Result<String, HujsonError> {
    let without_comments = strip_comments(text.as_bytes())?;
    let out = strip_trailing_commas(without_comments);
    // Only ASCII bytes were replaced by ASCII spaces, and whole comments
    // (never part of a multi-byte character) were blanked byte by byte.
    String::from_utf8(out).map_err(|e| HujsonError {
        offset: e.utf8_error().valid_up_to(),
        message: "invalid UTF-8".into(),
    })
}

fn strip_comments(b: &[u8]) -> Result<Vec<u8>, HujsonError> {
    let mut out = b.to_vec();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => i = skip_string(b, i),
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    out[i] = b' ';
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let start = i;
                out[i] = b' ';
                out[i + 1] = b' ';
                i += 2;
                loop {
                    if i + 1 >= b.len() {
                        return Err(HujsonError {
                            offset: start,
                            message: "unterminated /* comment".into(),
                        });
                    }
                    if b[i] == b'*' && b[i + 1] == b'/' {
                        out[i] = b' ';
                        out[i + 1] = b' ';
                        i += 2;
                        break;
                    }
                    if b[i] != b'\n' && b[i] != b'\r' {
                        out[i] = b' ';
                    }
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    Ok(out)
}

/// The index just past the string starting at `start` (a `"`), or the end
/// of the input for an unterminated string (serde_json reports it).
fn skip_string(b: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    b.len()
}

/// Blanks every `,` whose next significant byte is `]` or `}` (comments are
/// already spaces here).
fn strip_trailing_commas(mut b: Vec<u8>) -> Vec<u8> {
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => i = skip_string(&b, i),
            b',' => {
                let next = b[i + 1..]
                    .iter()
                    .find(|c| !matches!(c, b' ' | b'\t' | b'\n' | b'\r'));
                if matches!(next, Some(b']') | Some(b'}')) {
                    b[i] = b' ';
                }
                i += 1;
            }
            _ => i += 1,
        }
    }
    b
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn comments_and_trailing_commas_keep_the_layout() {
        let src = "{ // c\n \"a\": [1, 2,], /* x\n y */ \"b\": \"//,\",\n}";
        let out = normalize(src).unwrap();
        assert_eq!(out.len(), src.len());
        assert_eq!(out.matches('\n').count(), src.matches('\n').count());
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["b"], "//,");
        assert_eq!(v["a"], serde_json::json!([1, 2]));
    }
}
