//! The refresh pipeline. Clients whose requests are equal form a `Group` and share one token;
//! each group runs as its own task (`Runner`), so a slow or failing IdP for one group never
//! delays another. A task seeds itself from what is already known (`seed`: the previous task's
//! token after a reload, a state file after a restart), then sleeps on the wall clock until the
//! token is due, asks its `TokenSource` for a new one, hands it to its `Publisher` (store,
//! outputs, state files), and backs off on failure while the old token keeps being served.

pub mod clock;
pub mod fingerprint;
mod group;
mod publisher;
mod runner;
pub mod schedule;
mod seed;
mod source;
pub(crate) mod state;

pub use group::Group;
pub use publisher::{Attempts, OUTPUT_RETRY_INITIAL, OUTPUT_RETRY_MAX, Publisher};
pub use runner::{Runner, backoff};
pub use seed::{MIN_SAVED_VALIDITY, Seed, kept};
pub use source::{IdpSource, TokenSource};
