//! The environment suites: each starts something heavy around the real binary, and runs only
//! where that can run, saying why it skips otherwise (CI sets the `TOKEND_REQUIRE_*` variables,
//! so that there a missing tool fails instead).
//!
//! - `booted`: the Debian package under a booted systemd (debootstrap + systemd-nspawn);
//! - `kubernetes`: the container image and the manifests, with podman (`podman kube play`);
//! - `interop_suite`: a certified OAuth server (oidc-provider behind nginx) and others;
//! - `soak`: load over minutes;
//! - `prometheus`: the alert rules in promtool and in a real Prometheus scraping tokend.

mod booted;
pub(crate) mod interop_suite;
mod kubernetes;
mod prometheus;
mod soak;
