//! The OAuth 2.0 client-credentials exchange (RFC 6749 §4.4). `exchange` runs one request from
//! start to finish; below it, free of I/O and tested with plain values: `request` (the form and
//! the Basic header), `assertion` (signed client assertions), `response` (§5.1/§5.2 answers),
//! `lifetime` (how long a token lives), `scope` (what was granted), `jwt` (claims, unverified), `discovery` (metadata
//! documents) and `validate` (a token against the issuer's keys). `client` is the HTTP side,
//! `issuer` caches the issuer's documents, and `error` says how each failure is retried.
//!
//! Dependencies point one way: exchange → issuer → client → error → the pure modules.

pub(crate) mod assertion;
pub(crate) mod client;
pub(crate) mod discovery;
pub(crate) mod error;
pub(crate) mod exchange;
pub mod issuer;
pub(crate) mod jwt;
pub mod lifetime;
pub(crate) mod request;
pub mod response;
pub(crate) mod scope;
pub(crate) mod validate;

pub use client::{ClientSettings, HttpClient, HttpClients};
pub use error::{ErrorClass, FetchError};
pub use request::TokenRequest;
pub use response::{IssuedToken, ResponseError};
