//! Prometheus metrics, served at `/metrics` on the socket: token expiry and refresh outcomes by
//! client (and how many requests in a row have failed), request latency by token endpoint, output
//! and state file write errors (and which files are failing now), hook runs, requests by status
//! on the socket and on the TCP listener, connections the socket refused over a limit, and socket
//! connections hyper ended with an error, by reason; in fleet mode, the store's
//! health and how the fleet served each client.

pub(crate) mod outcome;

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use url::{Position, Url};

use crate::config::ClientName;
use crate::metrics::outcome::Outcome;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClientLabel {
    client: ClientName,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefreshLabels {
    client: ClientName,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// The setting whose limit a refused socket connection was over.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabel {
    limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutputLabels {
    client: ClientName,
    path: PathLabel,
}

/// An output's path as a label value, shared by its series and `Metrics::output_paths`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
struct PathLabel(Arc<str>);

impl Borrow<str> for PathLabel {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl EncodeLabelValue for PathLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        encoder.write_str(&self.0)
    }
}

/// A token endpoint (or issuer) without its query: latency is the IdP's, and one histogram per
/// client would be 17 series each (170,000 lines of `/metrics` at 10,000 clients).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabel {
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: u16,
}

type HistogramFamily = Family<EndpointLabel, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    expiry: Family<ClientLabel, Gauge<f64, AtomicU64>>,
    next_attempt: Family<ClientLabel, Gauge<f64, AtomicU64>>,
    refreshes: Family<RefreshLabels, Counter>,
    failures: Family<ClientLabel, Gauge>,
    latency: HistogramFamily,
    output_errors: Family<ClientLabel, Counter>,
    output_failing: Family<OutputLabels, Gauge>,
    /// The paths `output_failing` has series for, by client, so that `forget` can drop them.
    output_paths: Mutex<BTreeMap<ClientName, BTreeSet<PathLabel>>>,
    state_errors: Family<ClientLabel, Counter>,
    state_failing: Family<ClientLabel, Gauge>,
    requests: Family<StatusLabel, Counter>,
    refusals: Family<LimitLabel, Counter>,
    connection_errors: Family<ReasonLabel, Counter>,
    tcp_requests: Family<StatusLabel, Counter>,
    hook_runs: Family<RefreshLabels, Counter>,
    proxy_requests: Family<ProxyLabels, Counter>,
    proxy_connection_errors: Family<ProxyReasonLabels, Counter>,
    /// Fleet mode's series: without `fleet:` only `tokend_fleet_store_up` appears, at 0 (the
    /// alert on it looks at hosts that send the store commands).
    pub fleet: FleetMetrics,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProxyReasonLabels {
    client: ClientName,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProxyLabels {
    client: ClientName,
    status: u16,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("tokend");
        let expiry = Family::<ClientLabel, Gauge<f64, AtomicU64>>::default();
        let next_attempt = Family::<ClientLabel, Gauge<f64, AtomicU64>>::default();
        let refreshes = Family::<RefreshLabels, Counter>::default();
        let failures = Family::<ClientLabel, Gauge>::default();
        let latency: HistogramFamily =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.005, 2.0, 14)));
        let output_errors = Family::<ClientLabel, Counter>::default();
        let output_failing = Family::<OutputLabels, Gauge>::default();
        let state_errors = Family::<ClientLabel, Counter>::default();
        let state_failing = Family::<ClientLabel, Gauge>::default();
        let requests = Family::<StatusLabel, Counter>::default();
        let refusals = Family::<LimitLabel, Counter>::default();
        // Both series from the start, so that a first refusal shows as an increase from 0
        // (the guard returned is dropped at once).
        for limit in [LIMIT_CONNECTIONS, LIMIT_PER_USER] {
            drop(refusals.get_or_create(&LimitLabel { limit }));
        }
        let connection_errors = Family::<ReasonLabel, Counter>::default();
        let tcp_requests = Family::<StatusLabel, Counter>::default();
        let hook_runs = Family::<RefreshLabels, Counter>::default();
        let proxy_requests = Family::<ProxyLabels, Counter>::default();
        let proxy_connection_errors = Family::<ProxyReasonLabels, Counter>::default();
        registry.register(
            "token_expiry_timestamp_seconds",
            "When the client's current token expires, in Unix seconds",
            expiry.clone(),
        );
        registry.register(
            "next_attempt_timestamp_seconds",
            "When tokend next asks for the client's token (a refresh, or a retry after any Retry-After), in Unix seconds; past the expiry gauge, the token will expire first",
            next_attempt.clone(),
        );
        registry.register(
            "refreshes",
            "Token requests by outcome (refreshed, failed, rate_limited, rejected), and tokens taken from the fleet (adopted)",
            refreshes.clone(),
        );
        registry.register(
            "refresh_failures",
            "Token requests for the client that failed in a row (the failures of `tokend status`), 0 once a token is obtained",
            failures.clone(),
        );
        registry.register(
            "refresh_duration_seconds",
            "Time from sending a token request to having its answer, by token endpoint (or issuer)",
            latency.clone(),
        );
        registry.register(
            "output_write_errors",
            "Failed writes of token files",
            output_errors.clone(),
        );
        registry.register(
            "output_write_failing",
            "1 while the token file's last write failed (it is retried with backoff), 0 once written",
            output_failing.clone(),
        );
        registry.register(
            "state_write_errors",
            "Failed writes of state files (the token saved for reuse after a restart)",
            state_errors.clone(),
        );
        registry.register(
            "state_write_failing",
            "1 while the client's state file could not be written (it is retried with backoff), 0 once written",
            state_failing.clone(),
        );
        registry.register(
            "socket_requests",
            "Requests served on the Unix socket, by HTTP status",
            requests.clone(),
        );
        registry.register(
            "socket_refusals",
            "Socket connections refused at once with a 503 (also counted in socket_requests), by the limit they were over (max_connections, max_connections_per_user)",
            refusals.clone(),
        );
        registry.register(
            "socket_connection_errors",
            "Socket connections ended by an error before or instead of an answer, by reason (malformed, header_too_large, header_timeout, incomplete, other); hyper's own 400 and 431 answers also count in socket_requests",
            connection_errors.clone(),
        );
        registry.register(
            "tcp_requests",
            "Requests served on the TCP health and metrics listener (metrics.listen), by HTTP status",
            tcp_requests.clone(),
        );
        registry.register(
            "hook_runs",
            "Hook runs after a refresh, by outcome (ok, failed, timeout)",
            hook_runs.clone(),
        );
        registry.register(
            "proxy_requests",
            "Requests through a token proxy, by client and the HTTP status returned",
            proxy_requests.clone(),
        );
        let fleet = FleetMetrics::register(&mut registry);
        registry.register(
            "proxy_connection_errors",
            "Token proxy connections ended by an error, by client and reason (as socket_connection_errors)",
            proxy_connection_errors.clone(),
        );
        Metrics {
            registry,
            expiry,
            next_attempt,
            refreshes,
            failures,
            latency,
            output_errors,
            output_failing,
            output_paths: Mutex::new(BTreeMap::new()),
            state_errors,
            state_failing,
            requests,
            refusals,
            connection_errors,
            tcp_requests,
            hook_runs,
            proxy_requests,
            proxy_connection_errors,
            fleet,
        }
    }

    pub fn token_published(&self, client: &ClientName, expires_at: SystemTime) {
        let seconds = expires_at.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        self.expiry.get_or_create(&label(client)).set(seconds);
    }

    /// When the next request for the client is planned.
    pub fn next_attempt(&self, client: &ClientName, at: SystemTime) {
        let seconds = at.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        self.next_attempt.get_or_create(&label(client)).set(seconds);
    }

    /// A request's outcome, counted for one client it was sent for.
    pub fn refresh(&self, client: &ClientName, outcome: Outcome) {
        let labels = RefreshLabels {
            client: client.clone(),
            outcome: outcome.as_str(),
        };
        self.refreshes.get_or_create(&labels).inc();
    }

    /// How many requests for the client have failed in a row (0 after a new token).
    pub fn refresh_failures(&self, client: &ClientName, failures: u32) {
        self.failures.get_or_create(&label(client)).set(i64::from(failures));
    }

    /// How long a request to `endpoint` took, once per request (not per client it serves).
    pub fn request_duration(&self, endpoint: &Url, took: Duration) {
        let label = EndpointLabel {
            endpoint: endpoint[..Position::AfterPath].to_owned(),
        };
        self.latency.get_or_create(&label).observe(took.as_secs_f64());
    }

    /// A write of `client`'s output at `path`: counted if it failed, and `path` shown as failing
    /// until a write succeeds.
    pub fn output_write(&self, client: &ClientName, path: &Path, ok: bool) {
        if !ok {
            self.output_errors.get_or_create(&label(client)).inc();
        }
        let path = path.to_string_lossy();
        let path = {
            let mut paths = self
                .output_paths
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let known = paths.entry(client.clone()).or_default();
            // The label already made for this path, if any: no copy of it per write.
            match known.get(&*path) {
                Some(label) => label.clone(),
                None => {
                    let label = PathLabel(Arc::from(&*path));
                    known.insert(label.clone());
                    label
                }
            }
        };
        let labels = OutputLabels {
            client: client.clone(),
            path,
        };
        self.output_failing.get_or_create(&labels).set(i64::from(!ok));
    }

    /// A write of `client`'s state file: counted if it failed, and shown as failing until one
    /// succeeds.
    pub fn state_write(&self, client: &ClientName, ok: bool) {
        if !ok {
            self.state_errors.get_or_create(&label(client)).inc();
        }
        self.state_failing.get_or_create(&label(client)).set(i64::from(!ok));
    }

    /// Drops the series of `client`'s outputs (a reload may have changed them; the new task
    /// writes them again).
    pub fn forget_outputs(&self, client: &ClientName) {
        let paths = self
            .output_paths
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(client.as_str())
            .unwrap_or_default();
        for path in paths {
            self.output_failing.remove(&OutputLabels {
                client: client.clone(),
                path,
            });
        }
    }

    pub fn request(&self, status: u16) {
        self.requests.get_or_create(&StatusLabel { status }).inc();
    }

    /// A socket connection refused over a limit: `at_capacity` for `socket.max_connections`,
    /// else `socket.max_connections_per_user`.
    pub fn socket_refusal(&self, at_capacity: bool) {
        let limit = if at_capacity { LIMIT_CONNECTIONS } else { LIMIT_PER_USER };
        self.refusals.get_or_create(&LimitLabel { limit }).inc();
    }

    /// A socket connection hyper ended with an error (see `server::cutoff`).
    pub fn connection_error(&self, reason: &'static str) {
        self.connection_errors.get_or_create(&ReasonLabel { reason }).inc();
    }

    pub fn hook_run(&self, client: &ClientName, outcome: &'static str) {
        let labels = RefreshLabels {
            client: client.clone(),
            outcome,
        };
        self.hook_runs.get_or_create(&labels).inc();
    }

    pub fn proxy_request(&self, client: &ClientName, status: u16) {
        let labels = ProxyLabels {
            client: client.clone(),
            status,
        };
        self.proxy_requests.get_or_create(&labels).inc();
    }

    pub fn proxy_connection_error(&self, client: &ClientName, reason: &'static str) {
        let labels = ProxyReasonLabels {
            client: client.clone(),
            reason,
        };
        self.proxy_connection_errors.get_or_create(&labels).inc();
    }

    pub fn tcp_request(&self, status: u16) {
        self.tcp_requests.get_or_create(&StatusLabel { status }).inc();
    }

    /// Drops the series of a client removed by a reload.
    pub fn forget(&self, client: &ClientName) {
        let l = label(client);
        self.expiry.remove(&l);
        self.next_attempt.remove(&l);
        self.failures.remove(&l);
        self.output_errors.remove(&l);
        self.forget_outputs(client);
        self.state_errors.remove(&l);
        self.state_failing.remove(&l);
        for outcome in ["ok", "failed", "timeout"] {
            self.hook_runs.remove(&RefreshLabels {
                client: client.clone(),
                outcome,
            });
        }
        for outcome in Outcome::OF_REQUESTS.iter().chain(&[Outcome::Adopted]) {
            self.refreshes.remove(&RefreshLabels {
                client: client.clone(),
                outcome: outcome.as_str(),
            });
        }
        self.fleet.forget(client);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

/// A client's series share its name rather than copy it.
impl EncodeLabelValue for ClientName {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        encoder.write_str(self.as_str())
    }
}

/// The `limit` label of `tokend_socket_refusals_total`: the settings, by their names.
const LIMIT_CONNECTIONS: &str = "max_connections";
const LIMIT_PER_USER: &str = "max_connections_per_user";

fn label(client: &ClientName) -> ClientLabel {
    ClientLabel { client: client.clone() }
}

// Fleet mode's series: whether the store is reachable and what is asked of it, and per client
// how the fleet served it (store hits and misses, locks won and lost, tokens adopted, values
// that would not open, requests sent to the IdP because the store was down), with the delay
// from a token's issue to its adoption elsewhere.

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommandLabels {
    command: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClientResult {
    client: ClientName,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClientVia {
    client: ClientName,
    via: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClientReason {
    client: ClientName,
    reason: &'static str,
}

pub struct FleetMetrics {
    store_up: Gauge,
    commands: Family<CommandLabels, Counter>,
    reads: Family<ClientResult, Counter>,
    locks: Family<ClientResult, Counter>,
    adoptions: Family<ClientVia, Counter>,
    seal_failures: Family<ClientReason, Counter>,
    fallbacks: Family<ClientLabel, Counter>,
    delay: Histogram,
}

impl FleetMetrics {
    pub fn register(registry: &mut Registry) -> FleetMetrics {
        let m = FleetMetrics {
            store_up: Gauge::default(),
            commands: Family::default(),
            reads: Family::default(),
            locks: Family::default(),
            adoptions: Family::default(),
            seal_failures: Family::default(),
            fallbacks: Family::default(),
            // 1 ms to 32 s.
            delay: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
        };
        registry.register(
            "fleet_store_up",
            "Fleet mode: 1 while the last command to the fleet store succeeded, 0 while it cannot be reached or refuses",
            m.store_up.clone(),
        );
        registry.register(
            "fleet_store_commands",
            "Fleet mode: commands sent to the fleet store, by command (get, set, lock, unlock, publish) and result (ok, error)",
            m.commands.clone(),
        );
        registry.register(
            "fleet_reads",
            "Fleet mode: reads of a client's token in the store, by result (hit: a newer usable token was there; miss: none)",
            m.reads.clone(),
        );
        registry.register(
            "fleet_locks",
            "Fleet mode: attempts at a client's refresh lock, by result (won: this host asks the IdP; lost: another host does)",
            m.locks.clone(),
        );
        registry.register(
            "fleet_adoptions",
            "Fleet mode: tokens another host obtained that this host took and published, by how they came (store, announcement)",
            m.adoptions.clone(),
        );
        registry.register(
            "fleet_seal_failures",
            "Fleet mode: values in the store that did not open, by reason (other_key, tampered, garbled); none is ever published",
            m.seal_failures.clone(),
        );
        registry.register(
            "fleet_fallbacks",
            "Fleet mode: token requests sent to the IdP directly because the fleet store could not be used",
            m.fallbacks.clone(),
        );
        registry.register(
            "fleet_adoption_delay_seconds",
            "Fleet mode: from a token's issue on another host to its publication on this one",
            m.delay.clone(),
        );
        m
    }

    pub fn store_up(&self, up: bool) {
        self.store_up.set(i64::from(up));
    }

    pub fn command(&self, command: &'static str, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.commands.get_or_create(&CommandLabels { command, result }).inc();
    }

    pub fn read(&self, client: &ClientName, hit: bool) {
        let result = if hit { "hit" } else { "miss" };
        self.reads
            .get_or_create(&ClientResult {
                client: client.clone(),
                result,
            })
            .inc();
    }

    pub fn lock(&self, client: &ClientName, won: bool) {
        let result = if won { "won" } else { "lost" };
        self.locks
            .get_or_create(&ClientResult {
                client: client.clone(),
                result,
            })
            .inc();
    }

    /// A token adopted `via` the store or an announcement, `delay` after it was issued.
    pub fn adoption(&self, client: &ClientName, via: &'static str, delay: std::time::Duration) {
        self.adoptions
            .get_or_create(&ClientVia {
                client: client.clone(),
                via,
            })
            .inc();
        self.delay.observe(delay.as_secs_f64());
    }

    pub fn seal_failure(&self, client: &ClientName, reason: &'static str) {
        self.seal_failures
            .get_or_create(&ClientReason {
                client: client.clone(),
                reason,
            })
            .inc();
    }

    pub fn fallback(&self, client: &ClientName) {
        self.fallbacks.get_or_create(&label(client)).inc();
    }

    /// Drops a removed client's series.
    pub fn forget(&self, client: &ClientName) {
        self.fallbacks.remove(&label(client));
        let client = client.clone();
        for (family, results) in [(&self.reads, ["hit", "miss"]), (&self.locks, ["won", "lost"])] {
            for result in results {
                family.remove(&ClientResult {
                    client: client.clone(),
                    result,
                });
            }
        }
        for via in ["store", "announcement"] {
            self.adoptions.remove(&ClientVia {
                client: client.clone(),
                via,
            });
        }
        for reason in ["other_key", "tampered", "garbled", "randomness"] {
            self.seal_failures.remove(&ClientReason {
                client: client.clone(),
                reason,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_metric_with_its_labels() {
        let m = Metrics::new();
        let c = ClientName::new("billing").unwrap();
        m.token_published(&c, UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        m.refresh(&c, Outcome::Refreshed);
        m.refresh_failures(&c, 3);
        let endpoint = Url::parse("https://idp.example/oauth/token?tenant=x#f").unwrap();
        m.request_duration(&endpoint, Duration::from_millis(40));
        m.output_write(&c, Path::new("/run/billing/token"), false);
        m.output_write(&c, Path::new("/run/billing/token.json"), true);
        m.state_write(&c, false);
        m.request(200);
        m.request(200);
        m.request(403);
        m.connection_error("header_timeout");
        m.socket_refusal(true);
        m.socket_refusal(true);
        m.refresh(&c, Outcome::Adopted);
        m.fleet.store_up(true);
        m.fleet.command("get", true);
        m.fleet.command("lock", false);
        m.fleet.read(&c, true);
        m.fleet.lock(&c, false);
        m.fleet.adoption(&c, "announcement", Duration::from_millis(3));
        m.fleet.seal_failure(&c, "tampered");
        m.fleet.fallback(&c);
        let text = m.render();
        for line in [
            "tokend_token_expiry_timestamp_seconds{client=\"billing\"} 1700000000.0",
            "tokend_refreshes_total{client=\"billing\",outcome=\"refreshed\"} 1",
            "tokend_refresh_failures{client=\"billing\"} 3",
            "tokend_socket_refusals_total{limit=\"max_connections\"} 2",
            "tokend_socket_refusals_total{limit=\"max_connections_per_user\"} 0",
            "tokend_refresh_duration_seconds_count{endpoint=\"https://idp.example/oauth/token\"} 1",
            "tokend_output_write_errors_total{client=\"billing\"} 1",
            "tokend_output_write_failing{client=\"billing\",path=\"/run/billing/token\"} 1",
            "tokend_output_write_failing{client=\"billing\",path=\"/run/billing/token.json\"} 0",
            "tokend_state_write_errors_total{client=\"billing\"} 1",
            "tokend_state_write_failing{client=\"billing\"} 1",
            "tokend_socket_requests_total{status=\"200\"} 2",
            "tokend_socket_requests_total{status=\"403\"} 1",
            "tokend_socket_connection_errors_total{reason=\"header_timeout\"} 1",
            "tokend_refreshes_total{client=\"billing\",outcome=\"adopted\"} 1",
            "tokend_fleet_store_up 1",
            "tokend_fleet_store_commands_total{command=\"get\",result=\"ok\"} 1",
            "tokend_fleet_store_commands_total{command=\"lock\",result=\"error\"} 1",
            "tokend_fleet_reads_total{client=\"billing\",result=\"hit\"} 1",
            "tokend_fleet_locks_total{client=\"billing\",result=\"lost\"} 1",
            "tokend_fleet_adoptions_total{client=\"billing\",via=\"announcement\"} 1",
            "tokend_fleet_seal_failures_total{client=\"billing\",reason=\"tampered\"} 1",
            "tokend_fleet_fallbacks_total{client=\"billing\"} 1",
            "tokend_fleet_adoption_delay_seconds_count 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        // Written again: no longer failing; the errors stay counted.
        m.output_write(&c, Path::new("/run/billing/token"), true);
        m.state_write(&c, true);
        let text = m.render();
        for line in [
            "tokend_output_write_failing{client=\"billing\",path=\"/run/billing/token\"} 0",
            "tokend_output_write_errors_total{client=\"billing\"} 1",
            "tokend_state_write_failing{client=\"billing\"} 0",
            "tokend_state_write_errors_total{client=\"billing\"} 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        m.forget_outputs(&c);
        assert!(!m.render().contains("/run/billing"));
        m.output_write(&c, Path::new("/run/billing/token"), false);
        m.forget(&c);
        assert!(!m.render().contains("billing"));
    }
}
