//! Configuration text through `config::parse`, the parse-and-validate path of `tokend check`,
//! `once` and `run` (`config::load` reads the file and calls it), with users, groups and the
//! environment from a fixed host, so nothing depends on this machine and nothing touches the
//! network.
//!
//! Beyond "no panic": parsing is deterministic; an error never quotes a secret written inline
//! (`client_secret`, a PEM pasted where its path belongs, a proxy password); a valid config
//! carries the client names and ids of the text, output modes without group/other write bits,
//! absolute paths and no output path twice, and its `Debug` never shows a secret.

#![no_main]

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use secrecy::ExposeSecret;
use serde_yaml::Value;
use tokend::config::{self, Config, ConfigError, Host};
use tokend::secret::SecretSource;

/// A host with a few users and groups, and an empty environment.
struct FuzzHost;

impl Host for FuzzHost {
    fn user_id(&self, name: &str) -> Result<Option<u32>, String> {
        Ok(match name {
            "root" => Some(0),
            "tokend" => Some(64023),
            "billing" => Some(1001),
            "reports" => Some(1002),
            "www-data" => Some(33),
            _ => None,
        })
    }

    fn group_id(&self, name: &str) -> Result<Option<u32>, String> {
        Ok(match name {
            "root" => Some(0),
            "tokend" => Some(64023),
            "tokend-readers" => Some(2000),
            "billing" => Some(1001),
            _ => None,
        })
    }

    fn var(&self, _name: &str) -> Option<OsString> {
        None
    }
}

const PATH: &str = "/etc/tokend/config.yaml";

fn parse(source: &str) -> Result<Config, ConfigError> {
    config::parse(source, Path::new(PATH), &FuzzHost)
}

fn outcome(result: &Result<Config, ConfigError>) -> String {
    match result {
        Ok(config) => format!("ok {config:?}"),
        Err(e) => format!("error {e}"),
    }
}

fuzz_target!(|data: &[u8]| {
    // `config::load` reads the file with `read_to_string`: only UTF-8 text ever gets here.
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    let result = parse(source);
    let shown = outcome(&result);
    assert_eq!(shown, outcome(&parse(source)), "parsing the same text twice differs");
    if let Ok(config) = &result {
        valid_config_matches_its_text(source, config, &shown);
    }
    for secret in inline_secrets(source) {
        never_quoted(source, &secret, &shown);
    }
});

/// Secrets written inline, as the text holds them: long enough and written exactly once, so a
/// message that contains one can only have it from its place.
fn inline_secrets(source: &str) -> Vec<String> {
    let Ok(Value::Mapping(top)) = serde_yaml::from_str::<Value>(source) else {
        return Vec::new();
    };
    let mut clients: Vec<&Value> = top.get("defaults").into_iter().collect();
    if let Some(Value::Mapping(map)) = top.get("clients") {
        clients.extend(map.values());
    }
    let mut found = Vec::new();
    for client in clients {
        let Value::Mapping(client) = client else { continue };
        match client.get("client_secret") {
            Some(Value::String(s)) => found.push(s.clone()),
            Some(Value::Number(n)) => found.push(n.to_string()),
            _ => {}
        }
        for key in ["private_key", "client_key"] {
            if let Some(Value::String(s)) = client.get(key)
                && (s.contains("-----BEGIN") || s.contains('\n'))
            {
                found.extend(s.lines().map(str::to_owned));
            }
        }
        if let Some(Value::String(url)) = client.get("proxy")
            && let Some((_, rest)) = url.split_once("://")
            && let Some((userinfo, _)) = rest.split('/').next().unwrap_or("").rsplit_once('@')
            && let Some((_, password)) = userinfo.split_once(':')
        {
            found.push(password.to_owned());
        }
    }
    found.retain(|s| s.trim().len() >= 6 && source.matches(s.as_str()).count() == 1);
    found
}

/// The secret in a different spelling of the same shape: letters stay letters, digits digits.
fn respelled(secret: &str) -> String {
    secret
        .chars()
        .map(|c| match c {
            'a'..='z' => (b'a' + (c as u8 - b'a' + 13) % 26) as char,
            'A'..='Z' => (b'A' + (c as u8 - b'A' + 13) % 26) as char,
            '0'..='9' => (b'0' + (c as u8 - b'0' + 5) % 10) as char,
            c => c,
        })
        .collect()
}

/// `shown` (the outcome of parsing `source`) never contains `secret`: if it seems to, the text
/// is parsed again with the secret spelled differently, and the outcome must not follow.
fn never_quoted(source: &str, secret: &str, shown: &str) {
    if !shown.contains(secret) {
        return;
    }
    let other = respelled(secret);
    if other == secret || source.contains(other.as_str()) {
        return;
    }
    let again = outcome(&parse(&source.replace(secret, &other)));
    assert!(
        !again.contains(other.as_str()),
        "an inline secret is quoted back: {secret:?} in {shown}"
    );
}

/// The client a name came from. A name is its key as written, which YAML may have read as
/// something else (`0x1F:` as the number 31, `true:` as a boolean): the key is the one the name
/// reads as, in YAML.
fn raw_client<'a>(top: &'a serde_yaml::Mapping, name: &str) -> Option<&'a Value> {
    let clients = top.get("clients")?.as_mapping()?;
    let as_read = serde_yaml::from_str::<Value>(name).ok();
    clients
        .iter()
        .find(|(key, _)| key.as_str() == Some(name) || Some(*key) == as_read.as_ref())
        .map(|(_, raw)| raw)
}

fn valid_config_matches_its_text(source: &str, config: &Config, shown: &str) {
    let top = match serde_yaml::from_str::<Value>(source) {
        Ok(Value::Mapping(top)) => top,
        // Valid configs are mappings, or empty (no clients).
        Ok(_) => {
            assert!(config.clients.is_empty(), "clients from a text that is not a mapping");
            return;
        }
        // Keys that are different names but the same YAML value (`31:` and `0x1F:`): the text
        // is no mapping to `Value`, so there is nothing to compare with.
        Err(_) => return,
    };
    let named = match top.get("clients") {
        Some(Value::Mapping(map)) => map.len(),
        _ => 0,
    };
    assert_eq!(config.clients.len(), named, "a client gained or lost");
    let defaults = top.get("defaults");
    let mut paths = BTreeSet::new();
    assert!(config.state_dir.is_absolute(), "state_dir {:?}", config.state_dir);
    for client in &config.clients {
        let name = client.name.as_str();
        let raw = raw_client(&top, name).unwrap_or_else(|| panic!("client {name} is not in the text"));
        let client_id = raw
            .get("client_id")
            .or_else(|| defaults.and_then(|d| d.get("client_id")));
        if let Some(Value::String(id)) = client_id {
            assert_eq!(&client.spec.grant.client_id, id, "client {name}: client_id");
        }
        for output in &client.outputs {
            assert_eq!(
                output.mode.bits() & 0o022,
                0,
                "client {name}: output {:?} is writable by others",
                output.path
            );
            assert!(output.path.is_absolute(), "output {:?}", output.path);
            assert!(paths.insert(output.path.clone()), "output {:?} twice", output.path);
        }
        let secret = match client.spec.credentials.secret() {
            Some(SecretSource::Literal(s)) => Some(s.expose_secret().to_owned()),
            _ => None,
        };
        if let Some(secret) = secret.filter(|s| s.trim().len() >= 6 && source.matches(s.as_str()).count() == 1) {
            never_quoted(source, &secret, shown);
        }
    }
}
