//! Where a group's tokens come from. The loop only asks a `TokenSource` for a token; the IdP
//! (`IdpSource`, the client-credentials exchange) is one kind of source, and the fleet
//! (`fleet::FleetSource`, which shares the IdP's tokens among hosts) wraps it without the loop
//! knowing more than that a source may offer a token before it is asked.

use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;

use crate::config::RequestSpec;
use crate::metrics::Metrics;
use crate::oauth::exchange::{self, Terms};
use crate::oauth::issuer::IssuerCache;
use crate::oauth::{FetchError, HttpClients};
use crate::token::Token;

use super::Group;

pub trait TokenSource: Send {
    /// Asks for a new token; `sent_at` is the wall-clock time its lifetime counts from, and
    /// `current` the token the group holds now (a fleet takes a token newer than it). The
    /// future may be dropped (a reload, a shutdown): it must leave nothing half-done but caches.
    fn obtain(
        &mut self,
        sent_at: SystemTime,
        current: Option<Arc<Token>>,
    ) -> impl Future<Output = Result<Token, FetchError>> + Send;

    /// Resolves when the source has a token newer than `current` to hand over before the
    /// group is due (a fleet's announcement of one that another host got): the loop then asks
    /// for it at once. The IdP never offers. The future may be dropped at any point.
    fn offered(&mut self, _current: Option<Arc<Token>>) -> impl Future<Output = ()> + Send {
        std::future::pending()
    }

    /// Checks a saved token as a new one would be (`validate:`) before it is reused; Ok when
    /// there is nothing to check.
    fn check_saved(&mut self, _token: &Token) -> impl Future<Output = Result<(), FetchError>> + Send {
        std::future::ready(Ok(()))
    }
}

/// Tokens from the group's IdP, by the request its spec describes.
pub struct IdpSource {
    spec: Arc<RequestSpec>,
    http: HttpClients,
    /// The issuer's metadata and keys, kept between requests.
    issuer: IssuerCache,
    terms: Terms,
    /// Each request's duration, by token endpoint.
    metrics: Arc<Metrics>,
}

impl IdpSource {
    pub fn new(group: &Group, http: &HttpClients, metrics: Arc<Metrics>) -> IdpSource {
        IdpSource {
            spec: group.spec.clone(),
            http: http.clone(),
            issuer: IssuerCache::default(),
            terms: Terms {
                timeouts: group.timeouts(),
                default_lifetime: group.default_lifetime(),
            },
            metrics,
        }
    }
}

impl TokenSource for IdpSource {
    async fn obtain(&mut self, sent_at: SystemTime, _current: Option<Arc<Token>>) -> Result<Token, FetchError> {
        let started = std::time::Instant::now();
        let result = exchange::obtain(&self.spec, &self.http, &mut self.issuer, self.terms, sent_at).await;
        self.metrics
            .request_duration(self.spec.grant.endpoint.url(), started.elapsed());
        result
    }

    async fn check_saved(&mut self, token: &Token) -> Result<(), FetchError> {
        exchange::validate_saved(&self.spec, &self.http, &mut self.issuer, self.terms, token).await
    }
}
