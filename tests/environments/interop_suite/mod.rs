//! Interop with a real, certified OAuth server: oidc-provider (tests/interop, run as its own
//! process behind nginx for TLS and client certificates) and a resource server that validates
//! tokens against its JWKS; and with Glewlwyd, Debian's package, which keeps to the RFCs less
//! closely (tests/interop/glewlwyd.sh). Run alone with `cargo test --test tests interop`.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::T;
use crate::util::*;

const RESOURCE: &str = "https://api.example.test/";

/// Whether `tool` is on the PATH (or in /usr/sbin, where Debian puts nginx).
fn has(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool} || test -x /usr/sbin/{tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Whether the interop suite can run here: node, npm, nginx and openssl (and `extra`, such as
/// faketime) installed, and the npm packages in place (installed here, once, if missing).
/// Without them the test is skipped, loudly; with `TOKEND_REQUIRE_INTEROP=1` (as `.ci/run`
/// sets after installing them) a missing tool fails the test instead.
pub(crate) fn interop_ready(test: &str, extra: &[&str]) -> bool {
    let missing: Vec<&str> = ["node", "npm", "nginx", "openssl"]
        .iter()
        .chain(extra)
        .copied()
        .filter(|t| !has(t))
        .collect();
    let problem = if missing.is_empty() {
        npm_packages().err()
    } else {
        Some(format!("missing {} (see tests/interop/README.md)", missing.join(", ")))
    };
    let Some(problem) = problem else { return true };
    assert!(
        std::env::var_os("TOKEND_REQUIRE_INTEROP").is_none(),
        "{test}: {problem}; TOKEND_REQUIRE_INTEROP is set, so this is an error"
    );
    eprintln!("SKIPPED {test}: {problem} (set TOKEND_REQUIRE_INTEROP=1 to make this an error)");
    false
}

/// `npm ci` in tests/interop if its packages are missing: once per test process, and under a
/// file lock, so parallel tests (or two test runs) never install over each other.
fn npm_packages() -> Result<(), String> {
    static INSTALLED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop");
            let complete = || {
                ["oidc-provider", "jose", "oauth2-mock-server", "yaml-language-server"]
                    .iter()
                    .all(|p| here.join("node_modules").join(p).is_dir())
            };
            let lock = std::fs::File::create(here.join(".npm-install.lock")).map_err(|e| e.to_string())?;
            let _held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
                .map_err(|(_, e)| format!("cannot lock tests/interop for npm ci: {e}"))?;
            if complete() {
                return Ok(());
            }
            let o = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                .current_dir(&here)
                .output()
                .map_err(|e| format!("cannot run npm: {e}"))?;
            if !o.status.success() || !complete() {
                return Err(format!("npm ci failed: {}", String::from_utf8_lossy(&o.stderr)));
            }
            Ok(())
        })
        .clone()
}

/// oidc-provider behind nginx, as started by tests/interop/start.sh.
struct Idp {
    child: Child,
    info: Value,
}

impl Idp {
    fn start(dir: &TestDir, ttl: u32) -> Idp {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/start.sh");
        let mut child = Command::new(&script)
            .env("STATE_DIR", dir.join("idp"))
            .env("TOKEN_TTL", ttl.to_string())
            .env("DEBUG_TOKEN_ERRORS", "0")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join("idp.log")).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        let info = first_json_line(&mut child, Duration::from_secs(120)).unwrap_or_else(|| {
            let log = std::fs::read_to_string(dir.join("idp.log")).unwrap_or_default();
            panic!("the interop IdP did not start (needs node, npm and nginx; see tests/interop/README.md):\n{log}")
        });
        Idp { child, info }
    }

    fn s(&self, pointer: &str) -> String {
        self.info
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no {pointer} in fixture"))
            .to_owned()
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        // SIGTERM: the provider stops its nginx too.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

/// The API half of the flow: validates bearer tokens against the IdP's JWKS.
struct ResourceServer {
    child: Child,
    url: String,
}

impl ResourceServer {
    fn start(dir: &TestDir) -> ResourceServer {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/resource-server.mjs");
        let mut child = Command::new("node")
            .arg(&script)
            .env("STATE_DIR", dir.join("idp"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("node");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let info: Value = serde_json::from_str(&line).expect("resource server JSON line");
        ResourceServer {
            child,
            url: info["url"].as_str().unwrap().to_owned(),
        }
    }

    /// Calls the API with `token`; returns the status and the claims it saw.
    fn call(&self, token: &str) -> (u16, Value) {
        let (status, body) = curl(&["-H", &format!("Authorization: Bearer {token}"), &self.url]);
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }
}

impl Drop for ResourceServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tokend config for the fixture: `clients` are (name, YAML body) pairs.
fn config(dir: &TestDir, idp: &Idp, clients: &[(&str, String)]) -> PathBuf {
    let mut yaml = format!(
        "state_dir: {state}\nsocket: {{ path: {socket} }}\ndefaults:\n  issuer: {issuer}\n  ca_file: {ca}\n  validate: true\n  refresh: {{ min_remaining: 1s }}\n  retry: {{ initial: 200ms, max: 2s }}\nclients:\n",
        state = dir.join("state").display(),
        socket = dir.join("tokend.sock").display(),
        issuer = idp.s("/issuer"),
        ca = idp.s("/ca_file"),
    );
    for (name, body) in clients {
        yaml.push_str(&format!("  {name}:\n"));
        for line in body.lines() {
            yaml.push_str(&format!("    {line}\n"));
        }
        yaml.push_str(&format!(
            "    outputs: [{{ path: {} }}]\n",
            dir.join(&format!("out/{name}.token")).display()
        ));
    }
    dir.write("config.yaml", &yaml)
}

/// The body of a `tls_client_auth` client using this certificate and key.
fn mtls_client(certificate: impl std::fmt::Display, key: impl std::fmt::Display) -> String {
    format!(
        "client_id: mtls-client\nauth: tls_client_auth\nclient_certificate: {certificate}\nclient_key: {key}\nresource: {RESOURCE}"
    )
}

fn openssl(args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .stderr(Stdio::null())
        .status()
        .expect("openssl");
    assert!(status.success(), "openssl {args:?}");
}

/// Every authentication method against oidc-provider (private_key_jwt with each of RS256, ES256,
/// PS256 and EdDSA, and with legacy key files), each with discovery, validation before
/// publishing, the resource server accepting the token, and a refresh.
#[test]
fn interop_every_client_authentication_method_with_oidc_provider() {
    if !interop_ready("interop_every_client_authentication_method_with_oidc_provider", &[]) {
        return;
    }
    let dir = TestDir::new("interop");
    let idp = Idp::start(&dir, 8);
    let rs = ResourceServer::start(&dir);
    // The legacy key forms: the RSA key as PKCS#1, the P-256 key as SEC1.
    let pkcs1 = dir.join("rs256-pkcs1.pem");
    openssl(&[
        "rsa",
        "-traditional",
        "-in",
        &idp.s("/clients/pkjwt_rs256/key_file"),
        "-out",
        pkcs1.to_str().unwrap(),
    ]);
    let sec1 = dir.join("es256-sec1.pem");
    openssl(&[
        "ec",
        "-in",
        &idp.s("/clients/pkjwt_es256/key_file"),
        "-out",
        sec1.to_str().unwrap(),
    ]);
    let post_secret = dir.secret("post-secret", &idp.s("/clients/post/client_secret"));
    let basic_secret = dir.secret("basic-secret", &idp.s("/clients/basic/client_secret"));
    let clients = [
        (
            "post",
            format!(
                "client_id: post-client\nclient_secret: {{ file: {} }}\nresource: {RESOURCE}",
                post_secret.display()
            ),
        ),
        (
            "basic",
            format!(
                "client_id: \"{}\"\nauth: client_secret_basic\nclient_secret: {{ file: {} }}\naudience: {RESOURCE}",
                idp.s("/clients/basic/client_id"),
                basic_secret.display()
            ),
        ),
        (
            "rs256",
            format!(
                "client_id: pkjwt-rs256\nauth: private_key_jwt\nprivate_key: {}\nkey_id: pkjwt-rs256\nresource: {RESOURCE}",
                pkcs1.display()
            ),
        ),
        (
            "es256",
            format!(
                "client_id: pkjwt-es256\nauth: private_key_jwt\nprivate_key: {{ credential: es256.pem }}\nkey_id: pkjwt-es256\nassertion_audience: issuer\nresource: {RESOURCE}",
            ),
        ),
        (
            "ps256",
            format!(
                "client_id: pkjwt-ps256\nauth: private_key_jwt\nprivate_key: {}\nsigning_alg: PS256\nresource: {RESOURCE}",
                idp.s("/clients/pkjwt_ps256/key_file")
            ),
        ),
        (
            "eddsa",
            format!(
                "client_id: pkjwt-eddsa\nauth: private_key_jwt\nprivate_key: {{ env: TOKEND_TEST_EDDSA_KEY }}\nresource: {RESOURCE}",
            ),
        ),
        (
            "mtls",
            mtls_client(
                format_args!("{{ file: {} }}", idp.s("/clients/mtls/cert_file")),
                "{ credential: mtls.key }",
            ),
        ),
    ];
    // Keys given as systemd credentials (`LoadCredential=`) and through the environment (a
    // Kubernetes Secret as `env`), as well as by path.
    let credentials = dir.join("credentials");
    fs::create_dir(&credentials).unwrap();
    fs::copy(&sec1, credentials.join("es256.pem")).unwrap();
    fs::copy(idp.s("/clients/mtls/key_file"), credentials.join("mtls.key")).unwrap();
    let eddsa_pem = fs::read_to_string(idp.s("/clients/pkjwt_eddsa/key_file")).unwrap();
    let env = [
        ("CREDENTIALS_DIRECTORY", credentials.to_str().unwrap()),
        ("TOKEND_TEST_EDDSA_KEY", eddsa_pem.as_str()),
    ];
    let cfg = config(&dir, &idp, &clients);
    let check = Command::new(BIN)
        .args(["--config", cfg.to_str().unwrap(), "check"])
        .envs(env)
        .env_remove("NOTIFY_SOCKET")
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(
        report.contains("systemd credential es256.pem")
            && report.contains("environment variable TOKEND_TEST_EDDSA_KEY"),
        "{report}"
    );
    let daemon = Tokend::spawn(&dir, &["--config", cfg.to_str().unwrap(), "run"], &env);
    wait_ready(&dir.join("tokend.sock"));
    let names = ["post", "basic", "rs256", "es256", "ps256", "eddsa", "mtls"];
    let mut first = Vec::new();
    for name in names {
        let token = read(&dir.join(&format!("out/{name}.token"))).unwrap();
        let claims = claims(&token);
        assert_eq!(claims["aud"], RESOURCE, "{name}");
        assert_eq!(claims["iss"], idp.s("/issuer").as_str(), "{name}");
        let (status, seen) = rs.call(&token);
        assert_eq!(status, 200, "{name}: the resource server refused the token: {seen}");
        first.push(token);
    }
    // Each refreshes before its 8 s token expires, validated and accepted again.
    for (name, old) in names.iter().zip(&first) {
        let path = dir.join(&format!("out/{name}.token"));
        let new = wait_for(T, "a refreshed token", || read(&path).filter(|t| t != old));
        assert_eq!(rs.call(&new).0, 200, "{name} after refresh");
    }
    let log = daemon.output();
    assert!(!log.contains("WARN") && !log.contains("ERROR"), "{log}");
    assert!(daemon.stop().success());
}

/// What must fail, fails, clearly, and publishes nothing.
#[test]
fn interop_bad_credentials_and_bad_tokens_are_refused_and_never_published() {
    if !interop_ready(
        "interop_bad_credentials_and_bad_tokens_are_refused_and_never_published",
        &[],
    ) {
        return;
    }
    let dir = TestDir::new("interop-negative");
    let idp = Idp::start(&dir, 60);
    let wrong_secret = dir.secret("wrong-secret", "not-the-secret");
    let right_secret = dir.secret("post-secret", &idp.s("/clients/post/client_secret"));
    // A real JWKS of another issuer, with other keys: tokend's own development issuer.
    let other = Issuer::start(&dir, &[("x", "y")], "1h");
    let localhost_issuer = idp.s("/issuer").replace("127.0.0.1", "localhost");
    // A JWKS that has the IdP's key id, but another key behind it: a forged signature.
    let forged_jwks = serve_once_per_request(forged_jwks(&idp));
    let clients = [
        (
            "wrong-secret",
            format!(
                "client_id: post-client\nclient_secret: {{ file: {} }}\nresource: {RESOURCE}",
                wrong_secret.display()
            ),
        ),
        (
            "wrong-key",
            format!(
                "client_id: pkjwt-rs256\nauth: private_key_jwt\nprivate_key: {}\nresource: {RESOURCE}",
                idp.s("/negative/unregistered_rs256_key_file")
            ),
        ),
        (
            "rogue-cert",
            mtls_client(idp.s("/negative/rogue_cert_file"), idp.s("/negative/rogue_key_file")),
        ),
        (
            "wrong-audience",
            format!(
                "client_id: post-client\nclient_secret: {{ file: {} }}\nresource: {RESOURCE}\nvalidate: {{ audience: https://expected.example/ }}",
                right_secret.display()
            ),
        ),
        (
            "other-key",
            format!(
                "client_id: post-client\nclient_secret: {{ file: {} }}\nresource: {RESOURCE}\nvalidate: {{ jwks_uri: {}/jwks.json }}",
                right_secret.display(),
                other.url
            ),
        ),
        (
            "issuer-mismatch",
            format!(
                "issuer: {localhost_issuer}\nclient_id: post-client\nclient_secret: {{ file: {} }}\nresource: {RESOURCE}",
                right_secret.display()
            ),
        ),
        (
            "opaque",
            format!(
                "client_id: post-client\nclient_secret: {{ file: {} }}\nvalidate: {{ audience: {RESOURCE} }}",
                right_secret.display()
            ),
        ),
        (
            "bad-signature",
            format!(
                "client_id: post-client\nclient_secret: {{ file: {} }}\nresource: {RESOURCE}\nvalidate: {{ jwks_uri: {forged_jwks} }}",
                right_secret.display()
            ),
        ),
    ];
    let cfg = config(&dir, &idp, &clients);
    let daemon = Tokend::run(&dir, &cfg);
    let first_attempts = |rejected: &[Value]| {
        let clients: std::collections::BTreeSet<&str> = rejected.iter().filter_map(|e| e["client"].as_str()).collect();
        clients.len()
    };
    let rejected = wait_for(Duration::from_secs(30), "a rejection for each of the 8 clients", || {
        let rejected: Vec<Value> = daemon
            .events()
            .into_iter()
            .filter(|e| is(e, "outcome", "rejected"))
            .collect();
        (first_attempts(&rejected) == 8).then_some(rejected)
    });
    let expect = |client: &str, needle: &str| {
        let found = rejected
            .iter()
            .find(|e| is(e, "client", client) && e["error"].as_str().is_some_and(|m| m.contains(needle)));
        assert!(
            found.is_some(),
            "no rejection of {client} with {needle:?} in:\n{}",
            daemon.output()
        );
        assert!(
            !dir.join(&format!("out/{client}.token")).exists(),
            "{client} published a token"
        );
    };
    expect("wrong-secret", "HTTP 401 `invalid_client`");
    expect("wrong-key", "HTTP 401 `invalid_client`");
    expect("rogue-cert", "HTTP 401 `invalid_client`");
    expect(
        "wrong-audience",
        "`aud` is \"https://api.example.test/\", expected one of [\"https://expected.example/\"]",
    );
    expect("other-key", "no key in the issuer's JWKS matches the token");
    expect(
        "issuer-mismatch",
        &format!("names issuer `{}`; refusing to use it", idp.s("/issuer")),
    );
    expect("opaque", "the token is not a JWT, so it cannot be validated");
    expect("bad-signature", "the signature does not verify with the issuer's key");
    assert_eq!(socket_status(&dir.join("tokend.sock"), "/readyz"), Some(503));
    assert!(daemon.stop().success());
}

/// A token that is already expired by tokend's clock (2 h ahead of the IdP's, through
/// libfaketime) fails validation and is not published.
#[test]
fn interop_an_expired_token_is_not_published() {
    if !interop_ready("interop_an_expired_token_is_not_published", &["faketime"]) {
        return;
    }
    let dir = TestDir::new("interop-expired");
    let idp = Idp::start(&dir, 60);
    let secret = dir.secret("post-secret", &idp.s("/clients/post/client_secret"));
    let cfg = config(
        &dir,
        &idp,
        &[(
            "late",
            format!(
                "client_id: post-client\nclient_secret: {{ file: {} }}\nresource: {RESOURCE}",
                secret.display()
            ),
        )],
    );
    let o = Command::new("faketime")
        .args(["-f", "+2h", BIN, "--config", cfg.to_str().unwrap(), "once"])
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("token validation failed: `exp` is"), "{err}");
    assert!(err.contains("the token is expired"), "{err}");
    assert!(!dir.join("out/late.token").exists());
    // The same, on time, works.
    let o = tokend(&["--config", cfg.to_str().unwrap(), "once"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Replacing the key file or the certificate and key is enough: the next request uses them.
#[test]
fn interop_rotated_keys_and_certificates_are_picked_up_without_a_restart() {
    if !interop_ready(
        "interop_rotated_keys_and_certificates_are_picked_up_without_a_restart",
        &[],
    ) {
        return;
    }
    let dir = TestDir::new("interop-rotation");
    let idp = Idp::start(&dir, 60);
    let key = dir.join("signing.pem");
    std::fs::copy(idp.s("/negative/unregistered_rs256_key_file"), &key).unwrap();
    let (cert, cert_key) = (dir.join("client.crt"), dir.join("client.key"));
    std::fs::copy(idp.s("/negative/rogue_cert_file"), &cert).unwrap();
    std::fs::copy(idp.s("/negative/rogue_key_file"), &cert_key).unwrap();
    let cfg = config(
        &dir,
        &idp,
        &[
            (
                "jwt",
                format!(
                    "client_id: pkjwt-rs256\nauth: private_key_jwt\nprivate_key: {}\nresource: {RESOURCE}",
                    key.display()
                ),
            ),
            (
                "mtls",
                format!(
                    "client_id: mtls-client\nauth: tls_client_auth\nclient_certificate: {}\nclient_key: {}\nresource: {RESOURCE}",
                    cert.display(),
                    cert_key.display()
                ),
            ),
        ],
    );
    let daemon = Tokend::run(&dir, &cfg);
    for client in ["jwt", "mtls"] {
        daemon.wait_event(Duration::from_secs(30), "the first rejection", |e| {
            is(e, "outcome", "rejected") && is(e, "client", client)
        });
    }
    std::fs::copy(idp.s("/clients/pkjwt_rs256/key_file"), &key).unwrap();
    std::fs::copy(idp.s("/clients/mtls/cert_file"), &cert).unwrap();
    std::fs::copy(idp.s("/clients/mtls/key_file"), &cert_key).unwrap();
    // The next attempts (retry.max = 2s) read the new files.
    wait_for(T, "the jwt client's token", || read(&dir.join("out/jwt.token")));
    wait_for(T, "the mtls client's token", || read(&dir.join("out/mtls.token")));
    assert!(daemon.stop().success());
}

/// A CONNECT proxy that counts the tunnels it opens.
fn connect_proxy() -> (String, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let tunnels = Arc::new(AtomicUsize::new(0));
    let count = tunnels.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let count = count.clone();
            std::thread::spawn(move || {
                let mut client = client;
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && client.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let Some(target) = head.strip_prefix("CONNECT ").and_then(|r| r.split_whitespace().next()) else {
                    return;
                };
                let Ok(upstream) = std::net::TcpStream::connect(target) else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let _ = client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
                let (mut c2, mut u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut u2, &mut c2);
                });
                let mut upstream = upstream;
                let _ = std::io::copy(&mut client, &mut upstream);
            });
        }
    });
    (url, tunnels)
}

/// HTTPS_PROXY from the environment is used; NO_PROXY and `proxy: none` bypass it; a configured
/// `proxy:` URL is used whatever the environment says.
#[test]
fn interop_proxies_from_the_environment_and_the_config() {
    if !interop_ready("interop_proxies_from_the_environment_and_the_config", &[]) {
        return;
    }
    let dir = TestDir::new("interop-proxy");
    let idp = Idp::start(&dir, 60);
    let secret = dir.secret("post-secret", &idp.s("/clients/post/client_secret"));
    let client = |extra: &str| {
        let body = format!(
            "client_id: post-client\nclient_secret: {{ file: {} }}\nresource: {RESOURCE}\n{extra}",
            secret.display()
        );
        config(&dir, &idp, &[("p", body)]).to_str().unwrap().to_owned()
    };
    let (proxy, tunnels) = connect_proxy();
    let once = |cfg: &str, env: &[(&str, &str)]| {
        let o = Command::new(BIN)
            .args(["--config", cfg, "once", "--force"])
            .env_remove("HTTPS_PROXY")
            .env_remove("NO_PROXY")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    let plain = client("");
    once(&plain, &[("HTTPS_PROXY", &proxy)]);
    let through_env = tunnels.load(Ordering::SeqCst);
    assert!(through_env >= 1, "HTTPS_PROXY was not used");
    once(&plain, &[("HTTPS_PROXY", &proxy), ("NO_PROXY", "127.0.0.1")]);
    assert_eq!(tunnels.load(Ordering::SeqCst), through_env, "NO_PROXY was not honoured");
    once(&client("proxy: none"), &[("HTTPS_PROXY", &proxy)]);
    assert_eq!(
        tunnels.load(Ordering::SeqCst),
        through_env,
        "`proxy: none` used the environment's proxy"
    );
    once(&client(&format!("proxy: {proxy}")), &[]);
    assert!(
        tunnels.load(Ordering::SeqCst) > through_env,
        "the configured proxy was not used"
    );
}

/// At trace level, for every authentication method, nothing secret reaches the output: no
/// secret, no private key, no client assertion, no token (no JWT at all: they start `eyJ`).
#[test]
fn interop_nothing_secret_is_printed_at_trace_level() {
    if !interop_ready("interop_nothing_secret_is_printed_at_trace_level", &[]) {
        return;
    }
    let dir = TestDir::new("interop-trace");
    let idp = Idp::start(&dir, 60);
    let post_secret = idp.s("/clients/post/client_secret");
    let basic_secret = idp.s("/clients/basic/client_secret");
    let post_file = dir.secret("post-secret", &post_secret);
    let basic_file = dir.secret("basic-secret", &basic_secret);
    let key_file = idp.s("/clients/pkjwt_es256/key_file");
    let clients = [
        (
            "post",
            format!(
                "client_id: post-client\nclient_secret: {{ file: {} }}\nresource: {RESOURCE}",
                post_file.display()
            ),
        ),
        (
            "basic",
            format!(
                "client_id: \"{}\"\nauth: client_secret_basic\nclient_secret: {{ file: {} }}\nresource: {RESOURCE}",
                idp.s("/clients/basic/client_id"),
                basic_file.display()
            ),
        ),
        (
            "jwt",
            format!("client_id: pkjwt-es256\nauth: private_key_jwt\nprivate_key: {key_file}\nresource: {RESOURCE}"),
        ),
        (
            "mtls",
            mtls_client(idp.s("/clients/mtls/cert_file"), idp.s("/clients/mtls/key_file")),
        ),
    ];
    let cfg = config(&dir, &idp, &clients);
    let mut printed = String::new();
    for args in [&["once"][..], &["once", "--force"], &["check"]] {
        let o = Command::new(BIN)
            .args(["--config", cfg.to_str().unwrap(), "--log-level", "trace"])
            .args(args)
            .env("RUST_LOG", "trace")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        printed.push_str(&String::from_utf8_lossy(&o.stdout));
        printed.push_str(&String::from_utf8_lossy(&o.stderr));
    }
    assert!(
        printed.len() > 20_000,
        "trace output unexpectedly small ({} bytes)",
        printed.len()
    );
    let pem_lines = |path: &str| -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with("-----") && l.len() > 20)
            .map(str::to_owned)
            .collect()
    };
    let mut forbidden = vec![
        post_secret.clone(),
        basic_secret.clone(),
        url::form_urlencoded::byte_serialize(post_secret.as_bytes()).collect(),
        "client_assertion=".to_owned(),
        "eyJ".to_owned(),
    ];
    forbidden.extend(pem_lines(&key_file));
    forbidden.extend(pem_lines(&idp.s("/clients/mtls/key_file")));
    for name in ["post", "basic", "jwt", "mtls"] {
        forbidden.push(read(&dir.join(&format!("out/{name}.token"))).unwrap());
    }
    for f in &forbidden {
        assert!(!printed.contains(f.as_str()), "leaked {f:?}");
    }
}

/// A JWKS with the IdP's signing key id, but the public key of another RSA key.
fn forged_jwks(idp: &Idp) -> String {
    use base64::Engine;
    let o = Command::new("openssl")
        .args([
            "rsa",
            "-noout",
            "-modulus",
            "-in",
            &idp.s("/negative/unregistered_rs256_key_file"),
        ])
        .output()
        .expect("openssl");
    let hex = String::from_utf8(o.stdout)
        .unwrap()
        .trim()
        .trim_start_matches("Modulus=")
        .to_owned();
    let modulus: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    serde_json::json!({ "keys": [{
        "kty": "RSA", "use": "sig", "alg": "RS256", "kid": idp.s("/token_signing_kid"),
        "n": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(modulus), "e": "AQAB",
    }]})
    .to_string()
}

/// Serves `body` as JSON to every request on a loopback port; returns the URL.
fn serve_once_per_request(body: String) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/jwks", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(answer.as_bytes());
        }
    });
    url
}

/// `ca_file` adds trust roots on top of the system's, it does not replace them. Two IdPs with
/// their own CAs: IdP 2's CA plays the system store (`SSL_CERT_FILE`, which the platform
/// verifier reads on Linux), IdP 1's is given as `ca_file`.
#[test]
fn interop_ca_file_adds_to_the_system_roots() {
    if !interop_ready("interop_ca_file_adds_to_the_system_roots", &[]) {
        return;
    }
    let dir1 = TestDir::new("interop-ca1");
    let dir2 = TestDir::new("interop-ca2");
    let (idp1, idp2) = (Idp::start(&dir1, 60), Idp::start(&dir2, 60));
    let dir = TestDir::new("interop-ca");
    let secret1 = dir.secret("s1", &idp1.s("/clients/post/client_secret"));
    let secret2 = dir.secret("s2", &idp2.s("/clients/post/client_secret"));
    let body = |idp: &Idp, secret: &Path, ca: Option<&str>| {
        let ca = ca.map_or(String::new(), |c| format!("\nca_file: {c}"));
        format!(
            "issuer: {}\nclient_id: post-client\nclient_secret: {{ file: {} }}\nresource: {RESOURCE}{ca}",
            idp.s("/issuer"),
            secret.display()
        )
    };
    let ca1 = idp1.s("/ca_file");
    let mut cfg = std::fs::read_to_string(config(
        &dir,
        &idp1,
        &[
            ("private-ca", body(&idp1, &secret1, Some(&ca1))),
            ("system", body(&idp2, &secret2, None)),
            ("both", body(&idp2, &secret2, Some(&ca1))),
        ],
    ))
    .unwrap();
    // The defaults name IdP 1's CA for every client; this test decides per client.
    cfg = cfg.replacen(&format!("\n  ca_file: {ca1}\n"), "\n", 1);
    let cfg = dir.write("config.yaml", &cfg);
    let o = Command::new(BIN)
        .args(["--config", cfg.to_str().unwrap(), "once"])
        .env("SSL_CERT_FILE", idp2.s("/ca_file"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for name in ["private-ca", "system", "both"] {
        assert!(read(&dir.join(&format!("out/{name}.token"))).is_some(), "{name}");
    }
    // Control: without `ca_file`, IdP 1's certificate is not trusted.
    let cfg_text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(&format!("\n    ca_file: {ca1}"), "");
    let no_ca = dir.write("no-ca.yaml", &cfg_text);
    let o = Command::new(BIN)
        .args(["--config", no_ca.to_str().unwrap(), "once", "--force"])
        .env("SSL_CERT_FILE", idp2.s("/ca_file"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("client=private-ca") && err.to_lowercase().contains("certificate"),
        "{err}"
    );
    // The line says what fixes it, the failure is backed off like a rejection (retrying soon
    // cannot make the certificate trusted), and no line about it goes without the client.
    assert!(err.contains("name that CA in `ca_file`"), "{err}");
    assert!(err.contains("outcome=\"rejected\""), "{err}");
    for line in err.lines().filter(|l| l.to_lowercase().contains("certificate")) {
        assert!(line.contains("client=private-ca"), "a line without its client: {line}");
    }
    // `check --connect` finds the same before any token is asked for: it reaches each issuer
    // and token endpoint over TLS, and says which setting fixes an untrusted certificate.
    let check = |cfg: &Path| {
        let o = Command::new(BIN)
            .args(["--config", cfg.to_str().unwrap(), "check", "--connect"])
            .env("SSL_CERT_FILE", idp2.s("/ca_file"))
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        (o.status.code(), text)
    };
    let (code, text) = check(&cfg);
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(text.matches("TLS certificate verified").count(), 3, "{text}");
    let (code, text) = check(&no_ca);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("problem: private-ca: https://127.0.0.1:")
            && text.contains("the server's TLS certificate is not trusted")
            && text.contains("name that CA in `ca_file`"),
        "{text}"
    );
    assert_eq!(text.matches("TLS certificate verified").count(), 2, "{text}");
    // Without --connect, nothing is reached: the same file passes.
    let o = tokend(&["--config", no_ca.to_str().unwrap(), "check"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!String::from_utf8_lossy(&o.stdout).contains("  connection "));
}

/// The token proxy in front of the interop resource server, which verifies the JWT against
/// oidc-provider's JWKS (signature, issuer, audience, expiry): a caller without any token gets
/// the API's answer, through several refreshes of 8 s tokens.
#[test]
fn interop_the_token_proxy_reaches_a_resource_server_that_verifies_the_jwt() {
    if !interop_ready(
        "interop_the_token_proxy_reaches_a_resource_server_that_verifies_the_jwt",
        &[],
    ) {
        return;
    }
    let dir = TestDir::new("interop-proxy");
    let idp = Idp::start(&dir, 8);
    let rs = ResourceServer::start(&dir);
    let secret = dir.secret("post-secret", &idp.s("/clients/post/client_secret"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = config(
        &dir,
        &idp,
        &[(
            "post",
            format!(
                "client_id: post-client\nclient_secret: {{ file: {} }}\nresource: {RESOURCE}",
                secret.display()
            ),
        )],
    );
    let mut yaml = fs::read_to_string(&cfg).unwrap();
    // And an https upstream behind the fixture's private CA, trusted through the client's
    // `ca_file` (the IdP itself serves as one).
    let tls_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    yaml.push_str(&format!(
        "proxies:\n  - {{ client: post, upstream: \"{}\", listen: \"127.0.0.1:{port}\" }}\n  - {{ client: post, upstream: \"{}\", listen: \"127.0.0.1:{tls_port}\" }}\n",
        rs.url,
        idp.s("/issuer")
    ));
    let cfg = dir.write("config.yaml", &yaml);
    let daemon = Tokend::run(&dir, &cfg);
    wait_ready(&dir.join("tokend.sock"));
    let (status, body) = curl(&[&format!("http://127.0.0.1:{tls_port}/.well-known/openid-configuration")]);
    assert_eq!(status, 200, "{body}");
    let metadata: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(metadata["issuer"], idp.s("/issuer").as_str());
    let started = std::time::Instant::now();
    let mut subjects = std::collections::HashSet::new();
    while started.elapsed() < Duration::from_secs(18) {
        let (status, body) = curl(&[&format!("http://127.0.0.1:{port}/")]);
        assert_eq!(status, 200, "the resource server refused: {body}");
        let seen: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(seen["claims"]["aud"], RESOURCE);
        subjects.insert(seen["claims"]["jti"].as_str().unwrap_or_default().to_owned());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(subjects.len() >= 2, "the requests spanned no refresh: {subjects:?}");
    assert!(daemon.stop().success());
}

/// Glewlwyd (Debian's package), a server nobody here wrote and that keeps to the RFCs less
/// closely: every refusal it answers (a bare 403 for a wrong secret, a forbidden auth method,
/// an unknown key or no scope; `scope_invalid`; a 404) gets advice naming the setting to check,
/// Basic with a secret it does not decode gets through with `basic_encoding: raw`, its narrowed
/// scope is warned about, and no secret reaches a log. The checks are in the script, which
/// runs Glewlwyd behind nginx with TLS from a private CA.
#[test]
fn interop_glewlwyd_refusals_get_advice_that_names_the_setting() {
    let test = "interop_glewlwyd_refusals_get_advice_that_names_the_setting";
    let missing: Vec<&str> = ["glewlwyd", "nginx", "openssl", "curl", "jq", "sqlite3", "python3"]
        .into_iter()
        .filter(|t| !has(t))
        .collect();
    let ready = if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("missing {} (Debian packages)", missing.join(", ")))
    };
    if unless_skipped(test, "TOKEND_REQUIRE_INTEROP", ready).is_none() {
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/glewlwyd.sh");
    run_checks("glewlwyd", &script, &[std::ffi::OsStr::new(BIN)]);
}

/// An editor flags a typo in config.yaml, thanks to the schema tokend ships: the real YAML
/// language server (the one VS Code, Neovim and JetBrains run), given a config whose first line
/// names `packaging/tokend-config.schema.json` as the shipped ones do, reports an unknown key at
/// its line and a misspelt value, and nothing once both are fixed; `tokend check` agrees.
#[test]
fn interop_the_yaml_language_server_flags_typos_through_the_shipped_schema() {
    let test = "interop_the_yaml_language_server_flags_typos_through_the_shipped_schema";
    if !interop_ready(test, &[]) {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = TestDir::new("yamlls");
    let secret = dir.secret("secrets/billing", "yamlls-not-a-real-secret-7f3a");
    let fixed = format!(
        "# yaml-language-server: $schema={schema}
clients:
  billing:
    token_url: https://idp.test/oauth/token
    client_id: billing
    client_secret: {{ file: {secret} }}
    auth: client_secret_basic
    outputs:
      - {{ path: {out}/billing.token }}
",
        schema = root.join("packaging/tokend-config.schema.json").display(),
        secret = secret.display(),
        out = dir.join("out").display(),
    );
    let typos = fixed
        .replace("token_url:", "tokne_url:")
        .replace("client_secret_basic", "client_secret_bsic");
    let editor = |name: &str, yaml: &str| -> (PathBuf, Vec<String>) {
        let config = dir.write(name, yaml);
        let out = Command::new("node")
            .arg(root.join("tests/interop/yaml-ls-check.mjs"))
            .arg(&config)
            .output()
            .expect("run node");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "yaml-ls-check.mjs {name}: {}\n{stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        (config, stdout.lines().map(str::to_owned).collect())
    };
    let check = |config: &Path| {
        Command::new(BIN)
            .args(["--config".as_ref(), config.as_os_str(), "check".as_ref()])
            .output()
            .expect("run tokend check")
    };

    let (config, diagnostics) = editor("typos.yaml", &typos);
    assert!(
        diagnostics
            .iter()
            .any(|d| d.starts_with("4:5 ") && d.contains("tokne_url")),
        "no diagnostic for the unknown key `tokne_url` at line 4: {diagnostics:#?}"
    );
    assert!(
        diagnostics
            .iter()
            .any(|d| d.starts_with("7:11 ") && d.contains("client_secret_basic")),
        "no diagnostic for `auth: client_secret_bsic` at line 7 naming the valid values: {diagnostics:#?}"
    );
    assert_eq!(diagnostics.len(), 2, "{diagnostics:#?}");
    let refused = check(&config);
    assert_eq!(refused.status.code(), Some(78), "tokend check accepted the typos");

    let (config, diagnostics) = editor("fixed.yaml", &fixed);
    assert!(
        diagnostics.is_empty(),
        "the fixed config still has diagnostics: {diagnostics:#?}"
    );
    // Exit 1 would be the host's problem (say, an unwritable state directory), not the config's.
    let accepted = check(&config);
    assert!(
        matches!(accepted.status.code(), Some(0 | 1)),
        "tokend check refused the fixed config: {}",
        String::from_utf8_lossy(&accepted.stderr)
    );
}
