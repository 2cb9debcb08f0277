//! Log setup: text or JSON lines on stderr. `--log-level` applies to tokend itself; libraries log
//! warnings only (rustls nothing) unless `RUST_LOG` says otherwise. When stderr is the journal (systemd says so in
//! `JOURNAL_STREAM`), every line starts with its syslog priority (`<3>` … `<7>`), so `journalctl
//! -p warning` finds tokend's warnings, and carries no timestamp of its own: journald adds one.

use std::fmt;
use std::io::IsTerminal;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, format};
use tracing_subscriber::registry::LookupSpan;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

pub fn init(log_format: LogFormat, level: Level) {
    // rustls logs a certificate it refused on its own, naming no client; tokend reports the
    // failure itself, with the client and the setting that fixes it.
    let mut filter = EnvFilter::new(format!("warn,rustls=off,tokend={level}"));
    if let Ok(extra) = std::env::var("RUST_LOG") {
        for directive in extra.split(',').filter(|d| !d.trim().is_empty()) {
            match directive.parse() {
                Ok(d) => filter = filter.add_directive(d),
                Err(e) => eprintln!("tokend: ignoring RUST_LOG directive `{directive}`: {e}"),
            }
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    match (log_format, stderr_is_journal()) {
        (LogFormat::Text, false) => builder.init(),
        (LogFormat::Json, false) => builder.json().flatten_event(true).init(),
        (LogFormat::Text, true) => builder
            .event_format(Journald(format().with_target(false).without_time()))
            .init(),
        (LogFormat::Json, true) => builder
            .event_format(Journald(format().json().flatten_event(true).without_time()))
            .fmt_fields(format::JsonFields::new())
            .init(),
    }
}

/// Whether stderr is a stream to the journal: systemd sets `JOURNAL_STREAM` to its device and
/// inode (a child that inherits the variable but not the stream sees a mismatch).
pub fn stderr_is_journal() -> bool {
    use std::os::fd::AsFd;
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    nix::sys::stat::fstat(std::io::stderr().as_fd())
        .is_ok_and(|st| st.st_dev.to_string() == dev && st.st_ino.to_string() == ino)
}

/// The syslog priority of a level (RFC 5424): error 3, warning 4, info 6, debug and trace 7.
pub fn priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// Writes `text` to stderr outside the log macros (a fatal error before or after logging runs):
/// each line gets `level`'s priority prefix when stderr is the journal.
pub fn eprint_lines(level: Level, text: &str) {
    let prefix = if stderr_is_journal() {
        format!("<{}>", priority(level))
    } else {
        String::new()
    };
    for line in text.lines() {
        eprintln!("{prefix}{line}");
    }
}

/// A line format with the event's priority in front, as journald's stream protocol reads it:
/// on every line, so a message or field that spans lines keeps its priority throughout.
struct Journald<F>(F);

impl<S, N, F> FormatEvent<S, N> for Journald<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let mut text = String::new();
        self.0.format_event(ctx, Writer::new(&mut text), event)?;
        let priority = priority(*event.metadata().level());
        for line in text.lines() {
            writeln!(writer, "<{priority}>{line}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_map_to_syslog_priorities() {
        let all = [Level::ERROR, Level::WARN, Level::INFO, Level::DEBUG, Level::TRACE];
        assert_eq!(all.map(priority), [3, 4, 6, 7, 7]);
    }

    #[test]
    fn every_line_of_a_journald_event_carries_its_priority() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buffer(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer({
                let buffer = buffer.clone();
                move || buffer.clone()
            })
            .with_ansi(false)
            .event_format(Journald(format().with_target(false).without_time()))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            // A Display field (`%`) is written as it is, line breaks included.
            let error = "first\nsecond";
            tracing::warn!(error = %error, "cannot write");
            tracing::info!("one line");
        });
        let out = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert!(
            lines[0].starts_with("<4>") && lines[0].contains("cannot write"),
            "{out}"
        );
        assert!(lines[1].starts_with("<4>second"), "{out}");
        assert!(lines[2].starts_with("<6>") && lines[2].contains("one line"), "{out}");
    }
}
