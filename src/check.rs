//! `tokend check`: validate the configuration, try every secret source and output directory, and
//! print the plan — never a secret. Problems that would stop tokend from working make it fail;
//! risky but working settings are warnings.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use nix::unistd::{AccessFlags, Gid, Uid};

use crate::config::{Access, Client, Config, Credentials, Output, Proxy, RequestSpec};
use crate::oauth::exchange;
use crate::secret::SecretSource;

/// What `check` found beyond a valid configuration.
#[derive(Debug, Default)]
pub struct Report {
    pub text: String,
    pub problems: Vec<String>,
    pub warnings: Vec<String>,
}

pub fn check(config: &Config) -> Report {
    let mut r = Report::default();
    // Clients with equal requests share one request.
    let requests: HashSet<&RequestSpec> = config.clients.iter().map(|c| &*c.spec).collect();
    let _ = writeln!(
        r.text,
        "{}: valid, {} client{} ({} token request{}), state in {}",
        config.source.display(),
        config.clients.len(),
        plural(config.clients.len()),
        requests.len(),
        plural(requests.len()),
        config.state_dir.display()
    );
    check_dir(&mut r, "state_dir", &config.state_dir, None);
    match &config.socket {
        None => {
            let _ = writeln!(r.text, "socket API disabled");
        }
        Some(s) => {
            let dir = s.path.parent().unwrap_or(Path::new("/"));
            let state = check_dir(&mut r, "socket", dir, None);
            let group = s
                .group
                .as_ref()
                .map_or(String::new(), |g| format!(", group {}", g.spec));
            let _ = writeln!(
                r.text,
                "socket {} (mode {}{group}, at most {} connections; {state})",
                s.path.display(),
                s.mode,
                s.max_connections
            );
            if let Ok(meta) = std::fs::symlink_metadata(&s.path)
                && !std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type())
            {
                r.problems.push(format!(
                    "socket: {} exists and is not a socket; tokend will not replace it",
                    s.path.display()
                ));
            }
        }
    }
    if let Ok(meta) = std::fs::metadata(&config.state_dir)
        && meta.mode() & 0o077 != 0
    {
        r.warnings.push(format!(
            "state_dir {} has mode {:04o}; it holds tokens, so 0700 is safer",
            config.state_dir.display(),
            meta.mode() & 0o7777
        ));
    }
    let config_mode = std::fs::metadata(&config.source).map(|m| m.mode() & 0o777).unwrap_or(0);
    for client in &config.clients {
        describe(&mut r, client, &config.clients, config_mode, &config.access);
    }
    r
}

fn describe(r: &mut Report, c: &Client, clients: &[Arc<Client>], config_mode: u32, access: &Access) {
    let n = &c.name;
    let _ = writeln!(r.text, "\n{n}");
    let _ = writeln!(
        r.text,
        "  token endpoint  {} ({})",
        c.spec.grant.endpoint.describe(),
        c.spec.credentials.method().as_str()
    );
    let _ = writeln!(r.text, "  client id       {}", c.spec.grant.client_id);
    let state = match exchange::check_credentials(&c.spec, c.timeouts) {
        Ok(()) => "readable".to_owned(),
        Err(e) => {
            r.problems.push(format!("{n}: {e}"));
            "NOT USABLE".to_owned()
        }
    };
    match &c.spec.credentials {
        Credentials::SecretPost(source) | Credentials::SecretBasic(source) => {
            let _ = writeln!(r.text, "  client secret   {} ({state})", source.describe());
            if let SecretSource::Literal(_) = source {
                let mut warning = format!(
                    "{n}: the client secret is written in the config file; prefer {{ file: … }} or {{ credential: … }}"
                );
                if config_mode & 0o044 != 0 {
                    warning.push_str(&format!(
                        ", and the config file is readable by others (mode {config_mode:04o})"
                    ));
                }
                r.warnings.push(warning);
            }
        }
        Credentials::PrivateKey(pk) => {
            let alg = pk.alg.map_or("from the key".to_owned(), |a| a.to_string());
            let kid = pk.key_id.as_deref().map_or(String::new(), |k| format!(", kid {k}"));
            let _ = writeln!(r.text, "  private key     {} ({alg}{kid}; {state})", pk.path.display());
        }
        Credentials::Certificate { certificate, key } => {
            let _ = writeln!(
                r.text,
                "  certificate     {} + {} ({state})",
                certificate.display(),
                key.display()
            );
        }
    }
    if let Some(ca) = &c.spec.transport.ca_file {
        let _ = writeln!(r.text, "  extra CA        {}", ca.display());
    }
    if c.spec.transport.proxy != Proxy::Environment {
        let _ = writeln!(r.text, "  proxy           {}", c.spec.transport.proxy.describe());
    }
    if let Some(v) = &c.spec.validation {
        let iss = v.issuer.clone().unwrap_or_else(|| "as discovered".into());
        let _ = writeln!(
            r.text,
            "  validate        iss {iss}, aud {}, algorithms {}, leeway {}",
            v.audiences.join(" | "),
            v.algorithms.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(","),
            humantime::format_duration(v.leeway)
        );
    }
    for (label, value) in [
        ("audience", c.spec.grant.audience.as_deref()),
        ("scope", c.spec.grant.scope.as_deref()),
        ("organization", c.spec.grant.organization.as_deref()),
    ] {
        if let Some(v) = value {
            let _ = writeln!(r.text, "  {label:<15} {v}");
        }
    }
    for resource in &c.spec.grant.resources {
        let _ = writeln!(r.text, "  resource        {resource}");
    }
    for (name, value) in &c.spec.grant.params {
        let _ = writeln!(r.text, "  param           {name}={value}");
    }
    let f = |d| humantime::format_duration(d);
    let _ = writeln!(
        r.text,
        "  refresh         at {:.0}% ±{:.0}% of the lifetime, at least {} before expiry; retries {} … {}",
        c.refresh.at * 100.0,
        c.refresh.jitter * 100.0,
        f(c.refresh.min_remaining),
        f(c.retry.initial),
        f(c.retry.max)
    );
    let _ = writeln!(
        r.text,
        "  timeouts        connect {}, request {}",
        f(c.timeouts.connect),
        f(c.timeouts.request)
    );
    let readers = match access.readers.get(&c.name) {
        None => "root and tokend's user only".to_owned(),
        Some(r) => {
            let users = r.users.iter().map(|u| format!("user {}", u.spec));
            let groups = r.groups.iter().map(|g| format!("group {}", g.spec));
            users.chain(groups).collect::<Vec<_>>().join(", ") + ", root and tokend's user"
        }
    };
    let _ = writeln!(r.text, "  socket readers  {readers}");
    if c.outputs.is_empty() {
        let _ = writeln!(r.text, "  outputs         none");
        r.warnings
            .push(format!("{n}: no outputs; the token is not published anywhere"));
    }
    for (i, o) in c.outputs.iter().enumerate() {
        let label = if i == 0 { "outputs" } else { "" };
        let owner = ownership(o);
        let dir = o.path.parent().unwrap_or(Path::new("/"));
        let state = check_dir(r, &format!("{n}: output {}", o.path.display()), dir, Some(o));
        let _ = writeln!(
            r.text,
            "  {label:<15} {} ({}, {}{owner}; {state})",
            o.path.display(),
            o.format.as_str(),
            o.mode
        );
        if o.mode.bits() & 0o004 != 0 {
            r.warnings.push(format!(
                "{n}: {} is readable by every user (mode {})",
                o.path.display(),
                o.mode
            ));
        }
    }
    let others: Vec<&str> = clients
        .iter()
        .filter(|o| o.name != c.name && o.spec == c.spec)
        .map(|o| o.name.as_str())
        .collect();
    if !others.is_empty() {
        let _ = writeln!(r.text, "  shares its token request with {}", others.join(", "));
    }
}

fn ownership(o: &Output) -> String {
    match (&o.owner, &o.group) {
        (None, None) => String::new(),
        (owner, group) => format!(
            ", {}:{}",
            owner.as_ref().map_or("-".to_owned(), |u| u.spec.to_string()),
            group.as_ref().map_or("-".to_owned(), |g| g.spec.to_string())
        ),
    }
}

/// Checks that tokend can write into `dir` (or create it) and, for an output, give the file its
/// owner and group. Returns a short description for the plan.
fn check_dir(r: &mut Report, what: &str, dir: &Path, output: Option<&Output>) -> String {
    let euid = Uid::effective();
    if let Some(o) = output {
        if let Some(owner) = &o.owner
            && !euid.is_root()
            && owner.id != euid.as_raw()
        {
            r.problems.push(format!(
                "{what}: setting the owner to {} needs root (tokend runs as uid {euid})",
                owner.spec
            ));
        }
        if let Some(group) = &o.group
            && !euid.is_root()
            && !in_group(Gid::from_raw(group.id))
        {
            r.problems.push(format!(
                "{what}: tokend (uid {euid}) is not a member of group {}, so it cannot give the file that group",
                group.spec
            ));
        }
    }
    let mut existing = dir;
    while !existing.exists() {
        match existing.parent() {
            Some(p) => existing = p,
            None => break,
        }
    }
    if !existing.is_dir() {
        r.problems
            .push(format!("{what}: {} is not a directory", existing.display()));
        return "blocked".into();
    }
    if let Err(e) = nix::unistd::access(existing, AccessFlags::W_OK | AccessFlags::X_OK) {
        r.problems.push(format!(
            "{what}: directory {} is not writable by uid {euid}: {e}",
            existing.display()
        ));
        return "NOT WRITABLE".into();
    }
    if existing == dir {
        "directory writable".into()
    } else {
        format!("{} will be created", dir.display())
    }
}

fn in_group(gid: Gid) -> bool {
    Gid::effective() == gid || nix::unistd::getgroups().is_ok_and(|groups| groups.contains(&gid))
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
