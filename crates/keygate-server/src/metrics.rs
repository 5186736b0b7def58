//! Prometheus text metrics, kept by hand: requests by route and status, a latency
//! histogram, and gateway calls by exchange, class, decision and status with an upstream
//! latency histogram. Labels are route templates and fixed words, never user input.

use std::collections::HashMap;
use std::fmt::Write as _;

use parking_lot::Mutex;

const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += secs;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {}",
                self.counts[i]
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<HashMap<(String, String, u16), u64>>,
    latency: Mutex<HashMap<String, Histogram>>,
    proxied: Mutex<HashMap<(String, String, String, u16), u64>>,
    upstream: Mutex<HashMap<String, Histogram>>,
    commits: Mutex<Commits>,
}

/// The group commit's batches (`recorder.rs`): how many, how big, how long.
#[derive(Default)]
struct Commits {
    committed: u64,
    failed: u64,
    calls: u64,
    events: u64,
    wait: Histogram,
}

/// A request method as a label: HTTP's own, or `other` (any token is a method, and a
/// label per client-made method would grow the metrics without bound).
fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE",
    ];
    KNOWN.into_iter().find(|m| *m == method).unwrap_or("other")
}

impl Metrics {
    pub fn observe_request(&self, method: &str, route: &str, status: u16, secs: f64) {
        *self
            .requests
            .lock()
            .entry((method_label(method).to_string(), route.to_string(), status))
            .or_default() += 1;
        self.latency
            .lock()
            .entry(route.to_string())
            .or_default()
            .observe(secs);
    }

    pub fn observe_proxied(
        &self,
        exchange: &str,
        class: &str,
        decision: &str,
        status: u16,
        upstream_secs: Option<f64>,
    ) {
        *self
            .proxied
            .lock()
            .entry((
                exchange.to_string(),
                class.to_string(),
                decision.to_string(),
                status,
            ))
            .or_default() += 1;
        if let Some(s) = upstream_secs {
            self.upstream
                .lock()
                .entry(exchange.to_string())
                .or_default()
                .observe(s);
        }
    }

    /// One group-commit batch: its rows and how long it took from hand-over to commit.
    pub fn observe_commit(&self, calls: usize, events: usize, secs: f64, ok: bool) {
        let mut c = self.commits.lock();
        if ok {
            c.committed += 1;
        } else {
            c.failed += 1;
        }
        c.calls += calls as u64;
        c.events += events as u64;
        c.wait.observe(secs);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP keygate_http_requests_total HTTP requests by method, route and status.\n# TYPE keygate_http_requests_total counter\n");
        for ((m, r, s), n) in self.requests.lock().iter() {
            let _ = writeln!(
                out,
                "keygate_http_requests_total{{method=\"{m}\",route=\"{r}\",status=\"{s}\"}} {n}"
            );
        }
        out.push_str("# HELP keygate_http_request_duration_seconds Request latency by route.\n# TYPE keygate_http_request_duration_seconds histogram\n");
        for (r, h) in self.latency.lock().iter() {
            h.render(
                &mut out,
                "keygate_http_request_duration_seconds",
                &format!("route=\"{r}\""),
            );
        }
        out.push_str("# HELP keygate_proxied_calls_total Gateway calls by exchange, class, decision and status.\n# TYPE keygate_proxied_calls_total counter\n");
        for ((e, c, d, s), n) in self.proxied.lock().iter() {
            let _ = writeln!(out, "keygate_proxied_calls_total{{exchange=\"{e}\",class=\"{c}\",decision=\"{d}\",status=\"{s}\"}} {n}");
        }
        out.push_str("# HELP keygate_upstream_duration_seconds Exchange latency seen by the gateway.\n# TYPE keygate_upstream_duration_seconds histogram\n");
        for (e, h) in self.upstream.lock().iter() {
            h.render(
                &mut out,
                "keygate_upstream_duration_seconds",
                &format!("exchange=\"{e}\""),
            );
        }
        let c = self.commits.lock();
        let _ = write!(
            out,
            "# HELP keygate_record_batches_total Group-commit batches of call rows and audit events, by outcome.\n# TYPE keygate_record_batches_total counter\n\
             keygate_record_batches_total{{outcome=\"committed\"}} {}\nkeygate_record_batches_total{{outcome=\"failed\"}} {}\n\
             # HELP keygate_record_rows_total Rows handed to the group commit, by table.\n# TYPE keygate_record_rows_total counter\n\
             keygate_record_rows_total{{table=\"api_calls\"}} {}\nkeygate_record_rows_total{{table=\"audit_events\"}} {}\n\
             # HELP keygate_record_commit_seconds Time from a batch's hand-over to its commit.\n# TYPE keygate_record_commit_seconds histogram\n",
            c.committed,
            c.failed,
            c.calls,
            c.events
        );
        c.wait.render(&mut out, "keygate_record_commit_seconds", "");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client's made-up methods share one label: they cannot grow the metrics.
    #[test]
    fn unknown_methods_share_one_label() {
        let m = Metrics::default();
        for i in 0..100 {
            m.observe_request(&format!("X{i:0>1000}"), "/healthz", 405, 0.001);
        }
        m.observe_request("GET", "/healthz", 200, 0.001);
        let requests = m.requests.lock();
        assert_eq!(requests.len(), 2);
        assert_eq!(
            requests[&("other".to_string(), "/healthz".to_string(), 405)],
            100
        );
        assert!(requests.contains_key(&("GET".to_string(), "/healthz".to_string(), 200)));
    }
}
