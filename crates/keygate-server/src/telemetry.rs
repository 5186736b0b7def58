//! Logging: `tracing` to stderr, text or JSON. Span fields are an allowlist (request id,
//! method, route template, status, latency): no headers, bodies or query strings, so no
//! token or secret can reach a log line.

use tracing_subscriber::EnvFilter;

pub fn init(format: &str) {
    let filter = EnvFilter::try_from_env("KEYGATE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if format == "json" {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}
