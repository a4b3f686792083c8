//! Owns process logging: a `tracing` subscriber writing through a background
//! thread (so the request path never blocks on stdout), text or JSON, filtered
//! by `RUST_LOG` (default `info`). Pingora's `log` records are bridged in.

use std::sync::OnceLock;

use corridor_config::LogFormat;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

static GUARD: OnceLock<parking_lot::Mutex<Option<WorkerGuard>>> = OnceLock::new();

/// Installs the global subscriber once; later calls do nothing.
pub fn init(format: LogFormat) {
    if GUARD.get().is_some() {
        return;
    }
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .finish(std::io::stdout());
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,pingora_core=warn,pingora_proxy=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let result = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder.with_ansi(false).try_init(),
    };
    if result.is_ok() {
        let _ = GUARD.set(parking_lot::Mutex::new(Some(guard)));
    }
}

/// Flushes buffered log lines; call before the process exits.
pub fn flush() {
    if let Some(g) = GUARD.get() {
        drop(g.lock().take());
    }
}
