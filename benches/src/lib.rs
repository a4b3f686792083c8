//! Benchmarks live in `benches/` (criterion), `run.sh` (load tests) and
//! `xds_scale.sh` (the control-stream scale benchmark, whose helpers are here);
//! this crate also holds what the bench binaries share.

pub mod xds_scale;

/// Waits for SIGTERM or SIGINT (the bench servers' way to stop and print their counters).
pub async fn shutdown_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
