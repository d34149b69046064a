//! The HuJSON normalizer: comments and trailing commas go, strings stay as
//! they are, and positions do not move.

use wgbpf::import::hujson::normalize;

fn json(src: &str) -> serde_json::Value {
    let out = normalize(src).unwrap();
    assert_eq!(out.len(), src.len(), "same length");
    for (a, b) in out.lines().zip(src.lines()) {
        assert_eq!(a.len(), b.len(), "same line lengths: {a:?} / {b:?}");
    }
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn comments_inside_strings_are_data() {
    let v = json(r#"{"url": "https://example.com/a//b", "c": "/* not a comment */", "d": "x,]"}"#);
    assert_eq!(v["url"], "https://example.com/a//b");
    assert_eq!(v["c"], "/* not a comment */");
    assert_eq!(v["d"], "x,]");
}

#[test]
fn escaped_quotes_do_not_end_strings() {
    let v = json(r#"{"a": "say \"//hi\", ok", /* c */ "b": "\\", "e": "\\\"/*",}"#);
    assert_eq!(v["a"], "say \"//hi\", ok");
    assert_eq!(v["b"], "\\");
    assert_eq!(v["e"], "\\\"/*");
}

#[test]
fn trailing_commas_nested_and_with_comments_between() {
    let v = json(
        "{\n  \"a\": [1, [2, 3,], {\"x\": 1,},], // end\n  \"b\": {\"c\": [\n    \"d\", /* last */\n  ],\n  },\n}\n",
    );
    assert_eq!(v["a"], serde_json::json!([1, [2, 3], {"x": 1}]));
    assert_eq!(v["b"]["c"], serde_json::json!(["d"]));
}

#[test]
fn block_comments_keep_newlines_and_unicode_is_fine() {
    let src = "{/* é\n ünï\r\n */ \"k\": \"ü//\" // ✓ done\n}";
    let v = json(src);
    assert_eq!(v["k"], "ü//");
    let out = normalize(src).unwrap();
    assert_eq!(out.matches('\n').count(), 3);
}

#[test]
fn unterminated_comment_is_an_error_with_its_offset() {
    let e = normalize("{\"a\": 1 /* open").unwrap_err();
    assert_eq!(e.offset, 8);
    assert!(e.message.contains("unterminated"));
    // An unterminated string is left for the JSON parser to report.
    assert!(normalize("{\"a\": \"x // y").is_ok());
}

#[test]
fn plain_json_is_unchanged() {
    let src = r#"{"a": [1, 2], "b": {"c": "d"}}"#;
    assert_eq!(normalize(src).unwrap(), src);
}
