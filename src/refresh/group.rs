//! Clients that send the same request form a group: one request, one token, published to every
//! member. The group's policy is derived from its members, never copied from them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Client, RequestSpec, RetryPolicy, Timeouts};
use crate::refresh::schedule::{self, RefreshPlan};
use crate::token::Token;

/// Clients that receive the same token: they share one `RequestSpec`.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub spec: Arc<RequestSpec>,
    /// The first member in config order: its timeouts and retry policy are the group's.
    lead: Arc<Client>,
    /// The other members, in config order.
    others: Vec<Arc<Client>>,
}

impl Group {
    /// Groups clients that send the same request (`spec ==`: the same grant, authenticated the
    /// same way with the same credentials, over the same transport, validated by the same
    /// rules), in config order.
    pub fn from_clients(clients: &[Arc<Client>]) -> Vec<Group> {
        let mut groups: Vec<Group> = Vec::new();
        let mut index: HashMap<&RequestSpec, usize> = HashMap::new();
        for client in clients {
            match index.get(&*client.spec) {
                Some(&i) => groups[i].others.push(client.clone()),
                None => {
                    index.insert(&client.spec, groups.len());
                    groups.push(Group {
                        spec: client.spec.clone(),
                        lead: client.clone(),
                        others: Vec::new(),
                    });
                }
            }
        }
        groups
    }

    /// Every member, in config order.
    pub fn members(&self) -> impl Iterator<Item = &Arc<Client>> {
        std::iter::once(&self.lead).chain(&self.others)
    }

    pub fn timeouts(&self) -> Timeouts {
        self.lead.timeouts
    }

    pub fn retry(&self) -> RetryPolicy {
        self.lead.retry
    }

    /// The shortest lifetime any member assumes for a token whose response states none.
    pub fn default_lifetime(&self) -> Duration {
        self.members()
            .map(|m| m.refresh.default_lifetime)
            .fold(self.lead.refresh.default_lifetime, Duration::min)
    }

    /// When to refresh `token`: the earliest any member's policy asks for. Deterministic for a
    /// given token within a run, so a reload that keeps the token keeps the schedule. Shared
    /// with a fleet, deterministic across hosts too: every host holding the token plans the
    /// same moment, so the fleet's refresh does not come earlier the more hosts it has (with a
    /// sample per host, the earliest of N would be due near `at - jitter`); the fleet's lock
    /// spreads the hosts instead.
    pub fn plan(&self, token: &Token) -> RefreshPlan {
        let sample = if self.spec.fleet.is_some() {
            token.fleet_jitter_sample()
        } else {
            token.jitter_sample()
        };
        let plan = |m: &Arc<Client>| schedule::refresh_at(token.issued_at, token.expires_at, &m.refresh, sample);
        self.members()
            .map(plan)
            .fold(plan(&self.lead), |a, b| if b.at < a.at { b } else { a })
    }

    /// The member names, for logs: `billing` or `billing,reports`.
    pub fn label(&self) -> String {
        self.members().map(|m| m.name.as_str()).collect::<Vec<_>>().join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_str;
    use std::path::Path;
    use std::time::UNIX_EPOCH;

    fn groups(yaml: &str) -> Vec<Group> {
        let config = parse_str(yaml, Path::new("/etc/tokend/config.yaml")).unwrap();
        Group::from_clients(&config.clients)
    }

    #[test]
    fn equal_requests_share_a_group_and_its_policy_comes_from_the_members() {
        let g = groups(
            "\
defaults: { token_url: https://idp.example/t, client_id: a, client_secret: { file: /s } }
clients:
  one: { audience: https://x/, retry: { initial: 2s, max: 10s }, refresh: { at: 80%, jitter: 0%, default_lifetime: 10m } }
  other: { audience: https://y/ }
  two: { audience: https://x/, refresh: { at: 50%, jitter: 0%, default_lifetime: 1m }, outputs: [{ path: /run/t }] }
",
        );
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].label(), "one,two");
        assert_eq!(g[1].label(), "other");
        // The lead (first in config order) decides retries; refresh plans take the earliest.
        assert_eq!(g[0].retry().initial, Duration::from_secs(2));
        assert_eq!(g[0].default_lifetime(), Duration::from_secs(60));
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let token = Token::for_test("t", t0, Duration::from_secs(1000));
        assert_eq!(g[0].plan(&token).at, t0 + Duration::from_secs(500));
        // `other` keeps the defaults: 80% ±10%, at least 2m before expiry.
        let other = g[1].plan(&token).at.duration_since(t0).unwrap();
        assert!((700..=880).contains(&other.as_secs()), "{other:?}");
    }
}
