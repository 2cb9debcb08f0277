//! Where a group's tokens come from. The loop only asks a `TokenSource` for a token; the IdP
//! (`IdpSource`, the client-credentials exchange) is one kind of source, and another (say, a
//! tokend that serves tokens to a fleet) can slot in beside it without touching the loop.

use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;

use crate::config::RequestSpec;
use crate::oauth::exchange::{self, Terms};
use crate::oauth::issuer::IssuerCache;
use crate::oauth::{FetchError, HttpClients};
use crate::token::Token;

use super::Group;

pub trait TokenSource: Send {
    /// Asks for a new token; `sent_at` is the wall-clock time its lifetime counts from. The
    /// future may be dropped (a reload, a shutdown): it must leave nothing half-done but caches.
    fn obtain(&mut self, sent_at: SystemTime) -> impl Future<Output = Result<Token, FetchError>> + Send;

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
}

impl IdpSource {
    pub fn new(group: &Group, http: &HttpClients) -> IdpSource {
        IdpSource {
            spec: group.spec.clone(),
            http: http.clone(),
            issuer: IssuerCache::default(),
            terms: Terms {
                timeouts: group.timeouts(),
                default_lifetime: group.default_lifetime(),
            },
        }
    }
}

impl TokenSource for IdpSource {
    async fn obtain(&mut self, sent_at: SystemTime) -> Result<Token, FetchError> {
        exchange::obtain(&self.spec, &self.http, &mut self.issuer, self.terms, sent_at).await
    }

    async fn check_saved(&mut self, token: &Token) -> Result<(), FetchError> {
        exchange::validate_saved(&self.spec, &self.http, &mut self.issuer, self.terms, token).await
    }
}
