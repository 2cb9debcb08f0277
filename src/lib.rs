//! tokend keeps OAuth 2.0 client-credentials access tokens fresh for everything on a host.
//!
//! Data flows one way, from configuration to readers:
//!
//! ```text
//! config.yaml ─▶ config: raw ─inherit─▶ validator ─▶ model::Config { clients, socket, access }
//!                  (each Client holds an Arc<RequestSpec>; equal requests share one)
//!                            │ refresh::Group::from_clients (one group per RequestSpec)
//!                            ▼
//!   one refresh::Runner task per group: the loop (due time, failures), on a clock::Clock
//!     │ (asleep until its deadline; clock::watcher, one thread, reports steps and suspends)
//!     │ seed ─ first token: the store after a reload, a state file after a restart (pure)
//!     │ TokenSource::obtain ─ IdpSource ─▶ oauth::exchange ─▶ IdP
//!     │      (oauth::issuer caches discovery and JWKS; oauth::error classifies failures)
//!     │ schedule ─ when to refresh / retry (pure)
//!     ▼
//!   refresh::Publisher ─▶ store (watch per client) ─▶ server: HTTP on a Unix socket
//!                    ├──▶ output (atomic files: raw/json/env/header)
//!                    └──▶ state (last token + fingerprint, for restarts)     metrics
//! ```
//!
//! `app` owns the tasks and the socket and handles signals (SIGHUP reload, SIGTERM stop);
//! `preflight` reads every secret a config names before it is used (`run`, `once`, a reload) or
//! approved; `check` validates a config without running it; `dev` is the built-in development
//! issuer; `socket_client` is `tokend get` and `status`. `fuzzing` is only for the fuzz targets
//! in `fuzz/`.

pub mod app;
pub mod check;
pub mod cli;
pub mod clock;
pub mod config;
pub mod dev;
pub mod fingerprint;
pub mod fleet;
#[doc(hidden)]
pub mod fuzzing;
pub mod hooks;
pub mod identity;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod oauth;
pub mod outcome;
pub mod output;
pub mod preflight;
pub mod prepare;
pub mod proxy;
pub mod refresh;
pub mod schedule;
pub mod secret;
pub mod server;
pub mod socket_client;
pub mod state;
pub mod status;
pub mod store;
pub mod suggest;
pub mod systemd;
pub mod template;
pub mod token;
pub mod url_policy;
pub mod watch;
