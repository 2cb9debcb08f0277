//! tokend keeps OAuth 2.0 client-credentials access tokens fresh for everything on a host.
//!
//! Data flows one way, from configuration to readers:
//!
//! ```text
//! config.yaml ──config──▶ Config { clients }
//!                            │ refresh::Group::from_clients (identical grants share a request)
//!                            ▼
//!              one refresh::Runner task per group ── oauth (request/response/client) ──▶ IdP
//!                            │  schedule: when to refresh / retry (wall clock)
//!                            ▼
//!               store (watch per client) ──▶ (socket API, readiness, `once`)
//!               output (atomic files: raw/json/env/header)
//!               state  (last token per client, for restarts)
//! ```
//!
//! `app` owns the tasks and handles signals (SIGHUP reload, SIGTERM stop); `check` validates a
//! config without running it; `dev` is the built-in development issuer.

pub mod app;
pub mod check;
pub mod config;
pub mod dev;
pub mod logging;
pub mod metrics;
pub mod oauth;
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
