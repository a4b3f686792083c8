//! Owns process logging: a `tracing` subscriber writing through a background
//! thread, text or JSON, filtered by `RUST_LOG` (default `info`). The request
//! path never waits for the writer: when its queue is full, lines are dropped
//! and counted (`corridor_log_lines_dropped_total`). Pingora's `log` records
//! are bridged in.

use std::sync::OnceLock;

use corridor_config::LogFormat;
use tracing_appender::non_blocking::{ErrorCounter, WorkerGuard};
use tracing_subscriber::EnvFilter;

static GUARD: OnceLock<parking_lot::Mutex<Option<WorkerGuard>>> = OnceLock::new();
static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Installs the global subscriber once, with a queue of `queue_lines` lines;
/// later calls do nothing.
pub fn init(format: LogFormat, queue_lines: usize) {
    if GUARD.get().is_some() {
        return;
    }
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(queue_lines.max(1))
        .finish(std::io::stdout());
    let _ = DROPPED.set(writer.error_counter());
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

/// Log lines dropped so far because the writer's queue was full.
pub fn dropped_lines() -> u64 {
    DROPPED.get().map_or(0, |c| c.dropped_lines() as u64)
}

/// Flushes buffered log lines; call before the process exits.
pub fn flush() {
    if let Some(g) = GUARD.get() {
        drop(g.lock().take());
    }
}
