//! The socket API with the real binary: `curl --unix-socket`, callers of other uids via setpriv,
//! stale sockets, connection floods, reloads, and the `get`/`status` commands. Hostile and broken
//! callers byte by byte, and the socket file's life: `hardening`.

mod hardening;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;

use super::{SECRET, T, config, out, running_as_root};
use crate::hand_to_nobody;
use crate::util::*;
use std::fs;

/// curl over the socket; returns (status, headers, body).
fn get(socket: &Path, path: &str, extra: &[&str]) -> (u16, String, String) {
    let o = Command::new("curl")
        .args(["-sS", "--max-time", "30", "-D", "-", "--unix-socket"])
        .arg(socket)
        .args(extra)
        .arg(format!("http://localhost{path}"))
        .output()
        .expect("curl");
    assert!(
        o.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let text = String::from_utf8(o.stdout).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head.to_lowercase(), body.to_owned())
}

/// Runs a command as uid/gid 65534 with the given supplementary groups.
fn as_nobody(groups: &[u32], program: &str, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid", "65534", "--regid", "65534"]);
    if groups.is_empty() {
        cmd.arg("--clear-groups");
    } else {
        cmd.arg("--groups")
            .arg(groups.iter().map(|g| g.to_string()).collect::<Vec<_>>().join(","));
    }
    cmd.arg(program).args(args).output().expect("setpriv")
}

fn header<'a>(headers: &'a str, name: &str) -> Option<&'a str> {
    headers
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .map(str::trim)
}

/// Lets uid 65534 reach files in the test directory.
fn open_up(dir: &TestDir) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn tokens_are_served_as_text_and_json_with_the_documented_statuses() {
    let dir = TestDir::new("api");
    let issuer = Issuer::start(&dir, &[("app", SECRET)], "1h");
    let black_hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let cfg = config(
        &dir,
        &issuer,
        &[
            (
                "a",
                &format!(
                    "audience: https://a/\nscope: read:a\noutputs: [{{ path: {} }}, {{ path: {}, format: json }}]",
                    out(&dir, "a.token"),
                    out(&dir, "a.json")
                ),
            ),
            (
                "pending",
                &format!("token_url: http://{}/t", black_hole.local_addr().unwrap()),
            ),
        ],
    );
    let daemon = Tokend::run(&dir, &cfg);
    let socket = dir.join("tokend.sock");
    let token = wait_for(T, "a's token", || read(&dir.join("out/a.token")));
    // The socket announces a token once its files hold it: a moment after the file appears.
    wait_for(T, "a's token on the socket", || {
        (socket_status(&socket, "/v1/tokens/a") == Some(200)).then_some(())
    });

    let (status, headers, body) = get(&socket, "/v1/tokens/a", &[]);
    assert_eq!((status, body.as_str()), (200, token.as_str()));
    assert_eq!(header(&headers, "content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(header(&headers, "cache-control"), Some("no-store"));
    let version: u64 = header(&headers, "token-version").unwrap().parse().unwrap();

    // One JSON document for a token, from the socket and in a `format: json` file: the same
    // keys, the same values (but `expires_in`, counted when each was made).
    let file: Value = serde_json::from_str(&wait_for(T, "a's JSON file", || read(&dir.join("out/a.json")))).unwrap();
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    let without_expires_in = |v: &Value| {
        let mut v = v.clone();
        v.as_object_mut().unwrap().remove("expires_in");
        v
    };
    assert_eq!(
        keys(&file),
        [
            "access_token",
            "expires_at",
            "expires_at_unix",
            "expires_in",
            "issued_at",
            "scope",
            "token_type"
        ]
    );
    for json_request in [&["-H", "Accept: application/json"][..], &[]] {
        let path = if json_request.is_empty() {
            "/v1/tokens/a?format=json"
        } else {
            "/v1/tokens/a"
        };
        let (status, headers, body) = get(&socket, path, json_request);
        assert_eq!(status, 200);
        assert_eq!(header(&headers, "content-type"), Some("application/json"));
        assert_eq!(header(&headers, "token-version"), Some(version.to_string().as_str()));
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(keys(&v), keys(&file));
        assert_eq!(without_expires_in(&v), without_expires_in(&file));
        assert_eq!(v["access_token"], token.as_str());
        assert_eq!(v["token_type"], "Bearer");
        assert_eq!(v["scope"], "read:a");
        assert!(v["expires_in"].as_u64().unwrap() > 3500);
        assert!(v["expires_at"].as_str().unwrap().ends_with('Z'));
    }
    // JSON refused (q=0), or not preferred: the token as text.
    for accept in [
        "Accept: application/json;q=0",
        "Accept: application/json;q=0.5, text/plain",
    ] {
        let (status, headers, body) = get(&socket, "/v1/tokens/a", &["-H", accept]);
        assert_eq!((status, body.as_str()), (200, token.as_str()), "{accept}");
        assert_eq!(header(&headers, "content-type"), Some("text/plain; charset=utf-8"));
    }
    // HEAD: the headers of the GET, no body (curl -I prints the head twice with -D).
    let (status, headers, body) = get(&socket, "/v1/tokens/a", &["-I"]);
    assert_eq!(status, 200);
    assert!(
        body.trim().is_empty() && !body.contains(&token[..20]),
        "HEAD sent a body: {body:?}"
    );
    assert_eq!(
        header(&headers, "content-length"),
        Some(token.len().to_string().as_str())
    );

    let (status, _, _) = get(&socket, "/v1/tokens/nope", &[]);
    assert_eq!(status, 404);
    let (status, headers, body) = get(&socket, "/v1/tokens/pending", &[]);
    assert_eq!(status, 503);
    assert!(header(&headers, "retry-after").is_some(), "{headers}");
    assert!(body.contains("no token has been obtained yet"), "{body}");
    let (status, headers, _) = get(&socket, "/v1/tokens/a", &["-X", "POST"]);
    assert_eq!(status, 405);
    assert_eq!(
        header(&headers, "allow"),
        Some("get, head"),
        "(headers are lowercased here)"
    );
    for bad in [
        "/v1/tokens/a?format=xml",
        "/v1/tokens/a?wait=soon",
        "/v1/tokens/a?token=1",
        "/healthz?x=1",
    ] {
        assert_eq!(get(&socket, bad, &[]).0, 400, "{bad}");
    }
    assert_eq!(get(&socket, "/v2/anything", &[]).0, 404);
    // Size limits: a request head over 8 KiB gets 431; a body is never read (405 before upload).
    let big_header = format!("X-Big: {}", "a".repeat(10_000));
    assert_eq!(get(&socket, "/v1/tokens/a", &["-H", &big_header]).0, 431);
    let body_file = dir.write("big-body", &"x".repeat(5_000_000));
    let (status, _, _) = get(
        &socket,
        "/v1/tokens/a",
        &["-X", "POST", "--data-binary", &format!("@{}", body_file.display())],
    );
    assert_eq!(status, 405);
    // (Status and body only: the heads of two requests differ in their `date` across a second.)
    let (status, _, body) = get(&socket, "/healthz", &[]);
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, _, body) = get(&socket, "/readyz", &[]);
    assert_eq!(
        (status, body.as_str()),
        (
            503,
            "not ready: 1 of 2 clients have a valid token\npending: no token yet\n"
        )
    );

    let (status, _, body) = get(&socket, "/v1/tokens", &[]);
    assert_eq!(status, 200);
    let list: Value = serde_json::from_str(&body).unwrap();
    let states: Vec<(&str, &str)> = list["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["state"].as_str().unwrap()))
        .collect();
    assert_eq!(states, vec![("a", "ok"), ("pending", "pending")]);
    assert!(!body.contains(&token), "the listing never contains a token");

    let (status, headers, body) = get(&socket, "/metrics", &[]);
    assert_eq!(status, 200);
    assert!(
        header(&headers, "content-type")
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    // Latency is the endpoint's: one series per IdP, not per client.
    let latency = format!(
        "tokend_refresh_duration_seconds_count{{endpoint=\"{}\"}} 1",
        issuer.token_url()
    );
    for metric in [
        "tokend_token_expiry_timestamp_seconds{client=\"a\"}",
        "tokend_refreshes_total{client=\"a\",outcome=\"refreshed\"} 1",
        &latency,
        "tokend_socket_requests_total{status=\"200\"}",
        "tokend_socket_requests_total{status=\"404\"}",
        "tokend_socket_requests_total{status=\"503\"}",
    ] {
        assert!(body.contains(metric), "missing {metric} in\n{body}");
    }
    let socket_path = socket.clone();
    assert!(daemon.stop().success());
    assert!(!socket_path.exists(), "the socket is removed on clean exit");
}

/// A long-poll answers as soon as the token changes (here: a reload changes the grant), not at
/// its deadline; with no change it answers 304 at the deadline.
#[test]
fn a_long_poll_returns_when_the_token_changes() {
    let dir = TestDir::new("long-poll");
    let issuer = Issuer::start(&dir, &[("app", SECRET)], "1h");
    let cfg = config(&dir, &issuer, &[("p", "audience: https://p1/")]);
    let daemon = debug_daemon(&dir, &cfg);
    let socket = dir.join("tokend.sock");
    wait_ready(&socket);
    let (_, headers, first) = get(&socket, "/v1/tokens/p", &[]);
    let version: u64 = header(&headers, "token-version").unwrap().parse().unwrap();

    // No newer token within 300ms: 304 with the current version.
    let (status, headers, body) = get(&socket, &format!("/v1/tokens/p?wait=300ms&after={version}"), &[]);
    assert_eq!((status, body.as_str()), (304, ""));
    assert_eq!(header(&headers, "token-version"), Some(version.to_string().as_str()));

    let poll_socket = socket.clone();
    let started = Instant::now();
    let poll = std::thread::spawn(move || get(&poll_socket, &format!("/v1/tokens/p?wait=20s&after={version}"), &[]));
    daemon.wait_event(T, "the long-poll waiting", |e| is(e, "long_poll", "waiting"));
    config(&dir, &issuer, &[("p", "audience: https://p2/")]);
    daemon.signal(Signal::SIGHUP);
    let (status, headers, second) = poll.join().unwrap();
    assert_eq!(status, 200);
    assert_ne!(second, first);
    assert_eq!(claims(&second)["aud"], "https://p2/");
    assert!(header(&headers, "token-version").unwrap().parse::<u64>().unwrap() > version);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the long-poll ran to its deadline instead of answering the change"
    );
    assert!(daemon.stop().success());
}

/// tokend with debug logs, which say when a long-poll starts to wait.
fn debug_daemon(dir: &TestDir, cfg: &Path) -> Tokend {
    Tokend::spawn(
        dir,
        &["--config", cfg.to_str().unwrap(), "--log-level", "debug", "run"],
        &[],
    )
}

#[test]
fn callers_are_authorized_by_their_kernel_credentials() {
    if !running_as_root("callers_are_authorized_by_their_kernel_credentials") {
        return;
    }
    let dir = TestDir::new("peercred");
    open_up(&dir);
    let issuer = Issuer::start(&dir, &[("app", SECRET)], "1h");
    let cfg = config(
        &dir,
        &issuer,
        &[
            ("by-user", "audience: https://u/\nreaders: { users: [65534] }"),
            ("by-group", "audience: https://g/\nreaders: { groups: [4242] }"),
            ("private", "audience: https://p/"),
        ],
    );
    // Everyone may connect; every request is still checked against the caller's credentials.
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text.replace("socket: {", "socket: { mode: \"0666\",")).unwrap();
    let daemon = Tokend::run(&dir, &cfg);
    wait_ready(&dir.join("tokend.sock"));
    let socket = dir.join("tokend.sock").display().to_string();
    let curl = |groups: &[u32], path: &str| {
        let o = as_nobody(
            groups,
            "curl",
            &[
                "-sS",
                "-w",
                "\n%{http_code}",
                "--unix-socket",
                &socket,
                &format!("http://localhost{path}"),
            ],
        );
        let text = String::from_utf8(o.stdout).unwrap();
        let (body, status) = text.rsplit_once('\n').unwrap();
        (status.parse::<u16>().unwrap(), body.to_owned())
    };
    let (_, _, private_token) = get(dir.join("tokend.sock").as_path(), "/v1/tokens/private", &[]);
    let (_, _, group_token) = get(dir.join("tokend.sock").as_path(), "/v1/tokens/by-group", &[]);

    // A listed user.
    let (status, body) = curl(&[], "/v1/tokens/by-user");
    assert_eq!(status, 200, "{body}");
    assert_eq!(claims(&body)["aud"], "https://u/");
    // Not a reader: 403 and not a byte of the token.
    let (status, body) = curl(&[], "/v1/tokens/private");
    assert_eq!(status, 403);
    assert_eq!(body, "uid 65534 may not read client private\n");
    assert!(!body.contains(&private_token[..20]));
    let (status, body) = curl(&[], "/v1/tokens/by-group");
    assert_eq!(status, 403);
    assert!(!body.contains(&group_token[..20]));
    // Supplementary group membership counts.
    let (status, body) = curl(&[4242], "/v1/tokens/by-group");
    assert_eq!((status, body.as_str()), (200, group_token.as_str()));
    let (status, _) = curl(&[1, 4242, 7], "/v1/tokens/by-group");
    assert_eq!(status, 200);
    // The listing shows only what the caller may read; /metrics reveals every client: refused.
    let (status, body) = curl(&[], "/v1/tokens");
    assert_eq!(status, 200);
    let names: Vec<String> = serde_json::from_str::<Value>(&body).unwrap()["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, vec!["by-user"]);
    assert_eq!(curl(&[], "/metrics").0, 403);
    assert_eq!(curl(&[], "/healthz").0, 200);
    // A caller that may not read a client cannot tell it from one that does not exist.
    assert_eq!(
        curl(&[], "/v1/tokens/no-such-client"),
        (403, "uid 65534 may not read client no-such-client\n".to_owned())
    );
    // A stranger (uid 12345: listed nowhere) may hold only a few connections; the rest are
    // refused at once with 503, and readers are not affected.
    let statuses = hold_connections(12345, &socket, 10);
    assert_eq!(
        statuses,
        ["200", "200", "200", "200", "503", "503", "503", "503", "503", "503"],
        "{statuses:?}"
    );
    assert_eq!(curl(&[], "/v1/tokens/by-user").0, 200);

    let refusal = daemon.wait_event(T, "the logged refusal", |e| {
        e["uid"] == 65534 && e["client"].is_string()
    });
    assert_eq!(refusal["level"], "WARN");
    assert!(refusal["pid"].as_u64().is_some(), "{refusal}");
    assert!(daemon.stop().success());
}

#[test]
fn stale_sockets_are_replaced_and_other_files_are_left_alone() {
    let dir = TestDir::new("stale-socket");
    let issuer = Issuer::start(&dir, &[("app", SECRET)], "1h");
    let cfg = config(&dir, &issuer, &[("s", "audience: https://s/")]);
    let socket = dir.join("tokend.sock");

    // A socket file left by a killed process: nobody answers on it.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let daemon = Tokend::run(&dir, &cfg);
    wait_ready(&socket);
    assert_eq!(get(&socket, "/healthz", &[]).0, 200);

    // A second tokend on the same socket refuses to start; the first keeps serving.
    let other_state = dir.join("state2");
    let second_cfg = dir.write(
        "second.yaml",
        &std::fs::read_to_string(&cfg)
            .unwrap()
            .replace(dir.join("state").to_str().unwrap(), other_state.to_str().unwrap()),
    );
    let mut second = Tokend::run(&dir, &second_cfg);
    let status = second.wait(T);
    assert_eq!(status.code(), Some(1));
    assert!(
        second.output().contains("another process is already serving on"),
        "{}",
        second.output()
    );
    assert_eq!(get(&socket, "/healthz", &[]).0, 200);
    assert!(daemon.stop().success());
    assert!(!socket.exists());

    // A regular file at the socket path is an error and is never deleted.
    std::fs::write(&socket, "not a socket").unwrap();
    let mut blocked = Tokend::run(&dir, &cfg);
    assert_eq!(blocked.wait(T).code(), Some(1));
    assert!(
        blocked
            .output()
            .contains("exists and is not a socket; refusing to replace it"),
        "{}",
        blocked.output()
    );
    assert_eq!(std::fs::read_to_string(&socket).unwrap(), "not a socket");
    let check = tokend(&["--config", cfg.to_str().unwrap(), "check"]);
    assert_eq!(check.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&check.stderr).contains("exists and is not a socket"));
}

/// 500 open connections and a client that sends its request one byte at a time do not keep a
/// new reader from being served promptly; the slow client is cut off by the header timeout.
#[test]
fn many_connections_and_a_slow_loris_do_not_starve_readers() {
    let dir = TestDir::new("flood");
    let issuer = Issuer::start(&dir, &[("app", SECRET)], "1h");
    let cfg = config(&dir, &issuer, &[("f", "audience: https://f/")]);
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text.replace("socket: {", "socket: { header_timeout: 2s,")).unwrap();
    let daemon = Tokend::run(&dir, &cfg);
    wait_ready(&dir.join("tokend.sock"));
    let socket = dir.join("tokend.sock");

    // 500 keep-alive connections, each served once and left open.
    let request = b"GET /v1/tokens/f HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let mut idle: Vec<UnixStream> = Vec::new();
    for _ in 0..500 {
        let mut c = UnixStream::connect(&socket).unwrap();
        c.write_all(request).unwrap();
        idle.push(c);
    }
    let mut buf = [0u8; 4096];
    for c in &mut idle {
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let n = c.read(&mut buf).unwrap();
        assert!(
            buf[..n].starts_with(b"HTTP/1.1 200 OK"),
            "{}",
            String::from_utf8_lossy(&buf[..n])
        );
    }
    // The slow loris: one byte of a request head every 100 ms.
    let loris_socket = socket.clone();
    let (sending, sent) = std::sync::mpsc::channel();
    let loris = std::thread::spawn(move || {
        let mut c = UnixStream::connect(&loris_socket).unwrap();
        let started = Instant::now();
        for (i, byte) in b"GET /v1/tokens/f HTTP/1.1\r\nHost: localhost\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n"
            .iter()
            .enumerate()
        {
            if c.write_all(&[*byte]).is_err() {
                return started.elapsed();
            }
            if i == 2 {
                let _ = sending.send(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the slow client was never cut off");
    });
    // The slow client is connected and sending before the new reader comes.
    sent.recv_timeout(T).expect("the slow client started");
    let started = Instant::now();
    let (status, _, _) = get(&socket, "/v1/tokens/f", &[]);
    let took = started.elapsed();
    assert_eq!(status, 200);
    assert!(took < Duration::from_secs(1), "a new reader waited {took:?}");
    let cut_off = loris.join().unwrap();
    assert!(
        cut_off < Duration::from_secs(5),
        "the slow client was cut off after {cut_off:?}"
    );
    // The idle keep-alive connections are closed by the same timeout.
    let first = &mut idle[0];
    first.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(first.read(&mut buf).unwrap(), 0, "an idle connection was not closed");
    drop(idle);
    assert!(daemon.stop().success());
}

/// SIGHUP changes readers and moves the socket; a request in flight on the old socket completes.
#[test]
fn a_reload_changes_readers_and_moves_the_socket_without_dropping_requests() {
    if !running_as_root("a_reload_changes_readers_and_moves_the_socket_without_dropping_requests") {
        return;
    }
    let dir = TestDir::new("socket-reload");
    open_up(&dir);
    // Short-lived tokens, so that long-polls see changes; refreshed at least 4s before they
    // expire, so that even a slow refresh on a loaded machine leaves no moment without one.
    let issuer = Issuer::start(&dir, &[("app", SECRET)], "10s");
    let base = "refresh: { min_remaining: 4s }";
    let cfg = config(&dir, &issuer, &[("r", base)]);
    let rewrite = |socket: &str, mode: &str| {
        let text = std::fs::read_to_string(&cfg).unwrap();
        let start = text.find("socket: {").unwrap();
        let end = start + text[start..].find('\n').unwrap();
        let line = format!("socket: {{ path: {}, mode: \"{mode}\" }}", dir.join(socket).display());
        std::fs::write(&cfg, format!("{}{line}{}", &text[..start], &text[end..])).unwrap();
    };
    rewrite("old.sock", "0666");
    let daemon = debug_daemon(&dir, &cfg);
    let old = dir.join("old.sock");
    wait_ready(&old);
    let nobody_get = |socket: &Path| {
        let o = as_nobody(
            &[],
            "curl",
            &[
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--unix-socket",
                socket.to_str().unwrap(),
                "http://localhost/v1/tokens/r",
            ],
        );
        String::from_utf8(o.stdout).unwrap()
    };
    assert_eq!(nobody_get(&old), "403");
    let (_, headers, _) = get(&old, "/v1/tokens/r", &[]);
    let version = header(&headers, "token-version").unwrap().to_owned();
    // A long-poll in flight on the old socket across the reload.
    let poll_socket = old.clone();
    let in_flight =
        std::thread::spawn(move || get(&poll_socket, &format!("/v1/tokens/r?wait=20s&after={version}"), &[]));
    let waiting = |e: &Value| is(e, "long_poll", "waiting");
    daemon.wait_event(T, "the long-poll waiting", waiting);

    config(
        &dir,
        &issuer,
        &[("r", &format!("{base}\nreaders: {{ users: [65534] }}"))],
    );
    rewrite("new.sock", "0666");
    daemon.signal(Signal::SIGHUP);
    let reloaded = |e: &Value| is(e, "reload", "applied");
    daemon.wait_event(T, "the reload", reloaded);
    let new = dir.join("new.sock");
    wait_for(T, "the new socket", || new.exists().then_some(()));
    assert_eq!(nobody_get(&new), "200");
    assert!(!old.exists(), "the old socket file is removed");
    let (status, _, body) = in_flight.join().unwrap();
    assert_eq!(status, 200, "the in-flight long-poll survived the reload: {body}");

    // A reader removed while its long-poll waits gets 403 when the token changes, not the token.
    let (_, headers, _) = get(&new, "/v1/tokens/r", &[]);
    let version = header(&headers, "token-version").unwrap().to_owned();
    let poll_socket = new.clone();
    let nobody_poll = std::thread::spawn(move || {
        let url = format!("http://localhost/v1/tokens/r?wait=20s&after={version}");
        let o = as_nobody(
            &[],
            "curl",
            &[
                "-sS",
                "-w",
                "\n%{http_code}",
                "--unix-socket",
                poll_socket.to_str().unwrap(),
                &url,
            ],
        );
        String::from_utf8(o.stdout).unwrap()
    });
    daemon.wait_events(2, T, "nobody's long-poll waiting", waiting);
    config(&dir, &issuer, &[("r", base)]);
    rewrite("new.sock", "0666");
    daemon.signal(Signal::SIGHUP);
    daemon.wait_events(2, T, "the second reload", reloaded);
    let answer = nobody_poll.join().unwrap();
    assert!(answer.ends_with("\n403"), "{answer}");
    assert!(!answer.contains("eyJ"), "{answer}");

    // Same path, new mode: applied in place.
    rewrite("new.sock", "0600");
    daemon.signal(Signal::SIGHUP);
    daemon.wait_events(3, T, "the third reload", reloaded);
    wait_for(T, "the new mode", || (mode(&new) == 0o600).then_some(()));
    assert!(daemon.stop().success());
}

#[test]
fn get_and_status_commands_speak_the_socket_api_with_script_friendly_exit_codes() {
    let dir = TestDir::new("cli");
    let issuer = Issuer::start(&dir, &[("app", SECRET)], "1h");
    let black_hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    issuer.faults(serde_json::json!([{ "status": 500 }, { "status": 500 }]));
    let cfg = config(
        &dir,
        &issuer,
        &[
            ("a", &format!("outputs: [{{ path: {} }}]", out(&dir, "a.token"))),
            (
                "stuck",
                &format!("token_url: http://{}/t", black_hole.local_addr().unwrap()),
            ),
        ],
    );
    let cfg_arg = cfg.to_str().unwrap().to_owned();
    let socket = dir.join("tokend.sock");
    // Before tokend runs: 69, no socket.
    let o = tokend(&["--config", &cfg_arg, "get", "a"]);
    assert_eq!(o.status.code(), Some(69), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot connect to"));

    // --wait started before tokend: it waits for the socket, then through the two failed
    // requests, until the token exists (the socket path comes from --config).
    let mut waiter = Command::new(crate::util::BIN)
        .args(["--config", &cfg_arg, "--log-format", "json", "--log-level", "debug"])
        .args(["get", "a", "--wait", "--timeout", "20s"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // tokend starts once the waiter has found no socket and said it waits.
    let (lines, waiting) = std::sync::mpsc::channel();
    let stderr = std::io::BufReader::new(waiter.stderr.take().unwrap());
    let said = std::thread::spawn(move || {
        let mut all = String::new();
        for line in std::io::BufRead::lines(stderr).map_while(Result::ok) {
            if serde_json::from_str::<Value>(&line).is_ok_and(|e| is(&e, "wait", "no_daemon")) {
                let _ = lines.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    waiting.recv_timeout(T).expect("the waiter says it waits for tokend");
    let daemon = Tokend::run(&dir, &cfg);
    let o = waiter.wait_with_output().unwrap();
    let said = said.join().unwrap();
    assert!(o.status.success(), "{said}");
    let token = String::from_utf8(o.stdout).unwrap();
    // The socket announces a token only once the files hold it.
    assert_eq!(read(&dir.join("out/a.token")).as_deref(), Some(token.trim_end()));
    assert!(token.ends_with('\n'));
    // --socket and --json.
    let o = tokend(&["get", "a", "--json", "--socket", socket.to_str().unwrap()]);
    assert_eq!(
        serde_json::from_slice::<Value>(&o.stdout).unwrap()["access_token"],
        token.trim_end()
    );
    // Unknown: 1. Not yet valid: 75, also after --wait times out.
    let o = tokend(&["--config", &cfg_arg, "get", "nope"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no client named nope"));
    let o = tokend(&["--config", &cfg_arg, "get", "stuck"]);
    assert_eq!(o.status.code(), Some(75));
    let started = Instant::now();
    let o = tokend(&["--config", &cfg_arg, "get", "stuck", "--wait", "--timeout", "1s"]);
    assert_eq!(o.status.code(), Some(75));
    assert!(started.elapsed() < Duration::from_secs(5));
    if running_as_root("get_and_status_commands (denied part)") {
        let o = as_nobody(
            &[],
            crate::util::BIN,
            &["get", "a", "--socket", socket.to_str().unwrap()],
        );
        // The socket is 0660 root:root: nobody cannot even connect.
        assert_eq!(o.status.code(), Some(69), "{}", String::from_utf8_lossy(&o.stderr));
    }

    let o = tokend(&["--config", &cfg_arg, "status"]);
    let table = String::from_utf8(o.stdout).unwrap();
    assert!(o.status.success());
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines[0], "2 clients: 1 ok, 1 pending", "{table}");
    let lines = &lines[2..];
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("LAST ERROR"),
        "{table}"
    );
    assert!(lines[1].starts_with("a ") && lines[1].contains(" ok "), "{table}");
    assert!(lines[2].starts_with("stuck") && lines[2].contains("pending"), "{table}");
    let o = tokend(&["--config", &cfg_arg, "status", "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["clients"].as_array().unwrap().len(), 2);
    assert!(daemon.stop().success());
}

#[test]
fn the_cli_reports_a_denied_read_with_exit_77() {
    if !running_as_root("the_cli_reports_a_denied_read_with_exit_77") {
        return;
    }
    let dir = TestDir::new("cli-denied");
    open_up(&dir);
    let issuer = Issuer::start(&dir, &[("app", SECRET)], "1h");
    let cfg = config(&dir, &issuer, &[("secret-stuff", "audience: https://x/")]);
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text.replace("socket: {", "socket: { mode: \"0666\",")).unwrap();
    let daemon = Tokend::run(&dir, &cfg);
    wait_ready(&dir.join("tokend.sock"));
    let o = as_nobody(
        &[],
        crate::util::BIN,
        &[
            "get",
            "secret-stuff",
            "--socket",
            dir.join("tokend.sock").to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(77));
    assert!(o.stdout.is_empty());
    assert!(String::from_utf8_lossy(&o.stderr).contains("uid 65534 may not read client secret-stuff"));
    assert!(daemon.stop().success());
}

/// Running out of file descriptors (EMFILE) pauses accepting; it does not stop the server, which
/// serves again once descriptors are free.
#[test]
fn running_out_of_descriptors_does_not_stop_the_server() {
    let dir = TestDir::new("emfile");
    let issuer = Issuer::start(&dir, &[("app", SECRET)], "1h");
    let cfg = config(&dir, &issuer, &[("e", "audience: https://e/")]);
    let daemon = Tokend::run(&dir, &cfg);
    wait_ready(&dir.join("tokend.sock"));
    // Now only 48 descriptors, hard limit included.
    let limited = Command::new("prlimit")
        .arg("--pid")
        .arg(daemon.pid().to_string())
        .arg("--nofile=48:48")
        .status();
    assert!(limited.expect("prlimit (util-linux)").success());
    let socket = dir.join("tokend.sock");
    let request = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let mut flood: Vec<UnixStream> = Vec::new();
    for _ in 0..100 {
        let mut c = UnixStream::connect(&socket).unwrap();
        c.write_all(request).unwrap();
        flood.push(c);
    }
    let paused = daemon.wait_event(T, "the accept pause", |e| e["pause"].is_string());
    assert!(
        paused["error"].as_str().unwrap().contains("Too many open files"),
        "{paused}"
    );
    drop(flood);
    let (status, _, body) = get(&socket, "/v1/tokens/e", &[]);
    assert_eq!(status, 200, "{body}");
    assert!(daemon.stop().success());
}

/// Another user's process holding connections to the socket: this test binary itself
/// (`connection_holder`), run as that user through setpriv.
struct Holder {
    child: std::process::Child,
    /// The helper's stdout, read to its end on release (closing it early would make the
    /// helper's last words fail with EPIPE).
    out: std::io::BufReader<std::process::ChildStdout>,
}

impl Holder {
    /// Opens `n` connections as `uid` and sends a request on each while all stay open; returns
    /// once every answer has been read, with the statuses in order. The connections stay open
    /// until `release`.
    fn start(uid: u32, socket: &str, n: usize) -> (Holder, Vec<String>) {
        use std::io::BufRead;
        let uid = uid.to_string();
        let child = Command::new("setpriv")
            .args(["--reuid", &uid, "--regid", &uid, "--clear-groups"])
            .arg(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "socket_api::connection_holder",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env("TOKEND_TEST_HOLD_SOCKET", socket)
            .env("TOKEND_TEST_HOLD_N", n.to_string())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("setpriv");
        let mut child = child;
        let out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut holder = Holder { child, out };
        let mut seen = String::new();
        loop {
            let mut line = String::new();
            if holder.out.read_line(&mut line).unwrap() == 0 {
                panic!("the helper ended without statuses: {seen}");
            }
            // The test harness prints its own words on the same line.
            if let Some(statuses) = line.split("STATUSES:").nth(1) {
                let statuses = statuses.split_whitespace().map(str::to_owned).collect();
                return (holder, statuses);
            }
            seen.push_str(&line);
        }
    }

    /// Closes the connections: the helper exits when its stdin closes.
    fn release(mut self) {
        drop(self.child.stdin.take());
        let mut rest = String::new();
        let _ = self.out.read_to_string(&mut rest);
        let status = self.child.wait().unwrap();
        assert!(status.success(), "the helper failed ({status}): {rest}");
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        // Ignored: after `release` the helper has exited already.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The statuses of `n` connections as `uid` held open together, then closed.
fn hold_connections(uid: u32, socket: &str, n: usize) -> Vec<String> {
    let (holder, statuses) = Holder::start(uid, socket, n);
    holder.release();
    statuses
}

/// Not a test: the helper process of `Holder`, run by other tests as another user.
#[test]
#[ignore = "a helper that other tests run in a child process"]
fn connection_holder() {
    let Ok(socket) = std::env::var("TOKEND_TEST_HOLD_SOCKET") else {
        return;
    };
    let n: usize = std::env::var("TOKEND_TEST_HOLD_N").unwrap().parse().unwrap();
    let mut conns: Vec<UnixStream> = (0..n).map(|_| UnixStream::connect(&socket).unwrap()).collect();
    for c in &mut conns {
        // Ignored: a refused connection may already be closed; its 503 is still readable.
        let _ = c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    }
    let mut statuses = Vec::new();
    for c in &mut conns {
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 256];
        let n = c.read(&mut buf).unwrap_or(0);
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        statuses.push(text.split_whitespace().nth(1).unwrap_or("none").to_owned());
    }
    println!("STATUSES: {}", statuses.join(" "));
    // Hold every connection until the test closes stdin.
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}

/// At the connection cap, further callers are refused at once with 503 (not left hanging), while
/// root and tokend's own user keep a reserve; the socket gets the configured group.
#[test]
fn the_connection_cap_refuses_quickly_and_keeps_a_reserve_for_root() {
    if !running_as_root("the_connection_cap_refuses_quickly_and_keeps_a_reserve_for_root") {
        return;
    }
    let dir = TestDir::new("cap");
    open_up(&dir);
    let issuer = Issuer::start(&dir, &[("app", SECRET)], "1h");
    let cfg = config(
        &dir,
        &issuer,
        &[("c", "audience: https://c/\nreaders: { users: [65534] }")],
    );
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replace(
            "socket: {",
            "socket: { max_connections: 6, group: 4242, mode: \"0666\",",
        ),
    )
    .unwrap();
    let daemon = Tokend::run(&dir, &cfg);
    let socket = dir.join("tokend.sock");
    wait_ready(&socket);
    {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&socket).unwrap();
        assert_eq!((meta.gid(), meta.mode() & 0o777), (4242, 0o666));
    }
    let started = Instant::now();
    let statuses = hold_connections(65534, socket.to_str().unwrap(), 9);
    assert_eq!(
        statuses,
        ["200", "200", "200", "200", "200", "200", "503", "503", "503"],
        "{statuses:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    // While a reader holds the whole cap (every connection answered, so every one admitted),
    // another reader is refused and root still gets in.
    let socket_str = socket.to_str().unwrap().to_owned();
    let (holder, held) = Holder::start(65534, &socket_str, 6);
    assert_eq!(held, ["200"; 6]);
    assert_eq!(hold_connections(65534, &socket_str, 1), ["503"]);
    assert_eq!(get(&socket, "/v1/tokens/c", &[]).0, 200);
    holder.release();
    // Counted by the limit they were over (the alert on a socket at its cap reads this).
    let metrics = socket_text(&socket, "/metrics");
    for line in [
        "tokend_socket_refusals_total{limit=\"max_connections\"} 4",
        "tokend_socket_refusals_total{limit=\"max_connections_per_user\"} 0",
    ] {
        assert!(metrics.contains(line), "missing {line:?} in\n{metrics}");
    }
    let refusal = daemon.wait_event(T, "the logged refusal", |e| e["limit"].is_string());
    assert_eq!(refusal["uid"], 65534);
    assert!(daemon.stop().success());
}

/// A socket group tokend is not in cannot be applied: at start-up that is a configuration error
/// (exit 78, naming the group and the fix) rather than a restart loop; at a reload the new
/// configuration is rejected and the socket keeps working; `check` says so beforehand, judging
/// the service's user, not root.
#[test]
fn a_socket_group_tokend_is_not_in_is_refused_before_it_breaks_the_socket() {
    if !running_as_root("a_socket_group_tokend_is_not_in_is_refused_before_it_breaks_the_socket") {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let dir = TestDir::new("socket-group");
    let issuer = Issuer::start(&dir, &[("app", SECRET)], "1h");
    let cfg = config(&dir, &issuer, &[("g", "audience: https://g/")]);
    let plain = fs::read_to_string(&cfg).unwrap();
    let with_group = plain.replace("socket: {", "socket: { group: 4242,");
    hand_to_nobody(&dir);
    fs::write(&cfg, &with_group).unwrap();
    let args = ["--config", cfg.to_str().unwrap(), "run"];

    // `check --as-user nobody` judges for nobody, although root runs it.
    let check = tokend(&["--config", cfg.to_str().unwrap(), "check", "--as-user", "nobody"]);
    assert_eq!(check.status.code(), Some(1));
    let expected = "socket.group: tokend (user nobody, uid 65534) is not a member of group 4242";
    let err = String::from_utf8_lossy(&check.stderr);
    assert!(err.contains(expected), "{err}");
    // As root, the same config is fine: root may give the socket any group.
    let check = tokend(&["--config", cfg.to_str().unwrap(), "check", "--as-user", "root"]);
    assert!(!String::from_utf8_lossy(&check.stderr).contains("socket.group"));

    let mut refused = Tokend::spawn_as(&dir, 65534, &args);
    assert_eq!(refused.wait(T).code(), Some(78), "{}", refused.output());
    let log = refused.output();
    assert!(
        log.contains(expected) && log.contains("SupplementaryGroups=4242"),
        "{log}"
    );
    assert!(!dir.join("tokend.sock").exists(), "no socket was created");

    // Running without the group, a reload that asks for it is rejected; the socket stays usable.
    fs::write(&cfg, &plain).unwrap();
    let daemon = Tokend::spawn_as(&dir, 65534, &args);
    let socket = dir.join("tokend.sock");
    wait_ready(&socket);
    fs::write(&cfg, &with_group).unwrap();
    daemon.signal(Signal::SIGHUP);
    daemon.wait_event(T, "the rejected reload", |e| is(e, "reload", "rejected"));
    assert!(daemon.output().contains(expected), "{}", daemon.output());
    assert_eq!(fs::metadata(&socket).unwrap().gid(), 65534, "the socket kept its group");
    assert_eq!(socket_status(&socket, "/v1/tokens/g"), Some(200));
    assert!(daemon.stop().success());
}
