//! Scalar configuration values that carry their own invariants: client names, octal file modes,
//! percentages, durations and user/group references. Each one is checked while the YAML is read,
//! so a bad value is reported with the exact line and column it came from.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// A client's name: `[A-Za-z0-9._-]+`, not `.` or `..`. Used in file names, state files and URLs.
/// Shared, not copied: the store, the metrics' series and the client's task each hold the name,
/// for every one of perhaps ten thousand clients.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientName(Arc<str>);

impl ClientName {
    pub fn new(name: &str) -> Result<Self, String> {
        if name.is_empty() {
            return Err("client name is empty".into());
        }
        if name == "." || name == ".." {
            return Err(format!("client name `{name}` is not allowed"));
        }
        if let Some(bad) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(format!(
                "client name `{name}` contains {bad:?}; names may use only letters, digits, `.`, `_` and `-`"
            ));
        }
        Ok(ClientName(Arc::from(name)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for ClientName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ClientName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ClientName;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a client name made of letters, digits, `.`, `_` and `-`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ClientName, E> {
                ClientName::new(v).map_err(E::custom)
            }
            // From a deserializer that has already resolved the key (a `serde_yaml::Value`):
            // `1234:` became a number, and a numeric name is still a valid name.
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ClientName, E> {
                ClientName::new(&v.to_string()).map_err(E::custom)
            }
        }
        // Asked for a string, serde_yaml gives a plain scalar as written: the name of `0x1F:`
        // is `0x1F`, not the 31 YAML reads it as, and `true:` is named `true`. The name is what
        // the user wrote, because it is what they will look for in files, URLs and logs.
        d.deserialize_str(V)
    }
}

/// File permission bits, written in the config as a quoted octal string such as `"0640"`.
///
/// A bare YAML integer is refused: `mode: 640` would otherwise become decimal 640 (`0o1200`), the
/// classic mistake behind world-readable or unreadable secrets.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mode(u32);

impl Mode {
    pub const fn new(bits: u32) -> Self {
        Mode(bits & 0o777)
    }

    pub fn bits(self) -> u32 {
        self.0
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        let digits = s.strip_prefix("0o").unwrap_or(s);
        if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            return Err(format!(
                "`{s}` is not an octal file mode; write it as a quoted string such as \"0600\" or \"0640\""
            ));
        }
        let bits = u32::from_str_radix(digits, 8).expect("checked octal digits");
        if bits > 0o777 {
            return Err(format!(
                "mode `{s}` sets setuid, setgid or sticky bits, which token files must not have; use at most \"0777\""
            ));
        }
        Ok(Mode(bits))
    }
}

/// Why an unquoted number is not a mode, and the string that was probably meant. YAML has
/// already turned it into a number: `640` (decimal, meant as octal digits) or `0o640` (octal,
/// read as 416) cannot be told apart, so both readings are offered when both make a mode.
fn bare_mode(v: u64) -> String {
    let digits = v.to_string();
    let as_digits =
        (digits.len() <= 4 && digits.bytes().all(|b| (b'0'..=b'7').contains(&b))).then(|| format!("{digits:0>4}"));
    let as_octal = (v <= 0o777).then(|| format!("{v:04o}"));
    match (as_digits, as_octal) {
        (Some(d), None) => {
            format!(
                "mode must be a quoted octal string: write \"{d}\", not the bare number {v} (YAML reads it as decimal)"
            )
        }
        (None, Some(o)) => format!(
            "mode must be a quoted octal string: write \"{o}\" (YAML read this unquoted number as decimal {v}, which is octal {o})"
        ),
        (Some(d), Some(o)) => format!(
            "mode must be a quoted octal string: YAML read this unquoted number as decimal {v}; write \"{d}\" if you meant {v} as octal digits, or \"{o}\" if you wrote 0o{}",
            o.trim_start_matches('0')
        ),
        (None, None) => format!("mode must be a quoted octal string such as \"0640\", not the number {v}"),
    }
}

impl fmt::Debug for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Mode;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a quoted octal file mode such as \"0640\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Mode, E> {
                Mode::parse(v).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Mode, E> {
                Err(E::custom(bare_mode(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Mode, E> {
                Err(E::custom(format!(
                    "mode must be a quoted octal string such as \"0640\", not the number {v}"
                )))
            }
        }
        d.deserialize_any(V)
    }
}

/// A fraction written as a percentage, such as `80%`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Percent(pub f64);

impl Percent {
    pub fn parse(s: &str) -> Result<Self, String> {
        let hint = || format!("`{s}` is not a percentage; write it like \"80%\"");
        let number = s.trim().strip_suffix('%').ok_or_else(hint)?;
        let value: f64 = number.trim().parse().map_err(|_| hint())?;
        if !value.is_finite() || !(0.0..=100.0).contains(&value) {
            return Err(format!("`{s}` must be between 0% and 100%"));
        }
        Ok(Percent(value / 100.0))
    }
}

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Percent;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a percentage such as \"80%\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Percent, E> {
                Percent::parse(v).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Percent, E> {
                Err(E::custom(format!("write a percentage with its sign, like \"{v}%\"")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Percent, E> {
                Err(E::custom(format!(
                    "write a percentage with its sign, like \"{}%\", not the number {v}",
                    v * 100.0
                )))
            }
        }
        d.deserialize_any(V)
    }
}

/// A duration in humantime syntax (`90s`, `5m`, `1h 30m`). A bare number is refused because its
/// unit would be a guess, and so is anything above `MAX_SPAN`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Span(pub Duration);

/// No setting needs more; the bound keeps every deadline (now + a retry, issue + a default
/// lifetime) far inside `SystemTime`'s range.
pub const MAX_SPAN: Duration = Duration::from_secs(366 * 86400);

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Span;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"30s\", \"5m\" or \"1h\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Span, E> {
                let d = humantime::parse_duration(v.trim()).map_err(|e| {
                    E::custom(format!(
                        "`{v}` is not a duration ({e}); write it like \"30s\", \"5m\" or \"1h\""
                    ))
                })?;
                if d > MAX_SPAN {
                    return Err(E::custom(format!(
                        "`{v}` is longer than any setting allows; durations go up to {} days",
                        MAX_SPAN.as_secs() / 86400
                    )));
                }
                Ok(Span(d))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Span, E> {
                Err(E::custom(format!(
                    "a duration needs a unit: write \"{v}s\", \"{v}m\" or similar, not the bare number {v}"
                )))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Span, E> {
                Err(E::custom(format!(
                    "a duration needs a unit, like \"30s\"; got the bare number {v}"
                )))
            }
        }
        d.deserialize_any(V)
    }
}

/// A user or group as written in the config: a name, or a numeric id.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Principal {
    Name(String),
    Id(u32),
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::Name(n) => f.write_str(n),
            Principal::Id(id) => write!(f, "{id}"),
        }
    }
}

impl<'de> Deserialize<'de> for Principal {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Principal;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a user or group name, or a numeric id")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Principal, E> {
                if v.is_empty() {
                    return Err(E::custom("a user or group name must not be empty"));
                }
                // `chown` treats an all-digit name as an id; so do we.
                match v.parse::<u32>() {
                    Ok(id) => Ok(Principal::Id(id)),
                    Err(_) => Ok(Principal::Name(v.to_owned())),
                }
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Principal, E> {
                u32::try_from(v)
                    .map(Principal::Id)
                    .map_err(|_| E::custom(format!("id {v} is out of range")))
            }
        }
        d.deserialize_any(V)
    }
}

/// RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ).
pub fn is_scope_char(b: u8) -> bool {
    b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b)
}

/// One string or a list of strings (`scope: a b` or `scope: [a, b]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OneOrMany(pub Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![v.to_owned()]))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    items.push(item);
                }
                Ok(OneOrMany(items))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_names_allow_only_the_documented_characters() {
        for ok in ["billing", "a.b-c_d", "X9", "..."] {
            assert!(ClientName::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "é", "a:b"] {
            assert!(ClientName::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn modes_parse_octal_strings_only() {
        assert_eq!(Mode::parse("0640").unwrap().bits(), 0o640);
        assert_eq!(Mode::parse("600").unwrap().bits(), 0o600);
        assert_eq!(Mode::parse("0o644").unwrap().bits(), 0o644);
        for bad in ["", "0648", "rw-r-----", "04755", "12345", "-1"] {
            assert!(Mode::parse(bad).is_err(), "{bad}");
        }
        // Unquoted: YAML reads `0640` as text (a mode), but `640` and `0o640` as numbers.
        let mode = |v: &str| {
            serde_yaml::from_str::<Mode>(v)
                .map(Mode::bits)
                .map_err(|e| e.to_string())
        };
        assert_eq!(mode("0640"), Ok(0o640));
        assert_eq!(mode("\"0640\""), Ok(0o640));
        for (written, advice) in [
            ("640", "write \"0640\", not the bare number 640"),
            ("0o600", "write \"0600\" (YAML read this unquoted number as decimal 384"),
            (
                "0o640",
                "write \"0416\" if you meant 416 as octal digits, or \"0640\" if you wrote 0o640",
            ),
            ("9999", "such as \"0640\", not the number 9999"),
        ] {
            let err = mode(written).unwrap_err();
            assert!(err.contains(advice), "{written}: {err}");
        }
    }

    #[test]
    fn percentages_need_a_percent_sign() {
        assert_eq!(Percent::parse("80%").unwrap().0, 0.8);
        assert_eq!(Percent::parse(" 12.5 %").unwrap().0, 0.125);
        for bad in ["80", "0.8", "101%", "-1%", "abc%", "NaN%"] {
            assert!(Percent::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_need_a_unit_and_stay_within_a_year() {
        let span = |v: &str| serde_yaml::from_str::<Span>(v).map(|s| s.0).map_err(|e| e.to_string());
        assert_eq!(span("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(span("366days"), Ok(MAX_SPAN));
        let err = span("367days").unwrap_err();
        assert!(err.contains("durations go up to 366 days"), "{err}");
        assert!(span("500000000years").is_err());
        assert!(span("30").unwrap_err().contains("needs a unit"));
    }
}

/// A JWS signature algorithm tokend can verify or sign with (RFC 7518 §3). `none` and the HMAC
/// algorithms are not among them: a token checked against a public JWKS must never be accepted
/// with a shared-secret or no signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JwsAlg {
    Rs256,
    Rs384,
    Rs512,
    Ps256,
    Ps384,
    Ps512,
    Es256,
    Es384,
    EdDsa,
}

impl JwsAlg {
    pub const ALL: [JwsAlg; 9] = [
        JwsAlg::Rs256,
        JwsAlg::Rs384,
        JwsAlg::Rs512,
        JwsAlg::Ps256,
        JwsAlg::Ps384,
        JwsAlg::Ps512,
        JwsAlg::Es256,
        JwsAlg::Es384,
        JwsAlg::EdDsa,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JwsAlg::Rs256 => "RS256",
            JwsAlg::Rs384 => "RS384",
            JwsAlg::Rs512 => "RS512",
            JwsAlg::Ps256 => "PS256",
            JwsAlg::Ps384 => "PS384",
            JwsAlg::Ps512 => "PS512",
            JwsAlg::Es256 => "ES256",
            JwsAlg::Es384 => "ES384",
            JwsAlg::EdDsa => "EdDSA",
        }
    }

    pub fn parse(s: &str) -> Result<JwsAlg, String> {
        if let Some(alg) = JwsAlg::ALL.into_iter().find(|a| a.as_str() == s) {
            return Ok(alg);
        }
        if s.eq_ignore_ascii_case("none") || s.to_ascii_uppercase().starts_with("HS") {
            return Err(format!(
                "`{s}` is never accepted: a token must carry a public-key signature that the issuer's JWKS can verify"
            ));
        }
        let names: Vec<&str> = JwsAlg::ALL.iter().map(|a| a.as_str()).collect();
        Err(format!(
            "unknown algorithm `{s}`; expected one of: {}",
            names.join(", ")
        ))
    }
}

impl fmt::Display for JwsAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for JwsAlg {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        JwsAlg::parse(&s).map_err(de::Error::custom)
    }
}
