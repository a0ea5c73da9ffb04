//! The gateway's metrics, in Prometheus' text format, on a local address of its own
//! (`metrics = "127.0.0.1:9464"` in gate.toml): `GET /metrics`.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `hnsecure_gate_transactions_total` | counter | `route` (MSH-5 pattern, `-` when none matched), `outcome` (MSA-1) |
//! | `hnsecure_gate_transaction_seconds` | histogram | — |
//! | `hnsecure_gate_connections` | gauge | — |
//! | `hnsecure_gate_refusals_total` | counter | `reason` |
//! | `hnsecure_gate_journal_available` | gauge | — |
//! | `hnsecure_gate_journal_dropped_total` | counter | — |
//!
//! Labels never carry message content: route patterns come from gate.toml and outcomes
//! are `AA`, `AE`, `AR` or `-`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 13] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 70.0,
];

/// Why the gateway refused something, for `hnsecure_gate_refusals_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Refused {
    /// A connection beyond `max_connections`.
    MaxConnections,
    /// A TLS handshake that failed or timed out.
    Handshake,
    /// A certificate HNGard does not accept (unknown, revoked, expired).
    Certificate,
    /// An envelope that did not open, named another facility, or was replayed.
    Envelope,
    /// MSH-4 not the certificate's facility.
    Msh4,
    /// Over the facility's rate.
    RateLimit,
    /// A duplicate request (Volume 5, 2.4.8).
    Duplicate,
    /// A request admission refused as a security event other than MSH-4: control or
    /// framing bytes, other delimiters, more than one message.
    Admission,
    /// A `Serve` for a name HNGard does not record for the facility.
    Serve,
    /// A connection beyond the share of connections not yet authenticated, from one
    /// address or from all.
    Unauthenticated,
    /// A request answered `HNPS013E`: the audit journal could not be written.
    Journal,
}

impl Refused {
    fn label(self) -> &'static str {
        match self {
            Self::MaxConnections => "max_connections",
            Self::Handshake => "handshake",
            Self::Certificate => "certificate",
            Self::Envelope => "envelope",
            Self::Msh4 => "msh4_mismatch",
            Self::RateLimit => "rate_limit",
            Self::Duplicate => "duplicate",
            Self::Admission => "admission",
            Self::Serve => "serve",
            Self::Unauthenticated => "unauthenticated",
            Self::Journal => "journal",
        }
    }
}

/// Reads the journal's state: (available, records dropped).
type JournalGauge = Box<dyn Fn() -> (bool, u64) + Send + Sync>;

/// The counters. Cheap to update from any task.
#[derive(Default)]
pub struct Metrics {
    transactions: Mutex<BTreeMap<(String, String), u64>>,
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    /// Microseconds.
    sum_us: AtomicU64,
    connections: AtomicU64,
    refusals: Mutex<BTreeMap<Refused, u64>>,
    /// The journal's state, read at each exposition: 1 when it can be written.
    journal: Mutex<Option<JournalGauge>>,
}

impl Metrics {
    /// Counts a transaction on `route` answered `outcome` after `latency`.
    pub fn transaction(&self, route: &str, outcome: &str, latency: Duration) {
        *self
            .transactions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((route.to_owned(), outcome.to_owned()))
            .or_default() += 1;
        let secs = latency.as_secs_f64();
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            if secs <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(
            u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Counts a refusal.
    pub fn refused(&self, why: Refused) {
        *self
            .refusals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(why)
            .or_default() += 1;
    }

    /// Where the exposition reads the journal's state from: (available, records dropped).
    pub fn watch_journal(&self, state: impl Fn() -> (bool, u64) + Send + Sync + 'static) {
        *self.journal.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(state));
    }

    /// A connection opened.
    pub fn connected(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection closed.
    pub fn disconnected(&self) {
        self.connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP hnsecure_gate_transactions_total Transactions answered, by route and MSA-1.\n",
        );
        out.push_str("# TYPE hnsecure_gate_transactions_total counter\n");
        for ((route, outcome), n) in self
            .transactions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "hnsecure_gate_transactions_total{{route=\"{}\",outcome=\"{}\"}} {n}",
                escape(route),
                escape(outcome)
            );
        }
        out.push_str("# HELP hnsecure_gate_transaction_seconds Time from request to answer at the gateway.\n");
        out.push_str("# TYPE hnsecure_gate_transaction_seconds histogram\n");
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            let _ = writeln!(
                out,
                "hnsecure_gate_transaction_seconds_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "hnsecure_gate_transaction_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "hnsecure_gate_transaction_seconds_sum {}",
            self.sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "hnsecure_gate_transaction_seconds_count {count}");
        out.push_str("# HELP hnsecure_gate_connections Open connections.\n");
        out.push_str("# TYPE hnsecure_gate_connections gauge\n");
        let _ = writeln!(
            out,
            "hnsecure_gate_connections {}",
            self.connections.load(Ordering::Relaxed)
        );
        if let Some(journal) = &*self.journal.lock().unwrap_or_else(|e| e.into_inner()) {
            let (available, dropped) = journal();
            out.push_str("# HELP hnsecure_gate_journal_available 1 when the audit journal can be written, 0 while requests are answered HNPS013E.\n");
            out.push_str("# TYPE hnsecure_gate_journal_available gauge\n");
            let _ = writeln!(
                out,
                "hnsecure_gate_journal_available {}",
                u8::from(available)
            );
            out.push_str("# HELP hnsecure_gate_journal_dropped_total Audit records not journaled: not waited for, and the store failed or fell behind.\n");
            out.push_str("# TYPE hnsecure_gate_journal_dropped_total counter\n");
            let _ = writeln!(out, "hnsecure_gate_journal_dropped_total {dropped}");
        }
        out.push_str("# HELP hnsecure_gate_refusals_total Connections, requests and envelopes refused, by reason.\n");
        out.push_str("# TYPE hnsecure_gate_refusals_total counter\n");
        for (why, n) in self
            .refusals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "hnsecure_gate_refusals_total{{reason=\"{}\"}} {n}",
                why.label()
            );
        }
        out
    }
}

/// A label value with `\`, `"` and newlines escaped, as the format asks.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Serves `GET /metrics` on `listener` until the task is dropped. Anything else is a 404;
/// a client gets 5 s to send its request line and headers.
pub async fn serve(listener: TcpListener, metrics: std::sync::Arc<Metrics>) {
    loop {
        let Ok((mut tcp, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 8192 {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return false,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                true
            })
            .await;
            if !matches!(read, Ok(true)) {
                return;
            }
            let line = request.split(|&b| b == b'\r').next().unwrap_or_default();
            let (status, body) = if line.starts_with(b"GET /metrics ") || line == b"GET /metrics" {
                ("200 OK", metrics.render())
            } else {
                log::debug!("metrics: {peer} asked for something else");
                (
                    "404 Not Found",
                    "only GET /metrics is served here\n".to_owned(),
                )
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tcp.write_all(response.as_bytes()).await;
            let _ = tcp.shutdown().await;
        });
    }
}

/// Binds the metrics address.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histogram_and_gauges() {
        let m = Metrics::default();
        m.transaction("RAIRCRD-NW-PRSN", "AA", Duration::from_millis(3));
        m.transaction("RAIRCRD-NW-PRSN", "AA", Duration::from_millis(300));
        m.transaction("-", "AR", Duration::from_secs(2));
        m.refused(Refused::Msh4);
        m.connected();
        let text = m.render();
        assert!(text.contains(
            "hnsecure_gate_transactions_total{route=\"RAIRCRD-NW-PRSN\",outcome=\"AA\"} 2\n"
        ));
        assert!(text.contains("hnsecure_gate_transactions_total{route=\"-\",outcome=\"AR\"} 1\n"));
        assert!(text.contains("hnsecure_gate_transaction_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("hnsecure_gate_transaction_seconds_bucket{le=\"0.5\"} 2\n"));
        assert!(text.contains("hnsecure_gate_transaction_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("hnsecure_gate_transaction_seconds_count 3\n"));
        assert!(text.contains("hnsecure_gate_connections 1\n"));
        assert!(text.contains("hnsecure_gate_refusals_total{reason=\"msh4_mismatch\"} 1\n"));
        assert_eq!(escape("a\"b\\c"), "a\\\"b\\\\c");
    }
}
