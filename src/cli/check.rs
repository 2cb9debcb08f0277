//! `tokend check`: validate the configuration, try every secret source and output directory, and
//! print the plan — never a secret. Problems that would stop tokend from working make it fail;
//! risky but working settings are warnings. Permissions are judged for the identity the service
//! runs as (`Identity`), not for whoever runs `check`: `sudo tokend check` may read and chown
//! anything; the `tokend` user may not.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::identity::{self, Identity};
use crate::config::{Access, Client, Config, Credentials, HookAction, Output, Problem, Proxy, RequestSpec, Timeouts};
use crate::daemon::preflight::{self, Preflight};
use crate::oauth::error::FetchError;
use crate::oauth::exchange;
use crate::secret::SecretSource;
use secrecy::ExposeSecret;

/// The service's user, as the packaged unit and sysusers.d name it.
pub const SERVICE_USER: &str = "tokend";
/// Where the packaged unit (ProtectSystem=strict) lets tokend write token files.
pub const SERVICE_RUNTIME_DIR: &str = crate::config::RUNTIME_DIR;

/// Whom `check` judges permissions for: `--as-user`, else the service's user when root runs it
/// and that user exists, else the caller.
pub fn service_identity(as_user: Option<&str>) -> Result<Identity, String> {
    match as_user {
        Some(user) => Identity::of_user(user),
        None => {
            let me = Identity::current();
            if me.is_root()
                && let Ok(service) = Identity::of_user(SERVICE_USER)
            {
                return Ok(service);
            }
            Ok(me)
        }
    }
}

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// tokend would start, and this would fail once it runs (exit 1).
    Problem,
    /// It works, but it is risky or surprising.
    Warning,
}

/// One thing `check` found beyond a valid configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    /// The setting it is about (`socket.group`, `clients.billing.outputs`), or empty.
    pub key: String,
    /// The whole sentence, as `check` prints it.
    pub message: String,
}

/// What `check` found: the plan, what `run` would refuse, and findings.
#[derive(Debug, Default)]
pub struct Report {
    /// The plan: what tokend would do with the configuration, never a secret.
    pub text: String,
    /// What `run` and `once` would refuse to start with, as configuration errors (exit 78): a
    /// secret, key, certificate or CA file that cannot be read or used (by the service's user).
    pub config: Vec<Problem>,
    pub findings: Vec<Finding>,
}

impl Report {
    fn problem(&mut self, key: &str, message: String) {
        self.finding(Severity::Problem, key, message);
    }

    fn warning(&mut self, key: &str, message: String) {
        self.finding(Severity::Warning, key, message);
    }

    fn finding(&mut self, severity: Severity, key: &str, message: String) {
        self.findings.push(Finding {
            severity,
            key: key.to_owned(),
            message,
        });
    }

    fn with(&self, severity: Severity) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(move |f| f.severity == severity)
    }
}

/// How `check` ended, by what it found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing stands in the way (warnings aside).
    Fine,
    /// tokend would start, and something would fail (exit 1).
    Problems,
    /// `run` and `once` would refuse the configuration (exit 78).
    Refused,
}

/// The report as `tokend check` prints it: the plan for stdout; for stderr the warnings, what
/// would be refused (exactly as `run` would say it), the problems and their count.
pub fn render(report: &Report, source: &Path) -> (String, String, Verdict) {
    let mut err = String::new();
    for w in report.with(Severity::Warning) {
        let _ = writeln!(err, "warning: {}", w.message);
    }
    if !report.config.is_empty() {
        let refused = crate::config::ConfigError {
            file: source.to_path_buf(),
            problems: report.config.clone(),
        };
        let _ = writeln!(err, "{refused}");
    }
    let problems = report.with(Severity::Problem).count();
    for p in report.with(Severity::Problem) {
        let _ = writeln!(err, "problem: {}", p.message);
    }
    if problems > 0 {
        let _ = writeln!(err, "{problems} problem{} found", plural(problems));
    }
    let verdict = match (report.config.is_empty(), problems) {
        (false, _) => Verdict::Refused,
        (true, 0) => Verdict::Fine,
        (true, _) => Verdict::Problems,
    };
    (report.text.clone(), err, verdict)
}

/// With `connect`, each distinct token request's endpoints are also reached over the network
/// (`exchange::probe`), without credentials.
pub fn check(config: &Config, who: &Identity, connect: bool) -> Report {
    let mut r = Report::default();
    let reached = if connect {
        probe_all(&config.clients).unwrap_or_else(|e| {
            r.problem("", e);
            HashMap::new()
        })
    } else {
        HashMap::new()
    };
    let cx = Cx {
        who,
        service: who.name.as_deref() == Some(SERVICE_USER),
        proxied: config.proxies.iter().map(|p| p.client.as_str()).collect(),
    };
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
    let groups: Vec<String> = who.groups.iter().map(|g| identity::group_name(*g)).collect();
    let _ = writeln!(
        r.text,
        "permissions checked for {who}, groups {} (choose another user with --as-user)",
        groups.join(", ")
    );
    fleet(&mut r, config, connect);
    check_dir(&mut r, &cx, ("state_dir", "state_dir"), &config.state_dir, None);
    match &config.socket {
        None => {
            let _ = writeln!(r.text, "socket API disabled");
        }
        Some(s) => {
            let dir = s.path.parent().unwrap_or(Path::new("/"));
            let state = check_dir(&mut r, &cx, ("socket", "socket"), dir, None);
            if let Some(problem) = who.cannot_serve(config) {
                r.problem("socket.group", format!("socket.group: {problem}"));
            }
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
                r.problem(
                    "socket",
                    format!(
                        "socket: {} exists and is not a socket; tokend will not replace it",
                        s.path.display()
                    ),
                );
            }
        }
    }
    if let Ok(meta) = std::fs::symlink_metadata(&config.state_dir) {
        let owner_ok = cx.who.uid == meta.uid();
        if meta.mode() & 0o022 != 0 || !owner_ok || meta.file_type().is_symlink() {
            // tokend would not trust a token saved there: someone else could have planted it.
            r.problem("state_dir", format!(
                "state_dir {} is {} (owner {}, mode {:04o}); tokend trusts saved tokens only in a directory of its own that no one else can write: `chown {} {0}; chmod 0700 {0}`",
                config.state_dir.display(),
                if meta.file_type().is_symlink() { "a symlink" } else if owner_ok { "writable by others" } else { "not owned by tokend's user" },
                meta.uid(),
                meta.mode() & 0o7777,
                cx.who.name.as_deref().unwrap_or("tokend"),
            ));
        } else if meta.mode() & 0o077 != 0 {
            r.warning(
                "state_dir",
                format!(
                    "state_dir {} has mode {:04o}; it holds tokens, so 0700 is safer",
                    config.state_dir.display(),
                    meta.mode() & 0o7777
                ),
            );
        }
    }
    for p in &config.proxies {
        let (listen, who) = match &p.bind {
            crate::config::ProxyBind::Tcp(addr) => (addr.to_string(), "anyone who can connect".to_owned()),
            crate::config::ProxyBind::Unix { path, mode, .. } => {
                let dir = path.parent().unwrap_or(Path::new("/"));
                check_dir(
                    &mut r,
                    &cx,
                    ("proxies", &format!("proxy socket {}", path.display())),
                    dir,
                    None,
                );
                (
                    format!("{} (mode {mode})", path.display()),
                    who_may_read(Some(&p.readers)),
                )
            }
        };
        let _ = writeln!(
            r.text,
            "proxy {listen} → {} with {}'s token; for {who}",
            p.upstream, p.client
        );
        if let crate::config::ProxyBind::Tcp(addr) = &p.bind
            && !addr.ip().is_loopback()
        {
            r.warning(
                "proxies",
                format!(
                    "proxy {addr} listens beyond this host: whoever reaches it makes requests with {}'s token",
                    p.client
                ),
            );
        }
    }
    let config_mode = std::fs::metadata(&config.source).map(|m| m.mode() & 0o777).unwrap_or(0);
    let mut preflight = Preflight::new(config);
    for client in &config.clients {
        describe(
            &mut r,
            &cx,
            &mut preflight,
            client,
            &config.clients,
            config_mode,
            &config.access,
        );
        if let Some(result) = reached.get(&client.spec) {
            let n = &client.name;
            match result {
                Ok(what) => {
                    let _ = writeln!(r.text, "  connection      {what}");
                }
                Err(e) => {
                    let _ = writeln!(r.text, "  connection      FAILED");
                    let advice = e.advice().map_or(String::new(), |a| format!("; {a}"));
                    r.problem(&format!("clients.{n}"), format!("{n}: {e}{advice}"));
                }
            }
        }
    }
    r
}

/// The fleet's part of the plan: where the store is, this host's role, and what would keep the
/// fleet's settings from being used; with `connect`, what the store allows each shared client.
fn fleet(r: &mut Report, config: &Config, connect: bool) {
    let Some(fleet) = &config.fleet else {
        return;
    };
    let _ = writeln!(
        r.text,
        "fleet: {} {} in namespace {}; store {}{}",
        fleet.role.as_str(),
        crate::fleet::node_name(),
        fleet.namespace,
        fleet.redis.endpoint.describe(),
        fleet
            .redis
            .username
            .as_deref()
            .map_or(String::new(), |u| format!(" as user {u}"))
    );
    for problem in Preflight::new(config).fleet(config) {
        config_problem(r, problem);
    }
    let plain = match &fleet.redis.endpoint {
        crate::config::RedisEndpoint::Url(url) => {
            url.scheme() == "redis" && !crate::config::url_policy::is_loopback(url)
        }
        crate::config::RedisEndpoint::Sentinel { .. } => !fleet.redis.endpoint.is_tls(),
    };
    if plain {
        r.warning("fleet.redis", 
            "fleet.redis: without TLS (`rediss://`) the store's password and commands cross the network in clear; the tokens stay sealed".into(),
        );
    }
    if !connect || !r.config.is_empty() {
        return;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            r.problem("fleet", format!("cannot start the fleet store probe: {e}"));
            return;
        }
    };
    match runtime.block_on(crate::fleet::probe::probe(fleet, &config.clients)) {
        Err(e) => r.problem("fleet", format!("fleet store: {e}")),
        Ok(findings) => {
            let _ = writeln!(r.text, "fleet store reached");
            for f in findings {
                match f.result {
                    Ok(line) => {
                        let _ = writeln!(r.text, "  {:<15} {line}", f.client);
                    }
                    Err(e) => r.problem(
                        &format!("clients.{}", f.client),
                        format!("{}: fleet store: {e}", f.client),
                    ),
                }
            }
        }
    }
}

/// At most this many endpoints are probed at once.
const PROBES_AT_ONCE: usize = 16;

/// Probes each distinct request once, several at a time, on a runtime of its own (`check` is
/// synchronous, and may run where no runtime is).
fn probe_all(clients: &[Arc<Client>]) -> Result<HashMap<Arc<RequestSpec>, Result<String, FetchError>>, String> {
    let mut unique: HashMap<Arc<RequestSpec>, Timeouts> = HashMap::new();
    for c in clients {
        unique.entry(c.spec.clone()).or_insert(c.timeouts);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the network probe: {e}"))?;
    Ok(runtime.block_on(async {
        let limit = Arc::new(tokio::sync::Semaphore::new(PROBES_AT_ONCE));
        let mut probes = tokio::task::JoinSet::new();
        for (spec, timeouts) in unique {
            let limit = limit.clone();
            probes.spawn(async move {
                let _turn = limit.acquire_owned().await;
                let result = exchange::probe(&spec, timeouts).await;
                (spec, result)
            });
        }
        let mut reached = HashMap::new();
        while let Some(done) = probes.join_next().await {
            if let Ok((spec, result)) = done {
                reached.insert(spec, result);
            }
        }
        reached
    }))
}

/// What every check of one run shares.
struct Cx<'a> {
    who: &'a Identity,
    /// Checking as the service's user: its sandbox applies too.
    service: bool,
    /// Clients a token proxy uses: their token is put to use even without outputs.
    proxied: HashSet<&'a str>,
}

fn describe(
    r: &mut Report,
    cx: &Cx<'_>,
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
    // The files a request reads, which the service's user must be able to read.
    let mut files: Vec<(&str, PathBuf)> = Vec::new();
    match &c.spec.credentials {
        Credentials::SecretPost(source) | Credentials::SecretBasic(source) => {
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

/// Checks that tokend can write into `dir` (or create it) and, for an output, give the file its
/// owner and group. Returns a short description for the plan.
/// `key` names the setting in findings; `what` starts their messages.
fn check_dir(r: &mut Report, cx: &Cx<'_>, (key, what): (&str, &str), dir: &Path, output: Option<&Output>) -> String {
    if let Some(o) = output {
        let (owner, group) = cx.who.cannot_own(o.owner.as_ref(), o.group.as_ref());
        for p in owner.into_iter().chain(group) {
            r.problem(key, format!("{what}: {p}"));
        }
        // (The state directory, which the unit may write too, is no place for outputs: the
        // configuration refuses them there.)
        if cx.service && !dir.starts_with(SERVICE_RUNTIME_DIR) {
            r.warning(key, format!(
                "{what}: the packaged unit (ProtectSystem=strict) lets tokend write token files only under {SERVICE_RUNTIME_DIR}; \
                 for this output add `ReadWritePaths={}` in a drop-in (systemctl edit tokend)",
                dir.display()
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
    let meta = match std::fs::metadata(existing) {
        Ok(meta) if meta.is_dir() => meta,
        _ => {
            r.problem(key, format!("{what}: {} is not a directory", existing.display()));
            return "blocked".into();
        }
    };
    if let Some(why) = unusable_file_system(existing) {
        r.problem(key, format!("{what}: {} {why}", existing.display()));
        return "blocked".into();
    }
    if !cx.who.may_write_dir(&meta) {
        r.problem(
            key,
            denied(cx, &format!("{what}: directory"), existing, "writable", &meta),
        );
        return "NOT WRITABLE".into();
    }
    if output.is_some()
        && let Some(who) = crate::output::replaceable_by(meta.mode())
    {
        r.warning(
            key,
            format!(
                "{what}: the directory {} (mode {:04o}) can be written by {who}: {}",
                existing.display(),
                meta.mode() & 0o7777,
                crate::output::REPLACEABLE_FIX
            ),
        );
    }
    if existing == dir {
        "directory writable".into()
    } else {
        format!("{} will be created", dir.display())
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
    if let Credentials::SecretPost(source) | Credentials::SecretBasic(source) = &c.spec.credentials
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

/// Why files cannot be created under `dir` whatever its permissions say: a read-only mount, or a
/// kernel's virtual file system (`/proc`, `/sys`, …), where even root cannot create a file.
fn unusable_file_system(dir: &Path) -> Option<String> {
    use nix::sys::statfs::*;
    if let Ok(vfs) = nix::sys::statvfs::statvfs(dir)
        && vfs.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY)
    {
        return Some("is on a read-only file system".into());
    }
    let kind = statfs(dir).ok()?.filesystem_type();
    let virtual_fs = [
        (PROC_SUPER_MAGIC, "proc"),
        (SYSFS_MAGIC, "sysfs"),
        (CGROUP_SUPER_MAGIC, "cgroup"),
        (CGROUP2_SUPER_MAGIC, "cgroup2"),
        (DEVPTS_SUPER_MAGIC, "devpts"),
        (DEBUGFS_MAGIC, "debugfs"),
        (TRACEFS_MAGIC, "tracefs"),
        (SECURITYFS_MAGIC, "securityfs"),
        (BPF_FS_MAGIC, "bpf"),
        (NSFS_MAGIC, "nsfs"),
    ];
    virtual_fs
        .iter()
        .find(|(magic, _)| *magic == kind)
        .map(|(_, name)| format!("is on the kernel's {name} file system, where no file can be created; choose a directory such as /run/tokend"))
}

/// A file the service reads for every request (a secret, key, certificate or CA file) that its
/// user may not read: `run` would refuse to start although `check`, run by root, could read it.
fn unreadable_by_service(cx: &Cx<'_>, what: &str, path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    if cx.who.may_read(&meta) {
        return None;
    }
    let user = cx.who.name.clone().unwrap_or_else(|| cx.who.uid.to_string());
    let fix = match what {
        "client certificate" | "ca_file" => format!("; `chmod 0644 {}`", path.display()),
        _ => format!("; `chown {user} {}` (keep the mode 0600)", path.display()),
    };
    Some(denied(cx, what, path, "readable", &meta) + &fix)
}

/// Adds a configuration problem once (clients sharing a request or a default share it).
fn config_problem(r: &mut Report, problem: Problem) {
    if !r.config.contains(&problem) {
        r.config.push(problem);
    }
}

/// `what path is not <how> by tokend (user …) (mode 0600, owner 0:root)`.
fn denied(cx: &Cx<'_>, what: &str, path: &Path, how: &str, meta: &std::fs::Metadata) -> String {
    format!(
        "{what} {} is not {how} by {} (mode {:04o}, owner {}:{})",
        path.display(),
        cx.who,
        meta.mode() & 0o7777,
        meta.uid(),
        identity::group_name(meta.gid())
    )
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// The client's hooks, and what would stop each from running: a command that is missing or
/// that the service's user may not run, a `user` that needs root, a pid file's missing directory.
fn hooks(r: &mut Report, cx: &Cx<'_>, c: &Client) {
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
fn who_may_read(readers: Option<&crate::config::Readers>) -> String {
    match readers.filter(|r| !r.is_empty()) {
        None => "root and tokend's user only".to_owned(),
        Some(r) => {
            let users = r.users.iter().map(|u| format!("user {}", u.spec));
            let groups = r.groups.iter().map(|g| format!("group {}", g.spec));
            users.chain(groups).collect::<Vec<_>>().join(", ") + ", root and tokend's user"
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// A configuration in a fresh directory, checked as the current user.
    fn checked(clients: &str) -> (tempfile::TempDir, Report) {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
        let yaml = format!(
            "state_dir: {}\nsocket: {{ path: {}/tokend.sock }}\nclients:\n{clients}",
            state.display(),
            dir.path().display()
        );
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, &yaml).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let config = crate::config::load(&path).unwrap();
        let report = check(&config, &Identity::current(), false);
        (dir, report)
    }

    fn keys(report: &Report, severity: Severity) -> Vec<&str> {
        report.with(severity).map(|f| f.key.as_str()).collect()
    }

    #[test]
    fn findings_name_their_setting_and_severity() {
        let (dir, report) = checked(
            "  billing:\n    token_url: https://idp.internal/oauth/token\n    client_id: YOUR_CLIENT_ID\n    \
             client_secret: s3cret-inline\n    outputs: [{ path: OUT, mode: \"0644\" }]\n  lonely:\n    \
             token_url: https://idp.internal/oauth/token\n    client_id: app\n    client_secret: other-secret\n"
                .replace("OUT", "/tmp/tokend-check-test/out/billing")
                .as_str(),
        );
        assert!(report.config.is_empty(), "{:?}", report.config);
        assert_eq!(
            keys(&report, Severity::Problem),
            ["clients.billing.client_id"],
            "{:?}",
            report.findings
        );
        let warnings = keys(&report, Severity::Warning);
        for key in [
            "clients.billing.client_secret",
            "clients.billing.outputs",
            "clients.lonely.client_secret",
            "clients.lonely.outputs",
        ] {
            assert!(warnings.contains(&key), "{key} missing from {warnings:?}");
        }
        // The plan names what tokend would do, and never a secret.
        assert!(report.text.contains("billing"), "{}", report.text);
        assert!(!report.text.contains("s3cret-inline") && !report.text.contains("other-secret"));
        assert!(report.findings.iter().all(|f| !f.message.contains("s3cret-inline")));
        drop(dir);
    }

    #[test]
    fn the_rendering_puts_the_plan_on_stdout_and_findings_on_stderr_by_severity() {
        let mut report = Report {
            text: "plan\n".into(),
            ..Report::default()
        };
        let source = Path::new("/etc/tokend/config.yaml");
        assert_eq!(render(&report, source), ("plan\n".into(), String::new(), Verdict::Fine));
        report.warning("state_dir", "state_dir /x has mode 0755; 0700 is safer".into());
        report.problem("socket.group", "socket.group: tokend is not in group web".into());
        report.problem("clients.a.hooks", "a: hook command /h is not a file".into());
        let (out, err, verdict) = render(&report, source);
        assert_eq!(out, "plan\n");
        assert_eq!(
            err,
            "warning: state_dir /x has mode 0755; 0700 is safer\n\
             problem: socket.group: tokend is not in group web\n\
             problem: a: hook command /h is not a file\n\
             2 problems found\n"
        );
        assert_eq!(verdict, Verdict::Problems);
        report.config.push(Problem {
            key: "clients.a.client_secret".into(),
            position: Some((7, 3)),
            message: "cannot read /s".into(),
        });
        let (_, err, verdict) = render(&report, source);
        assert_eq!(verdict, Verdict::Refused);
        let refused = err.lines().position(|l| l.contains("cannot read /s")).unwrap();
        let first_problem = err.lines().position(|l| l.starts_with("problem:")).unwrap();
        assert!(refused < first_problem, "{err}");
    }
}
