//! Owns what the scale benchmark reads from the outside: a minimal HTTP/1.1
//! GET, the control plane's `/nodes` page, a Prometheus sample, `/proc`
//! CPU and memory figures, RFC 3339 times, wrk's output and the `took_us`
//! lines of Corridor's log.

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `GET path` on `addr`; the status and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let timeout = Duration::from_secs(5);
    let mut s = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("GET http://{addr}{path}: connect: {e}"))?;
    let _ = s.set_read_timeout(Some(timeout));
    let _ = s.set_write_timeout(Some(timeout));
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes())
        .map_err(|e| format!("GET http://{addr}{path}: write: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .map_err(|e| format!("GET http://{addr}{path}: read: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("GET http://{addr}{path}: no header end in the response"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("GET http://{addr}{path}: bad status line"))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

/// Decodes a chunked body (sizes in hex, each chunk followed by CRLF).
fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    out
}

// === /nodes ===

/// One type of one subscriber, as the control plane's `/nodes` shows it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeType {
    /// Version of the last response sent.
    pub sent: String,
    /// Version last ACKed.
    pub acked: String,
    /// A response is waiting for its ACK or NACK.
    pub pending: bool,
    /// When the last ACK arrived (millisecond precision).
    pub last_ack_at: Option<SystemTime>,
    /// NACKs received.
    pub nacks: u64,
    /// The last NACK's message.
    pub last_nack: Option<String>,
}

/// One connected subscriber stream.
#[derive(Clone, Debug, Default)]
pub struct NodeInfo {
    /// `node.id`.
    pub id: String,
    /// Per type URL.
    pub types: HashMap<String, NodeType>,
}

/// The connected subscribers on the control plane's admin `addr`.
pub fn nodes(addr: SocketAddr) -> Result<Vec<NodeInfo>, String> {
    let (status, body) = http_get(addr, "/nodes")?;
    if status != 200 {
        return Err(format!("GET /nodes: status {status}"));
    }
    let v: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| format!("GET /nodes: bad JSON: {e}"))?;
    let mut out = Vec::new();
    for n in v["nodes"].as_array().into_iter().flatten() {
        if n["connected"].as_bool() != Some(true) {
            continue;
        }
        let mut info = NodeInfo {
            id: n["node_id"].as_str().unwrap_or("").to_string(),
            types: HashMap::new(),
        };
        for t in n["types"].as_array().into_iter().flatten() {
            let s = |k: &str| t[k].as_str().unwrap_or("").to_string();
            info.types.insert(
                s("type_url"),
                NodeType {
                    sent: s("sent_version"),
                    acked: s("acked_version"),
                    pending: !t["pending_nonce"].is_null(),
                    last_ack_at: t["last_ack_at"].as_str().and_then(parse_rfc3339),
                    nacks: t["nacks"].as_u64().unwrap_or(0),
                    last_nack: t["last_nack"].as_str().map(str::to_string),
                },
            );
        }
        out.push(info);
    }
    Ok(out)
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction]Z` (UTC only, as the tools here write it).
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let s = s.trim().strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.split(':').map(|x| x.parse::<u64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    let nanos: u64 = if frac.is_empty() {
        0
    } else {
        let digits: String = frac.chars().take(9).collect();
        digits.parse::<u64>().ok()? * 10u64.pow(9 - digits.len() as u32)
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = u64::try_from(days).ok()? * 86_400 + hh * 3600 + mm * 60 + ss;
    Some(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_nanos(nanos))
}

// === /proc ===

/// CPU time and memory of one process (all its threads).
#[derive(Clone, Debug, Default)]
pub struct ProcSample {
    /// utime + stime, in seconds (clock-tick resolution, exited threads included).
    pub cpu_s: f64,
    /// Per live thread: CPU time in ns (`/proc/PID/task/TID/schedstat`).
    pub threads: HashMap<u64, u64>,
    /// Resident set, KiB.
    pub rss_kib: u64,
    /// Peak resident set, KiB.
    pub hwm_kib: u64,
}

impl ProcSample {
    /// CPU seconds used since `before`: from the per-thread nanosecond
    /// counters when the kernel has them (threads that exited in between
    /// lose only what they ran since `before`), else from clock ticks.
    pub fn cpu_since(&self, before: &ProcSample) -> f64 {
        if self.threads.is_empty() {
            return self.cpu_s - before.cpu_s;
        }
        let ns: u64 = self
            .threads
            .iter()
            .map(|(tid, now)| now.saturating_sub(before.threads.get(tid).copied().unwrap_or(0)))
            .sum();
        ns as f64 / 1e9
    }
}

/// Clock ticks per second (`getconf CLK_TCK`, 100 when unknown).
pub fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// A sample of `pid` (`self` for this process); zeros if it is gone.
pub fn proc_sample(pid: &str, ticks: f64) -> ProcSample {
    let mut out = ProcSample::default();
    if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        if let Some(i) = stat.rfind(')') {
            let f: Vec<&str> = stat[i + 2..].split_whitespace().collect();
            let n = |k: usize| f.get(k).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
            out.cpu_s = (n(11) + n(12)) as f64 / ticks;
        }
    }
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let Some(tid) = t.file_name().to_str().and_then(|x| x.parse().ok()) else {
                continue;
            };
            let ns = std::fs::read_to_string(t.path().join("schedstat"))
                .ok()
                .and_then(|x| x.split_whitespace().next().and_then(|n| n.parse().ok()));
            if let Some(ns) = ns {
                out.threads.insert(tid, ns);
            }
        }
    }
    if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
        for line in status.lines() {
            let kib = || {
                line.split_whitespace()
                    .nth(1)
                    .and_then(|x| x.parse().ok())
                    .unwrap_or(0)
            };
            if line.starts_with("VmRSS:") {
                out.rss_kib = kib();
            } else if line.starts_with("VmHWM:") {
                out.hwm_kib = kib();
            }
        }
    }
    out
}

// === Prometheus, wrk, logs ===

/// The sum of the samples of `name` whose labels contain `label` (e.g. `source="xds"`).
pub fn prom_value(text: &str, name: &str, label: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with('{') || rest.starts_with(' ')) || !rest.contains(label) {
            continue;
        }
        if let Some(v) = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

/// What one wrk run reported.
#[derive(Clone, Copy, Debug, Default)]
pub struct WrkResult {
    /// Requests per second.
    pub rps: f64,
    /// Median latency, µs.
    pub p50_us: f64,
    /// 99th percentile latency, µs.
    pub p99_us: f64,
    /// Requests completed.
    pub requests: u64,
    /// Socket errors plus non-2xx/3xx responses.
    pub errors: u64,
}

/// Parses `wrk --latency` output.
pub fn parse_wrk(out: &str) -> Option<WrkResult> {
    let mut r = WrkResult::default();
    let mut have = (false, false);
    for line in out.lines() {
        let t = line.trim();
        let words: Vec<&str> = t.split_whitespace().collect();
        match words.as_slice() {
            ["50%", v] => r.p50_us = duration_us(v)?,
            ["99%", v] => {
                r.p99_us = duration_us(v)?;
                have.0 = true;
            }
            ["Requests/sec:", v] => {
                r.rps = v.parse().ok()?;
                have.1 = true;
            }
            [n, "requests", "in", ..] => r.requests = n.parse().unwrap_or(0),
            ["Non-2xx", "or", "3xx", "responses:", n] => r.errors += n.parse::<u64>().unwrap_or(0),
            ["Socket", "errors:", rest @ ..] => {
                r.errors += rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            _ => {}
        }
    }
    (have.0 && have.1).then_some(r)
}

/// wrk's `1.23ms` / `456.00us` / `1.02s` / `2.00m` in µs.
fn duration_us(v: &str) -> Option<f64> {
    let split = v.find(|c: char| c.is_ascii_alphabetic())?;
    let (n, unit) = v.split_at(split);
    let n: f64 = n.parse().ok()?;
    Some(match unit {
        "us" => n,
        "ms" => n * 1e3,
        "s" => n * 1e6,
        "m" => n * 60e6,
        _ => return None,
    })
}

/// One "control-plane update applied" line of Corridor's log.
#[derive(Clone, Debug, PartialEq)]
pub struct Applied {
    /// The resource kind (`RouteTable`, `Endpoints`...).
    pub kind: String,
    /// `took_us`.
    pub took_us: u64,
}

/// Every applied update in `log` (text format).
pub fn applied_updates(log: &str) -> Vec<Applied> {
    log.lines()
        .filter(|l| l.contains("control-plane update applied"))
        .filter_map(|l| {
            let field = |key: &str| {
                let start = l.find(key)? + key.len();
                let rest = &l[start..];
                let end = rest.find(' ').unwrap_or(rest.len());
                Some(rest[..end].trim_matches('"').to_string())
            };
            Some(Applied {
                kind: field(" type=")?,
                took_us: field(" took_us=")?.parse().ok()?,
            })
        })
        .collect()
}

/// The time of the last line of `log` containing every one of `needles`
/// (the text format starts each line with an RFC 3339 time).
pub fn last_line_time(log: &str, needles: &[&str]) -> Option<SystemTime> {
    log.lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .filter_map(|l| l.split_whitespace().next().and_then(parse_rfc3339))
        .next_back()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        let t = parse_rfc3339("2026-11-29T18:55:38.123Z").unwrap();
        let d = t.duration_since(UNIX_EPOCH).unwrap();
        assert_eq!(d.as_secs(), 1_795_978_538);
        assert_eq!(d.subsec_millis(), 123);
        let t = parse_rfc3339("1970-01-01T00:00:01.000001Z").unwrap();
        assert_eq!(t.duration_since(UNIX_EPOCH).unwrap().as_micros(), 1_000_001);
        assert!(parse_rfc3339("2026-11-29 18:55:38").is_none());
    }

    #[test]
    fn wrk_output() {
        let out = "Running 2s test @ http://127.0.0.1:1/\n  1 threads and 50 connections\n  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency     1.61ms  300.00us   9.00ms   90.00%\n  Latency Distribution\n     50%    1.61ms\n     75%    1.80ms\n     90%    2.00ms\n     99%    3.18ms\n  55446 requests in 2.00s, 6.00MB read\n  Socket errors: connect 0, read 2, write 0, timeout 1\n  Non-2xx or 3xx responses: 3\nRequests/sec:  27723.45\nTransfer/sec:      3.00MB\n";
        let r = parse_wrk(out).unwrap();
        assert_eq!(r.p50_us, 1610.0);
        assert_eq!(r.p99_us, 3180.0);
        assert_eq!(r.requests, 55446);
        assert_eq!(r.errors, 6);
        assert!((r.rps - 27723.45).abs() < 1e-9);
    }

    #[test]
    fn log_lines() {
        let log = "2026-11-29T20:01:19.100000Z  INFO corridor_proxy::xds: control-plane update applied type=\"Endpoints\" applied=Config version=abc took_us=123\n2026-11-29T20:01:19.200000Z  INFO corridor_xds::dir: resource file loaded file=/x/routes.yaml resources=1\n";
        assert_eq!(
            applied_updates(log),
            vec![Applied {
                kind: "Endpoints".into(),
                took_us: 123
            }]
        );
        let t = last_line_time(log, &["resource file loaded", "routes.yaml"]).unwrap();
        assert_eq!(
            t.duration_since(UNIX_EPOCH).unwrap().subsec_micros(),
            200_000
        );
    }

    #[test]
    fn prometheus() {
        let text = "# HELP x\ncorridor_config_apply_seconds_sum{source=\"xds\"} 0.5\ncorridor_config_apply_seconds_sum{source=\"file\"} 9\ncorridor_config_apply_seconds_count{source=\"xds\"} 3\n";
        assert_eq!(
            prom_value(text, "corridor_config_apply_seconds_sum", "source=\"xds\""),
            Some(0.5)
        );
        assert_eq!(
            prom_value(
                text,
                "corridor_config_apply_seconds_count",
                "source=\"xds\""
            ),
            Some(3.0)
        );
    }

    #[test]
    fn own_cpu() {
        let a = proc_sample("self", clock_ticks());
        let x: u64 = (0..3_000_000u64).map(std::hint::black_box).sum();
        std::hint::black_box(x);
        let b = proc_sample("self", clock_ticks());
        assert!(b.rss_kib > 0);
        assert!(b.cpu_since(&a) >= 0.0);
    }

    #[test]
    fn chunked() {
        assert_eq!(dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), "abcde");
    }
}
