//! Fleet mode's Prometheus series: whether the store is reachable and what is asked of it, and
//! per client how the fleet served it (store hits and misses, locks won and lost, tokens
//! adopted, values that would not open, requests sent to the IdP because the store was down),
//! with the delay from a token's issue to its adoption elsewhere.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::config::ClientName;
use crate::metrics::{ClientLabel, label};

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
