//! What became of an attempt to get a token, named once: the `outcome` field of log lines and
//! the `outcome` label of `tokend_refreshes_total` both come from here.

use std::fmt;

use crate::oauth::ErrorClass;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// A new token was obtained (and published).
    Refreshed,
    /// Fleet mode: a token another host obtained was taken from the store (and published).
    Adopted,
    /// The request failed in a way that may pass (network, 5xx, a garbled answer).
    Failed,
    /// The token endpoint asked to slow down (429, 503, `slow_down`).
    RateLimited,
    /// The request or its token was refused (bad credentials, failed validation).
    Rejected,
    /// A token saved by an earlier run was published; no request was sent.
    Reused,
    /// A reload left the grant unchanged, so its current token was kept.
    Kept,
}

impl Outcome {
    /// What a token request can end in: the values of the refresh metric's `outcome` label.
    pub const OF_REQUESTS: [Outcome; 4] = [
        Outcome::Refreshed,
        Outcome::Failed,
        Outcome::RateLimited,
        Outcome::Rejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Refreshed => "refreshed",
            Outcome::Adopted => "adopted",
            Outcome::Failed => "failed",
            Outcome::RateLimited => "rate_limited",
            Outcome::Rejected => "rejected",
            Outcome::Reused => "reused",
            Outcome::Kept => "kept",
        }
    }
}

/// A failed request's outcome, by how it is retried.
impl From<ErrorClass> for Outcome {
    fn from(class: ErrorClass) -> Outcome {
        match class {
            ErrorClass::Transient => Outcome::Failed,
            ErrorClass::RateLimited => Outcome::RateLimited,
            ErrorClass::Permanent => Outcome::Rejected,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
