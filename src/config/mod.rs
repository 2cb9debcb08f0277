//! The configuration, in steps: the YAML is read into serde types that mirror it (`raw`, with
//! scalar values that check themselves in `values`), `defaults` are merged into each client
//! (`inherit`), and the result is validated into the types the rest of tokend uses (`model`)
//! by `validator`, which collects every problem and points each at its file, line, column and
//! key (`error`). Parsing is pure: user and group lookups and the environment come from a `Host`.

mod error;
mod host;
pub(crate) mod identity;
mod inherit;
mod model;
mod raw;
pub(crate) mod schema;
mod shape;
pub(crate) mod suggest;
pub(crate) mod template;
pub(crate) mod url_policy;
mod validator;
mod values;

use std::path::Path;

pub use error::{ConfigError, Problem};
pub use host::{Host, System};
pub use model::*;
pub use raw::{AuthMethod, BasicEncoding, FleetRole, Format};
pub use values::{ClientName, JwsAlg, Mode, Principal, is_scope_char};

use raw::RawConfig;
use validator::Validator;

/// Where tokend looks for its configuration unless told otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/tokend/config.yaml";
/// Where the packaged unit (`RuntimeDirectory=tokend`) lets tokend write token files and the
/// socket: what messages suggest for outputs.
pub const RUNTIME_DIR: &str = "/run/tokend";
/// Where per-client state lives unless `state_dir` or `$STATE_DIRECTORY` says otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/tokend";

/// Reads and validates the configuration file at `path`, on this machine.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let source = std::fs::read_to_string(path).map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::NotFound => {
                "; write one (README.md, or `man tokend`), name another with --config PATH or TOKEND_CONFIG, or try `tokend dev` for a local development setup"
            }
            _ => "",
        };
        ConfigError::single(path, "", format!("cannot read the configuration file: {e}{hint}"))
    })?;
    parse_str(&source, path)
}

/// Whether the file at `path` lists any client: `Some(false)` for a readable YAML mapping with no
/// client under `clients` (the packaged example, all comments), `None` if the file cannot be read
/// or parsed (then `run` says what is wrong with it). Nothing is validated.
pub fn lists_clients(path: &Path) -> Option<bool> {
    let text = std::fs::read_to_string(path).ok()?;
    if text.trim().is_empty() {
        return Some(false);
    }
    match serde_yaml::from_str::<serde_yaml::Value>(&text).ok()? {
        serde_yaml::Value::Null => Some(false),
        serde_yaml::Value::Mapping(top) => Some(match top.get("clients") {
            None | Some(serde_yaml::Value::Null) => false,
            Some(serde_yaml::Value::Mapping(clients)) => !clients.is_empty(),
            Some(_) => true,
        }),
        _ => None,
    }
}

/// Parses and validates configuration text on this machine; `path` is used in messages and as
/// `Config::source`.
pub fn parse_str(source: &str, path: &Path) -> Result<Config, ConfigError> {
    parse(source, path, &System)
}

/// Parses and validates configuration text, looking users, groups and the environment up in
/// `host`.
pub fn parse(source: &str, path: &Path, host: &dyn Host) -> Result<Config, ConfigError> {
    let fail = |problems| ConfigError {
        file: path.to_owned(),
        problems,
    };
    let (raw, mut problems, removed) = if source.trim().is_empty() {
        (RawConfig::default(), Vec::new(), Vec::new())
    } else {
        match serde_yaml::from_str::<RawConfig>(source) {
            Ok(raw) => (raw, Vec::new(), Vec::new()),
            Err(first) => {
                // serde's first error, exactly as it saw it; then the others, from the
                // document as a tree with each bad node taken out in turn.
                let mut problems = vec![error::from_serde(&first, source)];
                let Ok(tree) = shape::tree(source) else {
                    return Err(fail(problems));
                };
                let repaired = shape::repair(source, tree);
                for p in repaired.problems {
                    if !problems.iter().any(|q| shape::same(q, &p)) {
                        problems.push(p);
                    }
                }
                // In file order, as a reader goes through them (serde's first may be anywhere).
                problems.sort_by_key(|p| p.position.unwrap_or((usize::MAX, usize::MAX)));
                match repaired.config {
                    Some(raw) => (raw, problems, repaired.removed),
                    None => return Err(fail(problems)),
                }
            }
        }
    };
    let mut v = Validator::new(source, host);
    let config = v.config(raw, path);
    problems.extend(
        v.problems
            .into_iter()
            .filter(|p| !shape::follows_from_removal(p, &removed)),
    );
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(fail(problems))
    }
}

#[cfg(test)]
mod tests;
