//! tokend keeps OAuth 2.0 client-credentials access tokens fresh for everything on a host.
//!
//! Data flows one way, from configuration to readers; each folder is one stage:
//!
//! ```text
//! config.yaml ─▶ config/  raw ─inherit─▶ validator ─▶ model::Config { clients, socket, access }
//!                  (each Client holds an Arc<RequestSpec>; equal requests share one)
//!                            │ refresh::Group::from_clients (one group per RequestSpec)
//!                            ▼
//! refresh/  one Runner task per group: the loop (due time, failures), on a clock::Clock
//!     │ seed ─ first token: the store after a reload, a state file after a restart (pure)
//!     │ TokenSource::obtain ─ IdpSource ─▶ oauth/ (exchange, discovery, validation) ─▶ IdP
//!     │      └ fleet/ FleetSource wraps it: share one refresh per lifetime through Redis
//!     │ schedule ─ when to refresh / retry (pure)
//!     ▼
//!   refresh::Publisher ─▶ store (watch per client) ─▶ server/ (HTTP on a Unix socket)
//!                    │                           └──▶ proxy/  (adds the token to requests)
//!                    ├──▶ output/ (atomic files: raw/json/env/header/template; hooks)
//!                    └──▶ refresh::state (last token + fingerprint, for restarts)
//! ```
//!
//! Around the flow: `daemon/` owns the tasks and the socket and handles signals (SIGHUP reload,
//! SIGTERM stop, `--watch-config`, systemd's notifications), and with `daemon::preflight` reads
//! every secret a config names before it is used; `cli/` is the command line (`check`,
//! `get`/`status` over the socket, `prepare-dirs`, `dev`, the built-in development issuer).
//! `token` and `secret` are the values everything passes around, `metrics` and `logging` what
//! tokend tells its operators. `fuzzing` is only for the fuzz targets in `fuzz/`.

pub mod cli;
pub mod config;
pub mod daemon;
pub mod fleet;
#[doc(hidden)]
pub mod fuzzing;
pub mod logging;
pub mod metrics;
pub mod oauth;
pub mod output;
pub mod proxy;
pub mod refresh;
pub mod secret;
pub mod server;
pub mod store;
pub mod token;
