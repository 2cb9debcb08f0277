//! Configuration errors that point at the file, line, column and key they concern, with a
//! suggestion when a key or value looks like a typo of a valid one.

use std::cell::Cell;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// One thing wrong with a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line and column of the offending key or value, when known.
    pub position: Option<(usize, usize)>,
    /// The dotted key path, such as `clients.billing.outputs[0].mode`; empty for the whole file.
    pub key: String,
    pub message: String,
}

/// Why a configuration file could not be used. Every problem found is listed, not just the first.
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl Problem {
    /// A problem with the setting at `path` (`["clients", "billing", "client_secret"]`), found in
    /// the configuration text `source`. A client setting the client does not write itself came
    /// from `defaults`, so it is pointed at there.
    pub fn at(source: &str, path: &[&str], message: impl Into<String>) -> Problem {
        let mut path = path.to_vec();
        let mut position = locate(source, &path);
        if position.is_none() && path.len() >= 3 && path[0] == "clients" {
            let inherited: Vec<&str> = std::iter::once("defaults").chain(path[2..].iter().copied()).collect();
            if let Some(found) = locate(source, &inherited) {
                (path, position) = (inherited, Some(found));
            }
        }
        Problem {
            position,
            key: path_string(&path),
            message: message.into(),
        }
    }
}

impl ConfigError {
    pub fn single(file: &Path, key: &str, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_owned(),
            problems: vec![Problem {
                position: None,
                key: key.to_owned(),
                message: message.into(),
            }],
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}", self.file.display())?;
            if let Some((line, column)) = p.position {
                write!(f, ":{line}:{column}")?;
            }
            if p.key.is_empty() {
                write!(f, ": {}", p.message)?;
            } else {
                write!(f, ": {}: {}", p.key, p.message)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Turns a serde_yaml error into a problem with its position, its key path and a friendlier
/// message (serde's "unknown field `x`, expected one of …" becomes a "did you mean" hint).
pub fn from_serde(err: &serde_yaml::Error, source: &str) -> Problem {
    let mut position = err.location().map(|l| (l.line(), l.column()));
    // serde_yaml renders "<path>: <message> at line L column C"; the position is reported
    // separately, and the path is split off so it reads like every other problem.
    let mut text = err.to_string();
    if let Some((line, column)) = position {
        text = text.replacen(&format!(" at line {line} column {column}"), "", 1);
    }
    let (key, message) = split_path(&text);
    // serde_yaml points a repeated key at its mapping; point at the repetition.
    if let Some(repeated) = message
        .strip_prefix("duplicate field `")
        .and_then(|r| r.split_once('`'))
        .map(|(k, _)| k)
    {
        let mut path: Vec<&str> = split_key_path(key);
        path.push(repeated);
        position = locate_nth(source, &path, 1).or(position);
    }
    Problem {
        position,
        key: key.to_owned(),
        message: humanize(message),
    }
}

/// `clients.billing.outputs[0]` as the segments `locate` takes.
fn split_key_path(key: &str) -> Vec<&str> {
    key.split(['.', '['])
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches(']'))
        .collect()
}

/// serde_yaml prefixes a message with the path to the value (`clients.a.outputs[0]: …`) unless the
/// error is at the top level. Paths never contain `": "`, messages may.
fn split_path(text: &str) -> (&str, &str) {
    match text.split_once(": ") {
        Some((path, rest)) if !path.contains(' ') && !path.contains('`') => (path, rest),
        _ => ("", text),
    }
}

fn humanize(message: &str) -> String {
    // "invalid type: sequence, expected a string" reads as serde's internals; say it the other
    // way round, with the shapes the `expecting` attributes describe.
    if let Some(rest) = message.strip_prefix("invalid type: ")
        && let Some((found, expected)) = rest.split_once(", expected ")
    {
        let found = match found {
            "map" => "a mapping",
            "sequence" => "a list",
            "unit value" | "null" => "nothing",
            other => other,
        };
        let expected = if expected == "a sequence" { "a list" } else { expected };
        return format!("expected {expected}, found {found}");
    }
    for (prefix, noun) in [("unknown field `", "key"), ("unknown variant `", "value")] {
        let Some(rest) = message.strip_prefix(prefix) else {
            continue;
        };
        let Some((given, expected)) = rest.split_once('`') else {
            continue;
        };
        let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        return match crate::config::suggest::closest(given, &candidates) {
            Some(best) => format!("unknown {noun} `{given}`; did you mean `{best}`?"),
            None if candidates.is_empty() => format!("unknown {noun} `{given}`"),
            None => format!("unknown {noun} `{given}`; expected one of: {}", candidates.join(", ")),
        };
    }
    message.to_owned()
}

/// A key path as messages spell it: `clients.billing.outputs[0].mode`.
pub fn path_string<S: AsRef<str>>(path: &[S]) -> String {
    let mut out = String::new();
    for part in path {
        let part = part.as_ref();
        if part.bytes().all(|b| b.is_ascii_digit()) && !out.is_empty() {
            out.push_str(&format!("[{part}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(part);
        }
    }
    out
}

/// The problem serde reported as `message` for the node at `path` (as a second or later
/// error, from the document read again as a tree, which knows no positions): an unknown key is
/// reported at its container and positioned at the key, anything else at its own key and
/// positioned at the value.
pub fn at_path(source: &str, path: &[String], message: &str) -> Problem {
    let segments: Vec<&str> = path.iter().map(String::as_str).collect();
    if message.starts_with("unknown field `")
        && let Some((_, parent)) = segments.split_last()
    {
        return Problem {
            position: locate(source, &segments),
            key: path_string(parent),
            message: humanize(message),
        };
    }
    Problem {
        position: locate_value(source, &segments),
        key: path_string(&segments),
        message: humanize(message),
    }
}

/// Finds the line and column of the key (or, for a sequence index, the element) at `path`, by
/// walking the document with serde_yaml and failing on purpose when the target is reached, so the
/// position comes from the same parser that read the config.
pub fn locate(source: &str, path: &[&str]) -> Option<(usize, usize)> {
    locate_nth(source, path, 0)
}

/// Like `locate`, but the position of the value at `path` rather than of its key (for a
/// value of the wrong type or form). The whole document for an empty path.
pub fn locate_value(source: &str, path: &[&str]) -> Option<(usize, usize)> {
    let seed = Locate {
        path,
        skip: Cell::new(0),
        at_value: true,
    };
    find(source, seed)
}

/// Like `locate`, but for the `skip`+1-th occurrence of the last key (for duplicated keys).
pub fn locate_nth(source: &str, path: &[&str], skip: usize) -> Option<(usize, usize)> {
    let seed = Locate {
        path,
        skip: Cell::new(skip),
        at_value: false,
    };
    find(source, seed)
}

fn find(source: &str, seed: Locate<'_>) -> Option<(usize, usize)> {
    let err = seed.deserialize(serde_yaml::Deserializer::from_str(source)).err()?;
    if !err.to_string().contains(MARKER) {
        return None;
    }
    err.location().map(|l| (l.line(), l.column()))
}

const MARKER: &str = "\u{1}tokend-locate\u{1}";

struct Locate<'a> {
    path: &'a [&'a str],
    /// Matches of the final key still to pass over.
    skip: Cell<usize>,
    /// Stop at the value the path names, not at its key.
    at_value: bool,
}

impl<'a> Locate<'a> {
    fn child(&self, path: &'a [&'a str]) -> Locate<'a> {
        Locate {
            path,
            skip: Cell::new(self.skip.get()),
            at_value: self.at_value,
        }
    }
}

impl<'de> DeserializeSeed<'de> for Locate<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if self.at_value && self.path.is_empty() {
            return Fail.deserialize(d);
        }
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Locate<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((first, rest)) = self.path.split_first() else {
            return Ok(());
        };
        while let Some(hit) = map.next_key_seed(KeyProbe {
            key: first,
            fail: rest.is_empty() && !self.at_value,
            skip: &self.skip,
        })? {
            if hit && (!rest.is_empty() || self.at_value) {
                map.next_value_seed(self.child(rest))?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((first, rest)) = self.path.split_first() else {
            return Ok(());
        };
        let Ok(target) = first.parse::<usize>() else {
            return Ok(());
        };
        for _ in 0..target {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
        }
        if rest.is_empty() && !self.at_value {
            seq.next_element_seed(Fail)?;
        } else {
            seq.next_element_seed(self.child(rest))?;
        }
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}

/// Reads a mapping key; fails (so serde_yaml records the key's position) when it is the target.
struct KeyProbe<'a> {
    key: &'a str,
    fail: bool,
    skip: &'a Cell<usize>,
}

impl<'de> DeserializeSeed<'de> for KeyProbe<'_> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        // As text: `0x1F` is a key of its own, not the integer 31 (see `shape::tree`).
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyProbe<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        if v != self.key {
            return Ok(false);
        }
        if self.fail {
            match self.skip.get() {
                0 => return Err(E::custom(MARKER)),
                n => self.skip.set(n - 1),
            }
        }
        Ok(true)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<bool, E> {
        self.visit_str(&v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<bool, E> {
        self.visit_str(&v.to_string())
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
        self.visit_str(&v.to_string())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
}

/// Fails on whatever value it meets, so serde_yaml records where that value starts.
struct Fail;

impl<'de> DeserializeSeed<'de> for Fail {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Fail {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(MARKER))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(MARKER))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(E::custom(MARKER))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(E::custom(MARKER))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Err(E::custom(MARKER))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Err(E::custom(MARKER))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(E::custom(MARKER))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(MARKER))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
defaults:
  token_url: http://a
clients:
  billing:
    client_id: x
    outputs:
      - path: /a
      - { path: /b, mode: \"0600\" }
";

    #[test]
    fn locate_finds_keys_and_sequence_elements() {
        assert_eq!(locate(DOC, &["defaults", "token_url"]), Some((2, 3)));
        assert_eq!(locate(DOC, &["clients", "billing"]), Some((4, 3)));
        assert_eq!(locate(DOC, &["clients", "billing", "outputs"]), Some((6, 5)));
        assert_eq!(locate(DOC, &["clients", "billing", "outputs", "1"]), Some((8, 9)));
        assert_eq!(
            locate(DOC, &["clients", "billing", "outputs", "1", "mode"]),
            Some((8, 21))
        );
        assert_eq!(locate(DOC, &["clients", "nobody"]), None);
        assert_eq!(locate(DOC, &["clients", "billing", "outputs", "7"]), None);
        let twice = "clients:\n  a: {}\n  b: {}\n  a: {}\n";
        assert_eq!(locate_nth(twice, &["clients", "a"], 0), Some((2, 3)));
        assert_eq!(locate_nth(twice, &["clients", "a"], 1), Some((4, 3)));
        assert_eq!(locate_nth(twice, &["clients", "a"], 2), None);
    }

    #[test]
    fn unknown_keys_suggest_the_closest_valid_key() {
        let msg = "unknown field `tokne_url`, expected one of `token_url`, `client_id`, `scope`";
        assert_eq!(humanize(msg), "unknown key `tokne_url`; did you mean `token_url`?");
        let msg = "unknown field `zzz`, expected one of `token_url`, `scope`";
        assert_eq!(humanize(msg), "unknown key `zzz`; expected one of: token_url, scope");
        let msg = "unknown variant `client_secret_bsic`, expected `client_secret_post` or `client_secret_basic`";
        assert_eq!(
            humanize(msg),
            "unknown value `client_secret_bsic`; did you mean `client_secret_basic`?"
        );
    }
}
