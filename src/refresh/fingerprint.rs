//! What a token was obtained and accepted under, as a digest saved with it: a kept or saved
//! token is reused only by a request with the same fingerprint, so a changed grant or changed
//! validation rules never publish a token obtained under the old ones.
//!
//! The encoding is explicit and versioned: every field, in a fixed order, length-prefixed, under
//! a version line. It never depends on `Debug` output or on a map's iteration order, so a
//! toolchain or dependency upgrade cannot invalidate every saved token on every host at once (the
//! herd the refresh jitter exists to prevent). Credentials and transport are not part of it: a
//! rotated secret or a new proxy still gets the same token.
//!
//! Version 1, written by earlier releases, hashed a JSON object of the grant and, for validated
//! clients, the `Debug` text of the rules. It is reproduced here field by field, frozen, so that
//! state files saved by an earlier release are still reused after an upgrade.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use url::Url;

use crate::config::{Endpoint, Grant, JwsAlg, RequestSpec, Validation};

/// The current encoding's version, the first line of what is hashed.
const VERSION: &str = "tokend fingerprint 2";

/// The fingerprint of one request spec, in the current encoding and the previous one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    /// Shared with the store's snapshot of every member (one copy per group, not per client).
    current: Arc<str>,
    previous: String,
}

impl Fingerprint {
    pub fn of(spec: &RequestSpec) -> Fingerprint {
        Fingerprint {
            current: sha256_hex(&canonical(spec)).into(),
            previous: version1(spec),
        }
    }

    /// The current fingerprint: what new state files and the store record.
    pub fn as_str(&self) -> &str {
        &self.current
    }

    /// The current fingerprint, shared rather than copied.
    pub fn shared(&self) -> Arc<str> {
        self.current.clone()
    }

    /// Whether a token saved under `saved` was obtained under this spec, by the current
    /// encoding or by the one earlier releases wrote.
    pub fn accepts(&self, saved: &str) -> bool {
        saved == &*self.current || saved == self.previous
    }
}

/// SHA-256 of `bytes`, in lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    digest.as_ref().iter().fold(String::with_capacity(64), |mut hex, b| {
        let _ = write!(hex, "{b:02x}");
        hex
    })
}

/// The current canonical encoding: a version line, then one line per field in a fixed order,
/// `name value`, where a value is `-` (absent) or `LENGTH:BYTES`, and a list is `name COUNT`
/// followed by one indented value per item (two per `param`: its name and its value).
fn canonical(spec: &RequestSpec) -> Vec<u8> {
    let mut out = Canonical(Vec::with_capacity(512));
    out.line(VERSION);
    let g = &spec.grant;
    match &g.endpoint {
        Endpoint::TokenUrl(url) => out.value("token_url", Some(url.as_str())),
        Endpoint::Issuer(url) => out.value("issuer", Some(url.as_str())),
    }
    out.value("client_id", Some(&g.client_id));
    out.value("audience", g.audience.as_deref());
    out.value("scope", g.scope.as_deref());
    out.list("resource", g.resources.iter().map(String::as_str));
    out.value("organization", g.organization.as_deref());
    out.line(&format!("param {}", g.params.len()));
    for (name, value) in &g.params {
        out.item(name);
        out.item(value);
    }
    match &spec.validation {
        None => out.value("validate", None),
        Some(v) => {
            out.value("validate", Some("yes"));
            out.value("validate.issuer", v.issuer.as_deref());
            out.value("validate.jwks_uri", v.jwks_uri.as_ref().map(Url::as_str));
            out.list("validate.audience", v.audiences.iter().map(String::as_str));
            out.list("validate.algorithm", v.algorithms.iter().map(|a| a.as_str()));
            out.value("validate.leeway_ns", Some(&v.leeway.as_nanos().to_string()));
        }
    }
    out.0
}

struct Canonical(Vec<u8>);

impl Canonical {
    fn line(&mut self, text: &str) {
        self.0.extend_from_slice(text.as_bytes());
        self.0.push(b'\n');
    }

    fn value(&mut self, name: &str, value: Option<&str>) {
        self.0.extend_from_slice(name.as_bytes());
        self.0.push(b' ');
        self.encoded(value);
    }

    fn list<'a>(&mut self, name: &str, items: impl ExactSizeIterator<Item = &'a str>) {
        self.line(&format!("{name} {}", items.len()));
        for item in items {
            self.item(item);
        }
    }

    fn item(&mut self, value: &str) {
        self.0.extend_from_slice(b"  ");
        self.encoded(Some(value));
    }

    fn encoded(&mut self, value: Option<&str>) {
        match value {
            None => self.0.push(b'-'),
            Some(v) => {
                self.0.extend_from_slice(format!("{}:", v.len()).as_bytes());
                self.0.extend_from_slice(v.as_bytes());
            }
        }
        self.0.push(b'\n');
    }
}

/// Version 1, frozen: SHA-256 of the grant as compact JSON with sorted keys; for a validated
/// client, SHA-256 of that digest, `|`, and the rules as `#[derive(Debug)]` printed them.
fn version1(spec: &RequestSpec) -> String {
    let grant = version1_grant(&spec.grant);
    match &spec.validation {
        None => grant,
        Some(rules) => sha256_hex(format!("{grant}|{}", version1_rules(rules)).as_bytes()),
    }
}

fn version1_grant(g: &Grant) -> String {
    use serde_json::Value;
    let text = |s: &Option<String>| s.clone().map_or(Value::Null, Value::String);
    let (kind, url) = match &g.endpoint {
        Endpoint::TokenUrl(url) => ("token_url", url),
        Endpoint::Issuer(url) => ("issuer", url),
    };
    // A BTreeMap serializes in key order whatever serde_json's features: the order v1 hashed.
    let fields = std::collections::BTreeMap::from([
        (kind, Value::String(url.to_string())),
        ("client_id", Value::String(g.client_id.clone())),
        ("audience", text(&g.audience)),
        ("scope", text(&g.scope)),
        ("resources", Value::from(g.resources.clone())),
        ("organization", text(&g.organization)),
        (
            "params",
            Value::Array(
                g.params
                    .iter()
                    .map(|(k, v)| Value::from(vec![k.clone(), v.clone()]))
                    .collect(),
            ),
        ),
    ]);
    // Serializing strings and arrays into memory cannot fail.
    sha256_hex(serde_json::to_string(&fields).unwrap_or_default().as_bytes())
}

/// `format!("{:?}", rules)` as version 1 hashed it, rebuilt field by field (strings keep Rust's
/// string escaping, which is what `Debug` used).
fn version1_rules(v: &Validation) -> String {
    let text = |s: Option<&str>| s.map_or("None".to_owned(), |s| format!("Some({s:?})"));
    let url = |u: &Url| {
        let host = match u.host() {
            None => "None".to_owned(),
            Some(url::Host::Domain(d)) => format!("Some(Domain({d:?}))"),
            Some(url::Host::Ipv4(ip)) => format!("Some(Ipv4({ip}))"),
            Some(url::Host::Ipv6(ip)) => format!("Some(Ipv6({ip}))"),
        };
        format!(
            "Url {{ scheme: {:?}, cannot_be_a_base: {}, username: {:?}, password: {}, host: {host}, port: {}, path: {:?}, query: {}, fragment: {} }}",
            u.scheme(),
            u.cannot_be_a_base(),
            u.username(),
            text(u.password()),
            u.port().map_or("None".to_owned(), |p| format!("Some({p})")),
            u.path(),
            text(u.query()),
            text(u.fragment()),
        )
    };
    let list = |items: Vec<String>| format!("[{}]", items.join(", "));
    format!(
        "Validation {{ issuer: {}, jwks_uri: {}, audiences: {}, algorithms: {}, leeway: {} }}",
        text(v.issuer.as_deref()),
        v.jwks_uri
            .as_ref()
            .map_or("None".to_owned(), |u| format!("Some({})", url(u))),
        list(v.audiences.iter().map(|a| format!("{a:?}")).collect()),
        list(v.algorithms.iter().map(|a| version1_alg(*a).to_owned()).collect()),
        version1_duration(v.leeway),
    )
}

fn version1_alg(alg: JwsAlg) -> &'static str {
    match alg {
        JwsAlg::Rs256 => "Rs256",
        JwsAlg::Rs384 => "Rs384",
        JwsAlg::Rs512 => "Rs512",
        JwsAlg::Ps256 => "Ps256",
        JwsAlg::Ps384 => "Ps384",
        JwsAlg::Ps512 => "Ps512",
        JwsAlg::Es256 => "Es256",
        JwsAlg::Es384 => "Es384",
        JwsAlg::EdDsa => "EdDsa",
    }
}

/// A duration as `Debug` writes it: the largest unit with a non-zero integer part (s, ms, µs,
/// ns), then every significant fractional digit.
fn version1_duration(d: Duration) -> String {
    let (secs, nanos) = (d.as_secs(), d.subsec_nanos());
    let (integer, fraction, digits, unit) = if secs > 0 {
        (secs, nanos, 9, "s")
    } else if nanos >= 1_000_000 {
        (u64::from(nanos / 1_000_000), nanos % 1_000_000, 6, "ms")
    } else if nanos >= 1_000 {
        (u64::from(nanos / 1_000), nanos % 1_000, 3, "µs")
    } else {
        (u64::from(nanos), 0, 1, "ns")
    };
    if fraction == 0 {
        format!("{integer}{unit}")
    } else {
        let fraction = format!("{fraction:0digits$}");
        format!("{integer}.{}{unit}", fraction.trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_str;
    use std::path::Path;

    /// The clients of `tests/fixtures/state-v1`, whose fingerprints were computed by the release
    /// before this encoding (`Group::fingerprint` at commit a3f532d).
    fn pinned() -> String {
        include_str!("../../tests/fixtures/state-v1/config.yaml")
            .replace("STATE", "/var/lib/tokend")
            .replace("SECRET", "/etc/tokend/secret")
            .replace("OUT", "/run/tokend")
    }

    fn fingerprints() -> Vec<(String, Fingerprint)> {
        let config = parse_str(&pinned(), Path::new("/etc/tokend/config.yaml")).unwrap();
        config
            .clients
            .iter()
            .map(|c| (c.name.to_string(), Fingerprint::of(&c.spec)))
            .collect()
    }

    /// If this fails, the encoding changed: every saved token on every host would be refused
    /// after the upgrade. Bump `VERSION` and keep accepting the old encoding instead.
    #[test]
    fn the_current_encoding_is_pinned() {
        let expected = [
            (
                "plain",
                "786d61f9b95799a8297615650fe5f09354b67701af16d000e4e5a6c8b0140514",
            ),
            (
                "validated",
                "dfbd480c015896528ada42b8e0c0c768f86b7943f53958f06ed146301c7acf71",
            ),
            (
                "explicit",
                "23eeca197f007e30a94cc26e806356dc9c14a626ed9debda6059b4ff03be98de",
            ),
            (
                "ipv6",
                "405253bd47f58ad0858d215d64e2b2e0b78b3ae2eb30829bc433e9b1452757ad",
            ),
            (
                "bare",
                "1fed1f342b4960e9937243ad1fb2ac7812584b38bbed90ab920ab084ddc7c90b",
            ),
        ];
        let got = fingerprints();
        assert_eq!(got.len(), expected.len());
        for ((name, fp), (want_name, want)) in got.iter().zip(expected) {
            assert_eq!((name.as_str(), fp.as_str()), (want_name, want));
        }
    }

    /// Version 1 as the previous release computed it, reproduced without `Debug`.
    #[test]
    fn version_one_is_reproduced_exactly() {
        let expected = [
            (
                "plain",
                "6a486179795becb85f97e47be94913867a4ae5538185730e78896383604be1e0",
            ),
            (
                "validated",
                "980d8d887786b2a34dbecbf54e6111513fa2130ba4776128a3853daf77d3ef90",
            ),
            (
                "explicit",
                "fe6b5e8c8f3a70f0f0ee30194e89eee256103eae7f5a2a041293722223b20ae2",
            ),
            (
                "ipv6",
                "6390b34ed2691193ed48a042c2eee65f3a6634bc7fcf6319f47c78c6cac2a366",
            ),
            (
                "bare",
                "48a7ca0f78aaff8588086e93932ad2be64af4e00623b7f76e5f7889448f21ea4",
            ),
        ];
        for ((name, fp), (want_name, want)) in fingerprints().iter().zip(expected) {
            assert_eq!(name, want_name);
            assert!(
                fp.accepts(want),
                "{name}: version 1 is {}, expected {want}",
                fp.previous
            );
            assert_ne!(fp.as_str(), want, "{name}: the current encoding is not version 1");
        }
    }

    #[test]
    fn every_identifying_field_changes_the_fingerprint_and_credentials_do_not() {
        let config = parse_str(&pinned(), Path::new("/etc/tokend/config.yaml")).unwrap();
        let base = (*config.clients[2].spec).clone();
        let fp = |spec: &RequestSpec| Fingerprint::of(spec).as_str().to_owned();
        let mut variants: Vec<RequestSpec> = Vec::new();
        let mut with = |change: &dyn Fn(&mut RequestSpec)| {
            let mut spec = base.clone();
            change(&mut spec);
            variants.push(spec);
        };
        with(&|s| s.grant.endpoint = Endpoint::Issuer("https://idp.example/oauth/token".parse().unwrap()));
        with(&|s| s.grant.client_id = "other".into());
        with(&|s| s.grant.audience = None);
        with(&|s| s.grant.scope = Some("s".into()));
        with(&|s| s.grant.resources = vec!["https://r.example/".into()]);
        with(&|s| s.grant.organization = Some("o".into()));
        with(&|s| s.grant.params = vec![("k".into(), "v".into())]);
        with(&|s| s.validation = None);
        with(&|s| s.validation.as_mut().unwrap().issuer = None);
        with(&|s| s.validation.as_mut().unwrap().jwks_uri = None);
        with(&|s| s.validation.as_mut().unwrap().audiences.push("z".into()));
        with(&|s| {
            s.validation.as_mut().unwrap().algorithms.pop();
        });
        with(&|s| s.validation.as_mut().unwrap().leeway = Duration::from_secs(2));
        // Moving a value between neighbouring fields is a different grant too.
        with(&|s| {
            s.grant.scope = s.grant.audience.take();
        });
        let mut seen = std::collections::HashSet::from([fp(&base)]);
        for (i, v) in variants.iter().enumerate() {
            assert!(seen.insert(fp(v)), "variant {i} collides: {v:?}");
        }
        let mut other_secret = base.clone();
        other_secret.credentials = crate::config::Credentials::SecretBasic {
            secret: crate::secret::SecretSource::Env("X".into()),
            encoding: crate::config::BasicEncoding::Raw,
        };
        other_secret.transport.allow_insecure_http = true;
        assert_eq!(fp(&other_secret), fp(&base));
    }

    /// As `Debug` printed them when version 1 was written (literals: a later toolchain may
    /// print durations differently, and version 1 must not follow it).
    #[test]
    fn durations_print_as_debug_did() {
        let cases = [
            (Duration::ZERO, "0ns"),
            (Duration::from_nanos(7), "7ns"),
            (Duration::from_nanos(1_500), "1.5µs"),
            (Duration::from_micros(1_001), "1.001ms"),
            (Duration::from_millis(1_500), "1.5s"),
            (Duration::from_secs(30), "30s"),
            (Duration::new(2, 1), "2.000000001s"),
            (Duration::from_millis(250), "250ms"),
        ];
        for (d, text) in cases {
            assert_eq!(version1_duration(d), text);
        }
    }
}
