//! Helpers shared by this crate's own unit tests (not part of the public API).

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use http::{HeaderMap, Version};

use crate::client::Client;
use crate::upstream::{Cancellation, Upstream};

/// Runs a test body with a hard deadline, so a hang fails instead of blocking the suite.
pub(crate) async fn within<T>(fut: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::time::timeout(Duration::from_secs(60), fut)
        .await
        .context("test timed out after 60 s")?
}

/// A plaintext client of the given version (`HTTP_11` or `HTTP_2`) for `up`.
pub(crate) async fn client(up: &Upstream, version: Version) -> anyhow::Result<Client> {
    if version == Version::HTTP_2 {
        Client::h2c(up.addr()).await
    } else {
        Client::h1(up.addr()).await
    }
}

/// A response header as a string ("" when absent).
pub(crate) fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// Waits for a cancellation of `path` since `t0` and asserts it was noticed within `max`.
pub(crate) async fn expect_cancelled(
    up: &Upstream,
    path: &str,
    t0: Instant,
    max: Duration,
) -> anyhow::Result<Cancellation> {
    let c = up
        .wait_cancelled(path, t0, Duration::from_secs(3))
        .await
        .with_context(|| format!("{path} was not cancelled within 3 s of the client leaving"))?;
    let took = c.at.duration_since(t0);
    anyhow::ensure!(
        took <= max,
        "{path} cancellation noticed after {took:?} (allowed {max:?})"
    );
    Ok(c)
}
