//! tokend keeps OAuth 2.0 client-credentials access tokens fresh for everything on a host.
//!
//! Data flows one way, from configuration to readers:
//!
//! ```text
//! config.yaml ──config──▶ Config { clients, socket, access }
//!                            │ refresh::Group::from_clients (identical requests share one)
//!                            ▼
//!   one refresh::Runner task per group ──oauth──▶ IdP
//!     │  oauth::discovery (issuer → endpoints), oauth::assertion (private_key_jwt),
//!     │  oauth::client (TLS, mTLS, proxy), oauth::validate (JWKS) before publishing
//!     │  schedule: when to refresh / retry (wall clock)
//!     ▼
//!   store (watch per client) ──▶ server: HTTP on a Unix socket, callers checked by SO_PEERCRED
//!   output (atomic files: raw/json/env/header)      (socket_client: `tokend get`, `status`)
//!   state  (last token per client, for restarts)    metrics (Prometheus, on the socket)
//! ```
//!
//! `app` owns the tasks and the socket and handles signals (SIGHUP reload, SIGTERM stop);
//! `check` validates a config without running it; `dev` is the built-in development issuer.

pub mod app;
pub mod check;
pub mod clock;
pub mod config;
pub mod dev;
pub mod fingerprint;
pub mod logging;
pub mod metrics;
pub mod oauth;
pub mod outcome;
pub mod output;
pub mod refresh;
pub mod schedule;
pub mod secret;
pub mod server;
pub mod socket_client;
pub mod state;
pub mod store;
pub mod systemd;
pub mod token;
pub mod url_policy;
