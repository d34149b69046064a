//! `wgbpf run`'s logs for journald: each line carries its syslog priority
//! (`<3>` for errors), chosen by `--log-format journal` or, with `auto`,
//! when systemd connected the output to the journal (`JOURNAL_STREAM`).

mod common;

use std::process::Command;

fn run(args: &[&str], journal_stream: bool) -> (i32, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wgbpf"));
    c.args([
        "run",
        "-c",
        "/nonexistent/wgbpf-log-test.toml",
        "--no-metrics",
    ])
    .args(args)
    .env_remove("JOURNAL_STREAM");
    if journal_stream {
        c.env("JOURNAL_STREAM", "8:12345");
    }
    let (code, _, err) = common::code_out_err(&c.output().unwrap());
    (code, err)
}

#[test]
fn errors_reach_the_journal_as_errors() {
    for (args, stream) in [(&["--log-format", "journal"][..], false), (&[][..], true)] {
        let (code, err) = run(args, stream);
        assert_eq!(code, 1);
        let line = err
            .lines()
            .find(|l| l.contains("wgbpf run failed"))
            .unwrap_or_else(|| panic!("no log line: {err}"));
        assert!(line.starts_with("<3>"), "{line}");
        assert!(line.contains("wgbpf-log-test.toml"), "{line}");
    }
    // Elsewhere (not a terminal, no journal): JSON lines, no prefix.
    let (_, err) = run(&[], false);
    let line = err
        .lines()
        .find(|l| l.contains("wgbpf run failed"))
        .unwrap();
    assert!(
        line.starts_with('{') && line.contains("\"level\":\"ERROR\""),
        "{line}"
    );
}
