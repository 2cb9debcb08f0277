//! Where the refresh tasks get their tokens, and the wall clock they plan on. `Upstream` is the
//! daemon's: the IdP (through the fleet, for a group shared with it) on the system clock. The
//! daemon's own tests give scripted ones, and drive it in-process under paused time.

use std::sync::Arc;

use tracing::{error, info};

use crate::config::{self, Config};
use crate::fleet::{Member, Source};
use crate::metrics::Metrics;
use crate::oauth::HttpClients;
use crate::refresh::clock::Clock;
use crate::refresh::{Group, IdpSource, TokenSource};
use crate::store::Store;

/// The refresh tasks' tokens and clock.
pub trait Sources: Send + 'static {
    type Source: TokenSource + 'static;
    /// The wall clock the tasks plan on.
    fn clock(&self) -> Clock;
    /// A group's source of tokens.
    fn source(&self, group: &Arc<Group>, clock: &Clock) -> Self::Source;
    /// A reload: the new configuration's request limits and fleet, before its groups start.
    fn reconfigure(&mut self, config: &Config, store: &Arc<Store>);
}

/// The IdP, through the fleet for shared groups, on the system clock.
pub struct Upstream {
    http: HttpClients,
    metrics: Arc<Metrics>,
    /// This host's part in the fleet, with `fleet:`.
    fleet: Option<Member>,
}

impl Upstream {
    pub fn new(config: &Config, metrics: &Arc<Metrics>, store: &Arc<Store>) -> Upstream {
        Upstream {
            http: HttpClients::new(config.max_concurrent_requests),
            metrics: metrics.clone(),
            fleet: join_fleet(config.fleet.as_ref(), metrics, store),
        }
    }
}

impl Sources for Upstream {
    type Source = Source;

    fn clock(&self) -> Clock {
        Clock::system()
    }

    fn source(&self, group: &Arc<Group>, clock: &Clock) -> Source {
        let (http, metrics) = (&self.http, &self.metrics);
        let idp = IdpSource::new(group, http, metrics.clone());
        // Without the fleet, a refresher's client asks the IdP alone; a follower's has no
        // credentials, and serves no new token until a reload or a restart joins the fleet.
        let alone = if matches!(group.spec.credentials, config::Credentials::Follower) {
            "this follower's client gets no new token until the fleet can be joined (a reload or a restart tries again)"
        } else {
            "this client's tokens come from the IdP alone"
        };
        match (group.spec.fleet.is_some(), self.fleet.as_ref()) {
            (false, _) => Source::Idp(idp),
            (true, Some(member)) => member.source(group, idp, clock.clone()).unwrap_or_else(|e| {
                error!(client = %group.label(), error = %e, "this client cannot share through the fleet; {alone}");
                Source::Idp(IdpSource::new(group, http, metrics.clone()))
            }),
            (true, None) => {
                error!(client = %group.label(), "the fleet could not be joined; {alone}");
                Source::Idp(idp)
            }
        }
    }

    fn reconfigure(&mut self, config: &Config, store: &Arc<Store>) {
        self.http.set_max_concurrent_requests(config.max_concurrent_requests);
        // Changed fleet settings changed every shared group's spec: those were stopped, and
        // start again on the new member.
        if self.fleet.as_ref().map(|m| &m.config) != config.fleet.as_ref() {
            self.fleet = join_fleet(config.fleet.as_ref(), &self.metrics, store);
        }
    }
}

/// This host's part in the fleet `config` names, if any; one that cannot be joined (its key
/// became unreadable since the configuration was checked) is logged, and the shared groups ask
/// the IdP alone.
fn join_fleet(config: Option<&Arc<config::Fleet>>, metrics: &Arc<Metrics>, store: &Arc<Store>) -> Option<Member> {
    store.set_fleet(None);
    let config = config?;
    match Member::join(config, metrics) {
        Ok(member) => {
            let (shared, at) = (member.shared.clone(), config.redis.endpoint.describe());
            store.set_fleet(Some(Box::new(move || shared.report(at.clone()))));
            info!(
                fleet = "joined",
                store = %config.redis.endpoint.describe(),
                role = config.role.as_str(),
                namespace = %config.namespace,
                node = %member.shared.node,
                "fleet mode: tokens are shared through the fleet store"
            );
            Some(member)
        }
        Err(e) => {
            error!(error = %e, "cannot join the fleet");
            None
        }
    }
}
