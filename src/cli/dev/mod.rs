//! `tokend dev`: a development issuer on loopback plus the real daemon with a generated config,
//! so a newcomer sees tokens appear and refresh without an IdP account. Never for production: the
//! issuer binds 127.0.0.1 only, its signing key lives as long as the process, and it says so.

pub mod issuer;

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use tokio_util::sync::CancellationToken;

use crate::daemon::{self, AppError};
use crate::output::atomic;

#[derive(Debug, clap::Args)]
pub struct DevArgs {
    // Declared, hidden, so that the global `--config` and its irrelevant default are not shown
    // in `tokend dev --help`; given anyway (or through $TOKEND_CONFIG), a warning says so.
    /// Not used: `tokend dev` writes its own configuration into --dir.
    #[arg(long, hide = true)]
    pub config: Option<PathBuf>,
    /// Directory for the generated config, secret, state and token files.
    #[arg(long, default_value = "tokend-dev")]
    pub dir: PathBuf,
    /// Port of the development issuer on 127.0.0.1 (0 picks a free port).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Lifetime of the tokens the issuer hands out.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub lifetime: Duration,
    /// Run only the issuer, as a local test fixture, and print its URL on the first stdout line.
    /// It accepts client id `tokend-dev` with secret `tokend-dev-secret`, unless --clients-file
    /// says otherwise.
    #[arg(long)]
    pub issuer_only: bool,
    /// With --issuer-only: a JSON file mapping the client ids the issuer accepts to their
    /// secrets, such as {"app": "s3cret"}, instead of `tokend-dev`/`tokend-dev-secret`.
    #[arg(long, value_name = "FILE", requires = "issuer_only")]
    pub clients_file: Option<PathBuf>,
    /// With --issuer-only: serve metadata only at /.well-known/oauth-authorization-server (RFC
    /// 8414), not at OIDC's location, to exercise a client's fallback.
    #[arg(long, requires = "issuer_only", hide = true)]
    pub rfc8414_only: bool,
}

const BANNER: &str = "\
+----------------------------------------------------------------------+
|  tokend DEVELOPMENT MODE -- NOT FOR PRODUCTION                       |
|  A throwaway token issuer is running on 127.0.0.1 only. Its signing  |
|  key and client secret are generated now and mean nothing elsewhere. |
+----------------------------------------------------------------------+";

const ISSUER_ONLY_BANNER: &str = "\
+----------------------------------------------------------------------+
|  tokend DEVELOPMENT ISSUER -- NOT FOR PRODUCTION                     |
|  A throwaway token issuer is running on 127.0.0.1 only. Its signing  |
|  key is generated now and means nothing elsewhere.                   |
+----------------------------------------------------------------------+";

/// The client the issuer accepts with `--issuer-only` and no `--clients-file`.
pub const ISSUER_ONLY_CLIENT: (&str, &str) = ("tokend-dev", "tokend-dev-secret");

pub async fn run(args: DevArgs, stop: CancellationToken) -> Result<(), AppError> {
    if let Some(config) = &args.config {
        tracing::warn!(
            config = %config.display(),
            dir = %args.dir.display(),
            "`tokend dev` does not use --config (or $TOKEND_CONFIG): it writes a configuration of its own into --dir"
        );
    }
    if args.issuer_only {
        return issuer_only(args, stop).await;
    }
    let dir = absolute(&args.dir)?;
    atomic::create_parents(&dir, 0o700).with_context(|| format!("cannot create {}", dir.display()))?;
    // Before anything in the directory is touched: a second `tokend dev` there would rewrite
    // the first one's secret and config under it.
    let _lock = lock_dir(&dir)?;
    let secret = random_secret();
    let secret_path = dir.join("client-secret");
    write_private(&secret_path, secret.as_bytes())?;

    let clients = HashMap::from([("tokend-dev".to_owned(), secret)]);
    let (issuer, issuer_stop, handle) = start_issuer(&args, clients).await?;

    let config_path = dir.join("config.yaml");
    std::fs::write(&config_path, example_config(&issuer.base_url, &dir, &secret_path))
        .with_context(|| format!("cannot write {}", config_path.display()))?;
    // Beside the config, which names it: an editor validates and completes it as it is edited.
    let schema_path = dir.join(SCHEMA_FILE);
    std::fs::write(&schema_path, crate::config::schema::to_json())
        .with_context(|| format!("cannot write {}", schema_path.display()))?;

    // The hints are printed once the daemon serves, never for one that failed to start.
    let daemon = tokio::spawn({
        let config_path = config_path.clone();
        async move { daemon::run(&config_path, false, stop).await }
    });
    let socket = dir.join("tokend.sock");
    while !daemon.is_finished() && !socket.exists() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if !daemon.is_finished() {
        eprintln!("{BANNER}");
        println!("{}", instructions(&issuer.base_url, &args.dir, args.lifetime));
        let _ = std::io::stdout().flush();
    }
    let result = daemon
        .await
        .unwrap_or_else(|e| Err(anyhow::anyhow!("the daemon stopped: {e}").into()));
    issuer_stop.cancel();
    // Ignored: the issuer task only logs its own errors.
    let _ = handle.await;
    result
}

/// An exclusive lock on `dir/.lock`, held while this `tokend dev` runs (the kernel releases it
/// when the process ends, however it ends).
fn lock_dir(dir: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, AppError> {
    let path = dir.join(".lock");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(mut locked) => {
            // The holder's pid, for the message a second one prints.
            let _ = locked.set_len(0);
            let _ = writeln!(locked, "{}", std::process::id());
            Ok(locked)
        }
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            let holder = match holder.trim() {
                "" => String::new(),
                pid => format!(" (pid {pid})"),
            };
            Err(anyhow::anyhow!(
                "another `tokend dev` is running in {}{holder}; nothing was changed. Stop it, or give this one a directory of its own with --dir",
                dir.display()
            )
            .into())
        }
        Err((_, e)) => Err(anyhow::anyhow!("cannot lock {}: {e}", path.display()).into()),
    }
}

async fn issuer_only(args: DevArgs, stop: CancellationToken) -> Result<(), AppError> {
    let clients: HashMap<String, String> = match &args.clients_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("{} is not a JSON object of id → secret", path.display()))?
        }
        None => HashMap::from([(ISSUER_ONLY_CLIENT.0.to_owned(), ISSUER_ONLY_CLIENT.1.to_owned())]),
    };
    let mut signals = signal_hook_tokio::Signals::new([signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT])
        .context("cannot install signal handlers")?;
    let accepted = match &args.clients_file {
        Some(path) => {
            let mut ids: Vec<&str> = clients.keys().map(String::as_str).collect();
            ids.sort();
            format!("accepts the clients in {}: {}", path.display(), ids.join(", "))
        }
        None => format!(
            "accepts client_id {} with client_secret {} (--clients-file for others)",
            ISSUER_ONLY_CLIENT.0, ISSUER_ONLY_CLIENT.1
        ),
    };
    let (issuer, issuer_stop, handle) = start_issuer(&args, clients).await?;
    println!("tokend dev issuer listening on {}", issuer.base_url);
    let _ = std::io::stdout().flush();
    eprintln!("{ISSUER_ONLY_BANNER}");
    eprintln!("token endpoint {}/oauth/token; {accepted}", issuer.base_url);
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = futures_util::StreamExt::next(&mut signals) => {}
    }
    issuer_stop.cancel();
    let _ = handle.await;
    Ok(())
}

/// Starts the issuer; it stops when the returned token is cancelled.
async fn start_issuer(
    args: &DevArgs,
    clients: HashMap<String, String>,
) -> Result<(issuer::Started, CancellationToken, tokio::task::JoinHandle<()>), AppError> {
    let stop = CancellationToken::new();
    let settings = issuer::IssuerSettings {
        lifetime: args.lifetime,
        clients,
        rfc8414_only: args.rfc8414_only,
        quirks: issuer::Quirks::default(),
    };
    let (running, handle) = issuer::start(args.port, settings, stop.clone().cancelled_owned())
        .await
        .with_context(|| format!("cannot start the development issuer on 127.0.0.1:{}", args.port))?;
    Ok((running, stop, handle))
}

/// The schema `tokend schema` prints, written beside the generated config.
const SCHEMA_FILE: &str = "tokend-config.schema.json";

fn example_config(base_url: &str, dir: &Path, secret: &Path) -> String {
    let tokens = dir.join("tokens");
    let t = |name: &str| tokens.join(name).display().to_string();
    format!(
        "\
# yaml-language-server: $schema={SCHEMA_FILE}
# Generated by `tokend dev` for the development issuer at {base_url}.
# This is the shape of a production config; see README.md for every key.
state_dir: {state}
# The socket API: `{tokend} get demo --socket {socket}`, or curl --unix-socket.
socket: {{ path: {socket} }}
defaults:
  # Discovery: the token endpoint and the keys come from {base_url}/.well-known/openid-configuration.
  issuer: {base_url}
  client_id: tokend-dev
  client_secret: {{ file: {secret} }}
  # The development tokens live briefly; refresh well before they expire.
  refresh: {{ at: 80%, jitter: 10%, min_remaining: 5s }}
  retry: {{ initial: 1s, max: 30s }}
clients:
  demo:
    audience: https://api.example.dev/
    scope: read:demo
    # Check each token's signature, issuer, audience and expiry before publishing it.
    validate: true
    outputs:
      - {{ path: {raw} }}
      - {{ path: {header}, format: header }}
      - {{ path: {json}, format: json }}
      - {{ path: {env}, format: env }}
  demo-basic:
    auth: client_secret_basic
    audience: https://reports.example.dev/
    outputs:
      - {{ path: {basic}, format: header }}
",
        state = dir.join("state").display(),
        socket = dir.join("tokend.sock").display(),
        secret = secret.display(),
        raw = t("demo.token"),
        header = t("demo.header"),
        json = t("demo.json"),
        env = t("demo.env"),
        basic = t("demo-basic.header"),
        tokend = command_name(),
    )
}

/// How to run this very binary from a shell: `tokend` if that is what the PATH finds, else its
/// full path (after `cargo run`, tokend is not on the PATH).
pub fn command_name() -> String {
    let Ok(me) = std::env::current_exe() else {
        return "tokend".into();
    };
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("tokend"))
            .find(|candidate| candidate.is_file())
    });
    match on_path.and_then(|p| p.canonicalize().ok()) {
        Some(found) if me.canonicalize().is_ok_and(|m| m == found) => "tokend".into(),
        _ => me.display().to_string(),
    }
}

fn instructions(base_url: &str, dir: &Path, lifetime: Duration) -> String {
    let d = dir.display();
    let tokend = command_name();
    format!(
        "\
issuer   {base_url}   (discovery: {base_url}/.well-known/openid-configuration)
config   {d}/config.yaml
tokens   {d}/tokens/

Try, in another terminal:
  cat {d}/tokens/demo.token
  curl -H @{d}/tokens/demo.header {base_url}/api/whoami
  jq . {d}/tokens/demo.json
  (. {d}/tokens/demo.env && echo \"${{ACCESS_TOKEN:0:24}}...\")
  curl --unix-socket {d}/tokend.sock http://localhost/v1/tokens/demo
  {tokend} --config {d}/config.yaml status

Tokens live {lifetime} and are refreshed at about 80% of that. Ctrl-C stops.",
        lifetime = humantime::format_duration(lifetime)
    )
}

fn absolute(path: &Path) -> Result<PathBuf, AppError> {
    if path.is_absolute() {
        return Ok(path.to_owned());
    }
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    Ok(cwd.join(path))
}

fn random_secret() -> String {
    let mut bytes = [0u8; 24];
    aws_lc_rs::rand::fill(&mut bytes).expect("system randomness");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn write_private(path: &Path, contents: &[u8]) -> Result<(), AppError> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .and_then(|()| file.write_all(contents))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
