//! Log setup: text or JSON lines on stderr (journald adds its own metadata). `--log-level`
//! applies to tokend itself; libraries log warnings only unless `RUST_LOG` says otherwise.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

pub fn init(format: LogFormat, level: tracing::Level) {
    let mut filter = EnvFilter::new(format!("warn,tokend={level}"));
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
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
