//! Where a group's first token comes from, decided without I/O: after a reload, the token the
//! previous task held for the same request (in the store); after a restart, a still-valid token
//! from a member's state file; else none, and a request is needed.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::config::ClientName;
use crate::metrics::outcome::Outcome;
use crate::refresh::fingerprint::Fingerprint;
use crate::refresh::state::{Saved, Unusable};
use crate::store::Snapshot;
use crate::token::Token;

/// A saved token is reused only if it stays valid at least this long: one that expires as it
/// is published helps no reader.
pub const MIN_SAVED_VALIDITY: Duration = Duration::from_secs(1);

/// What a group starts with.
#[derive(Debug, Default)]
pub struct Seed {
    /// The token to publish at once, and where it came from: `Outcome::Kept` (the store, after
    /// a reload) or `Outcome::Reused` (a state file).
    pub token: Option<(Arc<Token>, Outcome)>,
    /// Consecutive failures a reloaded grant carries over: its backoff grows on, but it tries
    /// once at once, since the reload may be the fix.
    pub failures: u32,
    /// State files that were read but not used, and why (for a debug line).
    pub passed_over: Vec<(ClientName, Unusable)>,
}

/// The seed from the members' snapshots in the store (`previous`, after a reload), for the
/// request with `fingerprint`, at `now`: the valid token that expires last, if any, and the
/// failures so far. Without a token, `or_saved` looks at the state files next.
pub fn kept(previous: &[Snapshot], fingerprint: &Fingerprint, now: SystemTime) -> Seed {
    let ours = || previous.iter().filter(|s| &*s.fingerprint == fingerprint.as_str());
    Seed {
        token: ours()
            .filter_map(|s| s.valid_token(now))
            .max_by_key(|t| t.expires_at)
            .map(|t| (t.clone(), Outcome::Kept)),
        failures: ours().map(|s| s.failures).max().unwrap_or(0),
        passed_over: Vec::new(),
    }
}

impl Seed {
    /// Whether the state files are worth reading: the store had no token.
    pub fn needs_saved(&self) -> bool {
        self.token.is_none()
    }

    /// Without a token yet, the valid one in the members' state files (`saved`) that expires
    /// last. The store's token always wins over the state files.
    pub fn or_saved(
        mut self,
        saved: Vec<(ClientName, Result<Saved, Unusable>)>,
        fingerprint: &Fingerprint,
        now: SystemTime,
    ) -> Seed {
        if !self.needs_saved() {
            return self;
        }
        let mut best: Option<Token> = None;
        for (name, file) in saved {
            match file.and_then(|saved| usable(saved, fingerprint, now)) {
                Ok(token) if best.as_ref().is_none_or(|b| token.expires_at > b.expires_at) => best = Some(token),
                Ok(_) | Err(Unusable::Missing) => {}
                Err(reason) => self.passed_over.push((name, reason)),
            }
        }
        self.token = best.map(|t| (Arc::new(t), Outcome::Reused));
        self
    }
}

fn usable(saved: Saved, fingerprint: &Fingerprint, now: SystemTime) -> Result<Token, Unusable> {
    if !fingerprint.accepts(&saved.fingerprint) {
        return Err(Unusable::OtherGrant);
    }
    if !saved.token.is_valid_at(now + MIN_SAVED_VALIDITY) {
        return Err(Unusable::Expired);
    }
    Ok(saved.token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_str;
    use std::path::Path;
    use std::time::UNIX_EPOCH;

    const NOW: Duration = Duration::from_secs(1_800_000_000);

    fn fingerprint(audience: &str) -> Fingerprint {
        let yaml = format!(
            "clients:\n  c:\n    token_url: https://idp.example/t\n    client_id: a\n    client_secret: {{ file: /s }}\n    audience: {audience}\n"
        );
        let config = parse_str(&yaml, Path::new("/etc/tokend/config.yaml")).unwrap();
        Fingerprint::of(&config.clients[0].spec)
    }

    /// A token named `value` that expires `expires` seconds after NOW (negative: before).
    fn token(value: &str, expires: i64) -> Token {
        let issued = UNIX_EPOCH + NOW - Duration::from_secs(600);
        Token::for_test(value, issued, Duration::from_secs((600 + expires) as u64))
    }

    fn snapshot(fp: &Fingerprint, token: Option<Token>, failures: u32) -> Snapshot {
        Snapshot {
            token: token.map(Arc::new),
            fingerprint: fp.shared(),
            failures,
            ..Snapshot::default()
        }
    }

    fn file(fingerprint: &str, token: Token) -> Result<Saved, Unusable> {
        Ok(Saved {
            fingerprint: fingerprint.to_owned(),
            token,
        })
    }

    fn name(n: &str) -> ClientName {
        ClientName::new(n).unwrap()
    }

    #[test]
    fn seeding_table() {
        let fp = fingerprint("https://a/");
        let other = fingerprint("https://b/");
        let now = UNIX_EPOCH + NOW;
        type Case = (
            &'static str,
            Vec<Snapshot>,
            Vec<(ClientName, Result<Saved, Unusable>)>,
            Option<(&'static str, Outcome)>,
            u32,
            usize,
        );
        let cases: Vec<Case> = vec![
            (
                "a fresh start with nothing saved",
                vec![],
                vec![(name("x"), Err(Unusable::Missing))],
                None,
                0,
                0,
            ),
            (
                "a saved token is reused",
                vec![],
                vec![(name("x"), file(fp.as_str(), token("saved", 3600)))],
                Some(("saved", Outcome::Reused)),
                0,
                0,
            ),
            (
                "the member whose token expires last wins",
                vec![],
                vec![
                    (name("x"), file(fp.as_str(), token("early", 600))),
                    (name("y"), file(fp.as_str(), token("late", 3000))),
                    (name("z"), file(fp.as_str(), token("middle", 1200))),
                ],
                Some(("late", Outcome::Reused)),
                0,
                0,
            ),
            (
                "another request's token is passed over",
                vec![],
                vec![(name("x"), file(other.as_str(), token("foreign", 3600)))],
                None,
                0,
                1,
            ),
            (
                "a token about to expire is passed over",
                vec![],
                vec![
                    (name("x"), file(fp.as_str(), token("expired", -5))),
                    (name("y"), file(fp.as_str(), token("now", 0))),
                ],
                None,
                0,
                2,
            ),
            (
                "an unreadable file is passed over, a readable one used",
                vec![],
                vec![
                    (name("x"), Err(Unusable::Unreadable("not a state file".into()))),
                    (name("y"), file(fp.as_str(), token("good", 60))),
                ],
                Some(("good", Outcome::Reused)),
                0,
                1,
            ),
            (
                "a reload keeps the store's token over a state file",
                vec![snapshot(&fp, Some(token("held", 100)), 0)],
                vec![(name("x"), file(fp.as_str(), token("saved", 3600)))],
                Some(("held", Outcome::Kept)),
                0,
                0,
            ),
            (
                "the store's token of another request is not kept",
                vec![snapshot(&other, Some(token("foreign", 3600)), 0)],
                vec![(name("x"), file(fp.as_str(), token("saved", 600)))],
                Some(("saved", Outcome::Reused)),
                0,
                0,
            ),
            (
                "an expired token in the store is not kept",
                vec![snapshot(&fp, Some(token("stale", -1)), 0)],
                vec![],
                None,
                0,
                0,
            ),
            (
                "a failing grant carries its failures over, with its token",
                vec![snapshot(&fp, Some(token("held", 100)), 2), snapshot(&fp, None, 5)],
                vec![],
                Some(("held", Outcome::Kept)),
                5,
                0,
            ),
            (
                "a failing grant without a token still carries its failures",
                vec![snapshot(&fp, None, 3), snapshot(&other, None, 9)],
                vec![],
                None,
                3,
                0,
            ),
        ];
        for (what, previous, saved, expected, failures, passed_over) in cases {
            let seed = kept(&previous, &fp, now).or_saved(saved, &fp, now);
            let got = seed
                .token
                .as_ref()
                .map(|(t, o)| (secrecy::ExposeSecret::expose_secret(&t.access_token).to_owned(), *o));
            assert_eq!(got, expected.map(|(t, o)| (t.to_owned(), o)), "{what}");
            assert_eq!(seed.failures, failures, "{what}");
            assert_eq!(seed.passed_over.len(), passed_over, "{what}: {:?}", seed.passed_over);
        }
    }

    /// State files saved by the previous release (fingerprint version 1) are still reused.
    #[test]
    fn the_previous_fingerprint_encoding_is_accepted() {
        let config = parse_str(
            "clients:\n  bare:\n    token_url: https://idp.example/oauth/token\n    client_id: app\n    client_secret: { file: /s }\n",
            Path::new("/etc/tokend/config.yaml"),
        )
        .unwrap();
        let fp = Fingerprint::of(&config.clients[0].spec);
        let v1 = "48a7ca0f78aaff8588086e93932ad2be64af4e00623b7f76e5f7889448f21ea4";
        let saved = vec![(name("bare"), file(v1, token("old", 600)))];
        let seed = kept(&[], &fp, UNIX_EPOCH + NOW).or_saved(saved, &fp, UNIX_EPOCH + NOW);
        assert_eq!(seed.token.map(|(_, o)| o), Some(Outcome::Reused));
    }
}
