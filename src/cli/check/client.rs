//! One client in `check`'s plan: its request, credentials, outputs, readers and hooks, with what
//! would stop each from working.

use std::fmt::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::files::{check_dir, unreadable_by_service};
use super::{Checking, Report, config_problem};
use crate::config::identity;
use crate::config::{Access, Client, Credentials, HookAction, Output, Proxy};
use crate::daemon::preflight::{self, Preflight};
use crate::secret::SecretSource;
use secrecy::ExposeSecret;

pub(super) fn describe(
    r: &mut Report,
    cx: &Checking<'_>,
    preflight: &mut Preflight,
    c: &Client,
    clients: &[Arc<Client>],
    config_mode: u32,
    access: &Access,
) {
    let n = &c.name;
    let _ = writeln!(r.text, "\n{n}");
    let _ = writeln!(
        r.text,
        "  token endpoint  {} ({})",
        c.spec.grant.endpoint.describe(),
        c.spec
            .credentials
            .method()
            .map_or("never asked: a follower", |m| m.as_str())
    );
    let _ = writeln!(r.text, "  client id       {}", c.spec.grant.client_id);
    placeholders(r, c);
    let state = match preflight.client(c) {
        None => "readable".to_owned(),
        Some(problem) => {
            config_problem(r, problem);
            "NOT USABLE".to_owned()
        }
    };
    for problem in preflight.code(c, cx.who.uid) {
        config_problem(r, problem);
    }
    if let Some(shared) = &c.spec.fleet
        && let Some((_, keys)) = crate::fleet::keys_by_client(&shared.fleet, clients)
            .into_iter()
            .find(|(name, _)| *name == c.name)
    {
        let key = if shared.key.is_some() {
            "its own fleet_key"
        } else {
            "the fleet's key"
        };
        let _ = writeln!(r.text, "  fleet           shared at {} ({key})", keys.token);
    }
    credentials(r, cx, preflight, c, config_mode, &state);
    request(r, c);
    publishing(r, cx, c, clients, access);
}

/// The client's credentials, and the files a request reads, which the service's user must be
/// able to read.
fn credentials(
    r: &mut Report,
    cx: &Checking<'_>,
    preflight: &mut Preflight,
    c: &Client,
    config_mode: u32,
    state: &str,
) {
    let n = &c.name;
    let mut files: Vec<(&str, PathBuf)> = Vec::new();
    match &c.spec.credentials {
        Credentials::SecretPost(source) | Credentials::SecretBasic { secret: source, .. } => {
            let _ = writeln!(r.text, "  client secret   {} ({state})", source.describe());
            files.extend(source.file().map(|path| ("client secret", path)));
            if let SecretSource::Literal(_) = source {
                let mut warning = format!(
                    "{n}: the client secret is written in the config file; prefer {{ file: … }} or {{ credential: … }}"
                );
                if config_mode & 0o044 != 0 {
                    warning.push_str(&format!(
                        ", and the config file is readable by others (mode {config_mode:04o})"
                    ));
                }
                r.warning(&format!("clients.{n}.client_secret"), warning);
            }
        }
        Credentials::PrivateKey(pk) => {
            let alg = pk.alg.map_or("from the key".to_owned(), |a| a.to_string());
            let kid = pk.key_id.as_deref().map_or(String::new(), |k| format!(", kid {k}"));
            let _ = writeln!(r.text, "  private key     {} ({alg}{kid}; {state})", pk.key.describe());
            files.extend(pk.key.file().map(|path| ("private key", path)));
        }
        Credentials::Follower => {
            let _ = writeln!(
                r.text,
                "  credentials     none: a fleet follower takes this client's tokens from the store"
            );
        }
        Credentials::Certificate { certificate, key } => {
            let _ = writeln!(
                r.text,
                "  certificate     {} + {} ({state})",
                certificate.describe(),
                key.describe()
            );
            files.extend(certificate.file().map(|path| ("client certificate", path)));
            files.extend(key.file().map(|path| ("client key", path)));
        }
    }
    if let Some(ca) = &c.spec.transport.ca_file {
        files.push(("ca_file", ca.clone()));
    }
    for (what, path) in files {
        if let Some(problem) = unreadable_by_service(cx, what, &path) {
            config_problem(r, preflight.at(c, preflight::key_for(what), problem));
        }
    }
}

/// What the request asks for and how: transport, validation, grant, refresh and timeouts.
fn request(r: &mut Report, c: &Client) {
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
        "  refresh         at {:.0}% ±{:.0}% of the lifetime, at least {} before expiry (a token living under {} at half its lifetime); retries {} … {}",
        c.refresh.at * 100.0,
        c.refresh.jitter * 100.0,
        f(c.refresh.min_remaining),
        f(c.refresh.min_remaining * 2),
        f(c.retry.initial),
        f(c.retry.max)
    );
    let _ = writeln!(
        r.text,
        "  timeouts        connect {}, request {}",
        f(c.timeouts.connect),
        f(c.timeouts.request)
    );
}

/// Where the token goes: socket readers, outputs (with what could stop each), hooks, and the
/// clients that share its request.
fn publishing(r: &mut Report, cx: &Checking<'_>, c: &Client, clients: &[Arc<Client>], access: &Access) {
    let n = &c.name;
    let readers = who_may_read(access.readers.get(&c.name));
    let _ = writeln!(r.text, "  socket readers  {readers}");
    if c.outputs.is_empty() {
        let _ = writeln!(r.text, "  outputs         none");
        if !cx.proxied.contains(n.as_str()) {
            r.warning(
                &format!("clients.{n}.outputs"),
                format!("{n}: no outputs; the token is not published anywhere"),
            );
        }
    }
    for (i, o) in c.outputs.iter().enumerate() {
        let label = if i == 0 { "outputs" } else { "" };
        let owner = ownership(o);
        let dir = o.path.parent().unwrap_or(Path::new("/"));
        let key = format!("clients.{n}.outputs");
        let state = check_dir(
            r,
            cx,
            (&key, &format!("{n}: output {}", o.path.display())),
            dir,
            Some(o),
        );
        let format = match &o.template {
            Some(t) => format!("template {}", t.origin),
            None => o.format.as_str().to_owned(),
        };
        let _ = writeln!(
            r.text,
            "  {label:<15} {} ({format}, {}{owner}; {state})",
            o.path.display(),
            o.mode
        );
        if o.mode.bits() & 0o004 != 0 {
            r.warning(
                &format!("clients.{n}.outputs"),
                format!("{n}: {} is readable by every user (mode {})", o.path.display(), o.mode),
            );
        }
    }
    hooks(r, cx, c);
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

/// Values left as the examples have them: a request with them can only fail (or, for an
/// audience, ask for the wrong API). A secret is judged but never shown.
fn placeholders(r: &mut Report, c: &Client) {
    let n = &c.name;
    if is_placeholder(&c.spec.grant.client_id) {
        r.problem(
            &format!("clients.{n}.client_id"),
            format!(
                "{n}: client_id `{}` is the example's placeholder; put the client's id from your IdP there",
                c.spec.grant.client_id
            ),
        );
    }
    if let Some(source) = c.spec.credentials.secret()
        && let Ok(secret) = source.read()
        && is_placeholder(secret.expose_secret())
    {
        r.problem(
            &format!("clients.{n}.client_secret"),
            format!(
                "{n}: the client secret in {} is the example's placeholder; put the client's secret there",
                source.describe()
            ),
        );
    }
    if let Some(host) = c.spec.grant.endpoint.url().host_str()
        && is_example_host(host)
    {
        r.problem(
            &format!("clients.{n}.token_url"),
            format!(
                "{n}: {} is the example's placeholder host; put your IdP's there",
                c.spec.grant.endpoint.describe()
            ),
        );
    }
    if let Some(audience) = &c.spec.grant.audience
        && url::Url::parse(audience)
            .ok()
            .and_then(|u| u.host_str().map(is_example_host))
            == Some(true)
    {
        r.warning(
            &format!("clients.{n}.audience"),
            format!("{n}: audience {audience} looks like the example's; check that it is your API's identifier"),
        );
    }
}

/// `replace-with-the-client-id`, `YOUR_CLIENT_ID`, `<client-secret>`, `changeme`, …
fn is_placeholder(value: &str) -> bool {
    let v = value.trim().to_ascii_lowercase().replace('_', "-");
    v.starts_with("replace-with")
        || v.starts_with("replace-me")
        || v.starts_with("your-")
        || v.starts_with("insert-")
        || matches!(
            v.as_str(),
            "changeme" | "change-me" | "todo" | "fixme" | "xxx" | "secret" | "client-id"
        )
        || (v.starts_with('<') && v.ends_with('>'))
}

/// The examples' IdP, and the names reserved for documentation (RFC 2606): no IdP lives there.
fn is_example_host(host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    host == "example.eu.auth0.com"
        || ["example.com", "example.net", "example.org"]
            .iter()
            .any(|d| host == *d || host.ends_with(&format!(".{d}")))
}

/// The client's hooks, and what would stop each from running: a command that is missing or
/// that the service's user may not run, a `user` that needs root, a pid file's missing directory.
fn hooks(r: &mut Report, cx: &Checking<'_>, c: &Client) {
    let n = &c.name;
    for (i, hook) in c.hooks.iter().enumerate() {
        let label = if i == 0 { "hooks" } else { "" };
        let retries = match hook.action {
            HookAction::Exec { .. } => format!(
                "timeout {}, {} retries",
                humantime::format_duration(hook.timeout),
                hook.retries
            ),
            HookAction::Signal { .. } => format!("{} retries", hook.retries),
        };
        let _ = writeln!(
            r.text,
            "  {label:<15} {} ({retries})",
            crate::output::hooks::describe(hook)
        );
        match &hook.action {
            HookAction::Exec { argv, user, .. } => {
                let command = Path::new(&argv[0]);
                match std::fs::metadata(command) {
                    Err(e) => r.problem(
                        &format!("clients.{n}.hooks"),
                        format!("{n}: hook command {}: {e}", command.display()),
                    ),
                    Ok(meta)
                        if !meta.is_file()
                            || !cx.who.permits(meta.mode(), meta.uid(), meta.gid(), identity::SEARCH) =>
                    {
                        r.problem(
                            &format!("clients.{n}.hooks"),
                            format!(
                                "{n}: hook command {} is not a file {} may run (mode {:04o})",
                                command.display(),
                                cx.who,
                                meta.mode() & 0o7777
                            ),
                        );
                    }
                    Ok(_) => {}
                }
                if let Some(user) = user
                    && !cx.who.is_root()
                    && user.id != cx.who.uid
                {
                    r.problem(
                        &format!("clients.{n}.hooks"),
                        format!(
                            "{n}: a hook that runs as {} needs tokend to run as root ({} is not)",
                            user.spec, cx.who
                        ),
                    );
                }
            }
            HookAction::Signal { pid_file, .. } => {
                let dir = pid_file.parent().unwrap_or(Path::new("/"));
                if !dir.is_dir() {
                    r.warning(
                        &format!("clients.{n}.hooks"),
                        format!(
                            "{n}: the directory of pid file {} does not exist (yet); the hook fails until it does",
                            pid_file.display()
                        ),
                    );
                }
            }
        }
    }
}

/// `user alice, group billing, root and tokend's user`, or `root and tokend's user only`.
pub(super) fn who_may_read(readers: Option<&crate::config::Readers>) -> String {
    match readers.filter(|r| !r.is_empty()) {
        None => "root and tokend's user only".to_owned(),
        Some(r) => {
            let users = r.users.iter().map(|u| format!("user {}", u.spec));
            let groups = r.groups.iter().map(|g| format!("group {}", g.spec));
            users.chain(groups).collect::<Vec<_>>().join(", ") + ", root and tokend's user"
        }
    }
}
