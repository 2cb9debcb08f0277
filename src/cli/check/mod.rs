//! `tokend check`: validate the configuration, try every secret source and output directory, and
//! print the plan — never a secret. Problems that would stop tokend from working make it fail;
//! risky but working settings are warnings. Permissions are judged for the identity the service
//! runs as (`Identity`), not for whoever runs `check`: `sudo tokend check` may read and chown
//! anything; the `tokend` user may not.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use crate::config::identity::{self, Identity};
use crate::config::{Client, Config, Problem, RequestSpec, Timeouts};
use crate::daemon::preflight::Preflight;
use crate::oauth::error::FetchError;
use crate::oauth::exchange;

mod client;
mod files;

use client::{describe, who_may_read};
use files::check_dir;

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
    let cx = Checking {
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
    socket(&mut r, &cx, config);
    state_dir(&mut r, &cx, config);
    proxies(&mut r, &cx, config);
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

/// The socket: its directory, its group, and a file in its way.
fn socket(r: &mut Report, cx: &Checking<'_>, config: &Config) {
    match &config.socket {
        None => {
            let _ = writeln!(r.text, "socket API disabled");
        }
        Some(s) => {
            let dir = s.path.parent().unwrap_or(Path::new("/"));
            let state = check_dir(r, cx, ("socket", "socket"), dir, None);
            if let Some(problem) = cx.who.cannot_serve(config) {
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
}

/// The state directory: tokend trusts saved tokens only in a directory of its own.
fn state_dir(r: &mut Report, cx: &Checking<'_>, config: &Config) {
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
}

/// Each token proxy: where it listens, for whom, and a warning when beyond this host.
fn proxies(r: &mut Report, cx: &Checking<'_>, config: &Config) {
    for p in &config.proxies {
        let (listen, who) = match &p.bind {
            crate::config::ProxyBind::Tcp(addr) => (addr.to_string(), "anyone who can connect".to_owned()),
            crate::config::ProxyBind::Unix { path, mode, .. } => {
                let dir = path.parent().unwrap_or(Path::new("/"));
                check_dir(
                    r,
                    cx,
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
struct Checking<'a> {
    who: &'a Identity,
    /// Checking as the service's user: its sandbox applies too.
    service: bool,
    /// Clients a token proxy uses: their token is put to use even without outputs.
    proxied: HashSet<&'a str>,
}

/// Adds a configuration problem once (clients sharing a request or a default share it).
fn config_problem(r: &mut Report, problem: Problem) {
    if !r.config.contains(&problem) {
        r.config.push(problem);
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
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
