//! The daemon's logs: `tracing` to stderr, human-readable on a terminal,
//! with syslog priorities for journald (`<3>` error, `<4>` warning, `<6>`
//! info, `<7>` debug: `journalctl -p err` finds the errors) when systemd
//! connected stderr to the journal, JSON lines otherwise (files, log
//! shippers), or as asked. `WGBPF_LOG` (or `RUST_LOG`) takes an
//! `EnvFilter` directive; default `info`.

use std::{fmt, io::IsTerminal};

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::{
    fmt::{format::Writer, FmtContext, FormatEvent, FormatFields},
    registry::LookupSpan,
    EnvFilter,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Journal lines under systemd (`JOURNAL_STREAM` set), text on a
    /// terminal, JSON lines otherwise.
    #[default]
    Auto,
    Text,
    Json,
    /// Text with a syslog priority prefix per line and no timestamp (the
    /// journal adds its own).
    Journal,
}

impl LogFormat {
    /// The format `Auto` stands for here.
    pub fn resolved(self) -> LogFormat {
        match self {
            LogFormat::Auto if std::env::var_os("JOURNAL_STREAM").is_some() => LogFormat::Journal,
            LogFormat::Auto if std::io::stderr().is_terminal() => LogFormat::Text,
            LogFormat::Auto => LogFormat::Json,
            other => other,
        }
    }

    pub fn json(self) -> bool {
        self.resolved() == LogFormat::Json
    }
}

/// Prefixes each line with its syslog priority, as sd-daemon(3) describes.
struct Prioritised<F>(F);

impl<S, N, F> FormatEvent<S, N> for Prioritised<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let priority = match *event.metadata().level() {
            Level::ERROR => 3,
            Level::WARN => 4,
            Level::INFO => 6,
            _ => 7,
        };
        write!(writer, "<{priority}>")?;
        self.0.format_event(ctx, writer, event)
    }
}

/// Installs the global subscriber. Fails if one is already installed.
pub fn init(format: LogFormat) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_env("WGBPF_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format.resolved() {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
        LogFormat::Journal => builder
            .with_ansi(false)
            .event_format(Prioritised(
                tracing_subscriber::fmt::format()
                    .without_time()
                    .with_ansi(false),
            ))
            .try_init(),
        _ => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("installing the log subscriber: {e}"))
}
