//! The socket API against hostile or broken callers, byte by byte. Requests
//! go over a raw `UnixStream` (exactly the bytes written, no client normalizing them), or as
//! another uid through `setpriv` + curl. What `mod.rs` proves already is not repeated here.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use super::{SECRET, T, as_nobody, config, get, header, open_up, running_as_root};
use crate::util::*;

/// Writes `request` on a new connection and reads until tokend closes it.
fn exchange(socket: &Path, request: &[u8]) -> Vec<u8> {
    let mut c = UnixStream::connect(socket).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // Ignored: tokend may close before reading all of an oversized head; its answer is read below.
    let _ = c.write_all(request);
    read_to_close(&mut c)
}

/// Everything the server sends until it closes the connection.
fn read_to_close(c: &mut UnixStream) -> Vec<u8> {
    let mut answer = Vec::new();
    match c.read_to_end(&mut answer) {
        Ok(_) => {}
        // Closed with part of our request unread: what it sent before is in `answer`.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("tokend did not close the connection: {e}; got {:?}", lossy(&answer)),
    }
    answer
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// One HTTP response: status, head (lowercased), body.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
}

/// The responses in `bytes`, in order (each with a `content-length`, or none and no body).
fn responses(mut bytes: &[u8]) -> Vec<Answer> {
    let mut all = Vec::new();
    while !bytes.is_empty() {
        let end = bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("an incomplete response: {:?}", lossy(bytes)));
        let head = lossy(&bytes[..end]).to_lowercase();
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        let length: usize = header(&head, "content-length").map_or(0, |l| l.parse().unwrap());
        let body = lossy(&bytes[end + 4..end + 4 + length]);
        bytes = &bytes[end + 4 + length..];
        all.push(Answer { status, head, body });
    }
    all
}

fn statuses(answers: &[Answer]) -> Vec<u16> {
    answers.iter().map(|a| a.status).collect()
}

/// The value of one series in a Prometheus text exposition (0 when absent).
fn series(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// Malformed, oversized and pipelined requests get hyper's or tokend's exact answer (or none),
/// the daemon keeps serving, and every answer hyper gives by itself, and every connection it
/// cuts off, is counted in `/metrics` as an answer by status and an error by reason. An idle
/// keep-alive connection closed by the header timeout is not an error.
#[test]
fn malformed_oversized_and_pipelined_requests_are_answered_and_counted() {
    let dir = TestDir::new("raw-requests");
    let issuer = Issuer::start(&dir, &[("app", SECRET)], "1h");
    let cfg = config(&dir, &issuer, &[("a", "audience: https://a/")]);
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text.replace("socket: {", "socket: { header_timeout: 1s,")).unwrap();
    let daemon = Tokend::run(&dir, &cfg);
    let socket = dir.join("tokend.sock");
    wait_ready(&socket);
    let (_, _, token) = get(&socket, "/v1/tokens/a", &[]);

    // Malformed heads: 400 from hyper, then the connection is closed.
    let malformed: &[&[u8]] = &[
        b"GET\r\n\r\n",
        b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost localhost\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nX: a\0b\r\n\r\n",
        b"GET /v1/tokens/a\0 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /v1/tokens/a b HTTP/1.1\r\nHost: x\r\n\r\n",
        b"G\x01T /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nX: a\r\n folded\r\n\r\n",
        b"GET /v1/tokens/a HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        b"GET /v1/tokens/a HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        // The start of a TLS ClientHello.
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
    ];
    for request in malformed {
        let answers = responses(&exchange(&socket, request));
        assert_eq!(statuses(&answers), [400], "{:?}", lossy(request));
        assert!(!answers[0].body.contains(&token[..20]));
    }
    // An HTTP/2 preface: no answer, closed.
    assert_eq!(exchange(&socket, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), b"");

    // Oversized heads (one header, the request line, too many headers): 431.
    let big_header = format!("GET /healthz HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(10_000));
    let long_uri = format!("GET /v1/tokens/{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(9_000));
    let many_headers = format!("GET /healthz HTTP/1.1\r\n{}\r\n", "X: y\r\n".repeat(101));
    for request in [&big_header, &long_uri, &many_headers] {
        let answers = responses(&exchange(&socket, request.as_bytes()));
        assert_eq!(statuses(&answers), [431], "{}", &request[..40]);
    }
    // A body tokend never reads (huge, or broken chunks): answered, then the connection closes.
    for request in [
        &b"GET /v1/tokens/a HTTP/1.1\r\nContent-Length: 1000000000000\r\n\r\nxx"[..],
        b"GET /v1/tokens/a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\nnot a chunk\r\n",
    ] {
        let answers = responses(&exchange(&socket, request));
        assert_eq!(statuses(&answers), [200], "{:?}", lossy(request));
        assert_eq!(answers[0].body, token);
    }

    // Pipelined: answered in order on one connection.
    let pipelined = b"GET /v1/tokens/a HTTP/1.1\r\nHost: x\r\n\r\n\
        GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n\
        GET /v1/tokens/a?format=json HTTP/1.1\r\nHost: x\r\n\r\n\
        GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let answers = responses(&exchange(&socket, pipelined));
    assert_eq!(statuses(&answers), [200, 200, 200, 404]);
    assert_eq!(answers[0].body, token);
    assert_eq!(answers[1].body, "ok\n");
    assert!(answers[2].body.contains(&format!("\"access_token\":\"{token}\"")));
    assert_eq!(header(&answers[2].head, "content-type"), Some("application/json"));
    // 200 requests in one write: 200 tokens.
    let many = "GET /v1/tokens/a HTTP/1.1\r\nHost: x\r\n\r\n".repeat(199)
        + "GET /v1/tokens/a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let answers = responses(&exchange(&socket, many.as_bytes()));
    assert_eq!(answers.len(), 200);
    assert!(answers.iter().all(|a| a.status == 200 && a.body == token));
    // A malformed request in the middle: the ones before are answered, it gets 400, and the
    // connection ends there (what follows is never read as a request).
    let poisoned = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nBAD\r\n\r\nGET /v1/tokens/a HTTP/1.1\r\nHost: x\r\n\r\n";
    let answers = responses(&exchange(&socket, poisoned));
    assert_eq!(statuses(&answers), [200, 400]);

    // Cut off without an answer: a head not finished within header_timeout (1s), and a
    // connection that sends nothing at all; a head cut short by the caller.
    let started = Instant::now();
    assert_eq!(exchange(&socket, b"GET /v1/tokens/a HTTP/1.1\r\nHost: x\r\n"), b"");
    assert_eq!(exchange(&socket, b""), b"");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    {
        let mut c = UnixStream::connect(&socket).unwrap();
        c.write_all(b"GET /v1/tokens/a HTTP/1.1\r\nHo").unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        assert_eq!(read_to_close(&mut c), b"");
    }
    // An idle keep-alive connection, closed by the same timeout after its answer: no error.
    {
        let mut c = UnixStream::connect(&socket).unwrap();
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let answers = responses(&read_to_close(&mut c));
        assert_eq!(statuses(&answers), [200]);
    }

    // Still serving; and all of the above is in the metrics.
    assert_eq!(get(&socket, "/v1/tokens/a", &[]).2, token);
    let (_, _, metrics) = get(&socket, "/metrics", &[]);
    let errors = |reason: &str| {
        series(
            &metrics,
            &format!("tokend_socket_connection_errors_total{{reason=\"{reason}\"}}"),
        )
    };
    let answered = |status: u16| {
        series(
            &metrics,
            &format!("tokend_socket_requests_total{{status=\"{status}\"}}"),
        )
    };
    assert_eq!(
        (answered(400), answered(431)),
        (malformed.len() as u64 + 1, 3),
        "hyper's own answers by status:\n{metrics}"
    );
    assert_eq!(
        [
            errors("malformed"),
            errors("header_too_large"),
            errors("header_timeout"),
            errors("incomplete"),
            errors("other")
        ],
        [malformed.len() as u64 + 2, 3, 2, 1, 0],
        "connection errors by reason:\n{metrics}"
    );
    assert!(daemon.stop().success());
}

/// The names in `dir` that creating socket `tokend.sock` makes: the socket and its private
/// directories, with each directory's mode and entries.
fn socket_leftovers(dir: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(".tokend.sock.") || n == "tokend.sock")
        .map(|n| {
            let path = dir.join(&n);
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if !meta.is_dir() {
                return n;
            }
            let inside: Vec<String> = std::fs::read_dir(&path)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            // The random part of the name varies: keep its shape only.
            let shape = n
                .strip_prefix(".tokend.sock.tokend-")
                .map_or(n.clone(), |r| format!(".tokend.sock.tokend-{}", "X".repeat(r.len())));
            format!("{shape}/ {:o} {inside:?}", meta.mode() & 0o7777)
        })
        .collect();
    names.sort();
    names
}

/// A config whose one client never gets a token (its token endpoint accepts and never answers),
/// so that nothing but the socket is written; the socket directory exists beforehand.
fn quiet_config(dir: &TestDir, issuer: &Issuer) -> (std::path::PathBuf, std::net::TcpListener) {
    let black_hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let cfg = config(
        dir,
        issuer,
        &[(
            "p",
            &format!("token_url: http://{}/t", black_hole.local_addr().unwrap()),
        )],
    );
    (cfg, black_hole)
}

/// Starts tokend normally, waits until it serves, checks that only the socket is there, stops it.
fn clean_start(dir: &TestDir, cfg: &Path) {
    let daemon = Tokend::run(dir, cfg);
    let socket = dir.join("tokend.sock");
    wait_for(T, "the socket to serve", || {
        (socket_status(&socket, "/healthz") == Some(200)).then_some(())
    });
    assert_eq!(socket_leftovers(dir.path()), ["tokend.sock"]);
    assert!(daemon.stop().success());
    assert_eq!(socket_leftovers(dir.path()), Vec::<String>::new());
}

/// Runs `WRAPPER... tokend ARGS` with umask 0, so that any mode not set explicitly shows.
fn umask_0(wrapper: &[&str]) -> Vec<String> {
    ["sh", "-c", "umask 000 && exec \"$@\"", "sh"]
        .iter()
        .chain(wrapper)
        .map(|s| s.to_string())
        .collect()
}

fn strace_runs() -> Result<(), String> {
    match std::process::Command::new("strace")
        .args(["-qq", "-o", "/dev/null", "true"])
        .status()
    {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("strace cannot trace here ({s})")),
        Err(e) => Err(format!("strace is not installed ({e})")),
    }
}

/// A start killed (SIGKILL, injected by strace as the syscall is entered) at each step of
/// creating the socket leaves at most its private directory, 0700 even under umask 0 (so no
/// other user could reach the socket in it or swap it for a symlink), and the next start
/// removes it and serves.
#[test]
fn a_start_killed_while_creating_the_socket_is_cleaned_up_by_the_next() {
    let test = "a_start_killed_while_creating_the_socket_is_cleaned_up_by_the_next";
    if unless_skipped(test, "TOKEND_REQUIRE_ROOT_TESTS", strace_runs()).is_none() {
        return;
    }
    let dir = TestDir::new("socket-crash");
    let issuer = Issuer::start(&dir, &[("app", SECRET)], "1h");
    let (cfg, _black_hole) = quiet_config(&dir, &issuer);
    let cfg_arg = cfg.to_str().unwrap();
    let private_dir = ".tokend.sock.tokend-XXXXXX/ 700";
    // (the syscalls killed at their first call, what is left behind)
    let steps: [(&str, Vec<String>); 4] = [
        ("bind", vec![format!("{private_dir} []")]),
        ("chmod,fchmodat", vec![format!("{private_dir} [\"s\"]")]),
        ("rename,renameat,renameat2", vec![format!("{private_dir} [\"s\"]")]),
        (
            "rmdir,unlinkat",
            vec![format!("{private_dir} []"), "tokend.sock".to_owned()],
        ),
    ];
    for (syscalls, left) in &steps {
        let inject = format!("inject={syscalls}:signal=KILL:when=1");
        let wrapper = umask_0(&[
            "strace",
            "-f",
            "-qq",
            "-o",
            "/dev/null",
            "-e",
            &format!("trace={syscalls}"),
            "-e",
            &inject,
        ]);
        let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
        let mut killed = Tokend::spawn_under(&dir, &wrapper, &["--config", cfg_arg, "run"], &[]);
        let status = killed.wait(T);
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9), "killed at {syscalls}: {}", killed.output());
        assert_eq!(&socket_leftovers(dir.path()), left, "killed at {syscalls}");
        clean_start(&dir, &cfg);
    }
}

/// SIGKILL at random moments of many starts, with leftovers piling up between them: each left
/// directory is private, and one clean start removes them all. `TOKEND_SOCKET_KILLS` sets the
/// number of starts (100 by default).
#[test]
fn starts_killed_at_random_moments_leave_nothing_after_a_clean_start() {
    let kills: usize = std::env::var("TOKEND_SOCKET_KILLS").map_or(100, |n| n.parse().unwrap());
    let dir = TestDir::new("socket-kills");
    let issuer = Issuer::start(&dir, &[("app", SECRET)], "1h");
    let (cfg, _black_hole) = quiet_config(&dir, &issuer);
    let cfg_arg = cfg.to_str().unwrap();
    let socket = dir.join("tokend.sock");
    // How long a start takes to create its socket: the kills fall within 1.5 times that.
    let started = Instant::now();
    let daemon = Tokend::run(&dir, &cfg);
    wait_for(T, "the socket", || socket.exists().then_some(()));
    let window = started.elapsed().as_micros() as u64 * 3 / 2;
    assert!(daemon.stop().success());

    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("random kills: seed {seed}, window {window}µs");
    let (mut left_a_directory, mut socket_in_place) = (0, 0);
    let wrapper = umask_0(&[]);
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let identity = || {
        use std::os::unix::fs::MetadataExt;
        std::fs::symlink_metadata(&socket).ok().map(|m| m.ino())
    };
    let dirs = |v: &[String]| v.iter().filter(|n| n.contains('/')).count();
    for _ in 0..kills {
        // xorshift64
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let (before, socket_before) = (socket_leftovers(dir.path()), identity());
        let mut daemon = Tokend::spawn_under(&dir, &wrapper, &["--config", cfg_arg, "run"], &[]);
        std::thread::sleep(Duration::from_micros(seed % window));
        daemon.signal(nix::sys::signal::Signal::SIGKILL);
        daemon.wait(T);
        let after = socket_leftovers(dir.path());
        if dirs(&after) > dirs(&before) {
            left_a_directory += 1;
        }
        if identity().is_some_and(|i| Some(i) != socket_before) {
            socket_in_place += 1;
        }
        for d in after.iter().filter(|n| n.contains('/')) {
            assert!(d.contains("/ 700 "), "a private directory that is not 0700: {d}");
        }
    }
    eprintln!(
        "random kills: {kills} starts killed, {socket_in_place} after their socket was in place, {left_a_directory} left a private directory"
    );
    clean_start(&dir, &cfg);
}

/// curl on `socket` as uid 65534 (no groups), exactly the path given; returns the status and
/// the whole answer, head and body.
fn nobody(socket: &Path, args: &[&str], path: &str) -> (u16, String) {
    let url = format!("http://localhost{path}");
    let socket = socket.to_str().unwrap();
    let mut all = vec!["-sS", "--max-time", "30", "--path-as-is", "--unix-socket", socket];
    if !args.contains(&"-I") {
        all.push("-i");
    }
    all.extend(args);
    all.push(&url);
    let o = as_nobody(&[], "curl", &all);
    assert!(o.status.success(), "curl {path}: {}", lossy(&o.stderr));
    let answer = lossy(&o.stdout);
    let status = answer.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, answer)
}

/// Not a byte of any of `tokens` in `answer`: no JWT start, no 12-byte piece of one.
fn assert_no_token(answer: &str, tokens: &[&str], what: &str) {
    assert!(!answer.contains("eyJ"), "{what}: {answer}");
    for token in tokens {
        let bytes = token.as_bytes();
        for piece in bytes.windows(12).step_by(6) {
            assert!(
                !answer.as_bytes().windows(12).any(|w| w == piece),
                "{what}: a piece of a token in {answer}"
            );
        }
    }
}

/// Every route, in every form (text, JSON, HEAD, long-poll with and without `after`), and the
/// token proxy's socket, answers a caller who may read nothing with 403, or with what holds no
/// token (the empty listing, health), and never with a byte of a token; a long-poll is refused
/// at once, not after its wait; the proxy makes no upstream request for it. hyper's own answers
/// on the proxy's socket are counted.
#[test]
fn every_route_refuses_a_caller_who_may_not_read_it_without_a_token_byte() {
    if !running_as_root("every_route_refuses_a_caller_who_may_not_read_it_without_a_token_byte") {
        return;
    }
    let dir = TestDir::new("refused-routes");
    open_up(&dir);
    let issuer = Issuer::start(&dir, &[("app", SECRET)], "1h");
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let cfg = config(
        &dir,
        &issuer,
        &[
            ("a", "audience: https://a/"),
            ("b", "audience: https://b/\nreaders: { users: [65533] }"),
        ],
    );
    let proxy = dir.join("proxy.sock");
    let mut yaml = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("socket: {", "socket: { mode: \"0666\",");
    yaml.push_str(&format!(
        "proxies:\n  - {{ client: a, upstream: \"http://{}/api/\", socket: {}, mode: \"0666\" }}\n",
        upstream.local_addr().unwrap(),
        proxy.display()
    ));
    std::fs::write(&cfg, yaml).unwrap();
    let daemon = Tokend::run(&dir, &cfg);
    let socket = dir.join("tokend.sock");
    wait_ready(&socket);
    let (_, headers, a) = get(&socket, "/v1/tokens/a", &[]);
    let version = header(&headers, "token-version").unwrap().to_owned();
    let (_, _, b) = get(&socket, "/v1/tokens/b", &[]);
    let tokens = [a.as_str(), b.as_str()];

    let refused = |path: &str| format!("uid 65534 may not read client {path}\n");
    let json = ["-H", "Accept: application/json"];
    let after = format!("/v1/tokens/a?wait=30s&after={version}");
    let cases: Vec<(&str, &[&str], &str, u16, String)> = vec![
        ("text", &[], "/v1/tokens/a", 403, refused("a")),
        ("HEAD", &["-I"], "/v1/tokens/a", 403, String::new()),
        ("?format=json", &[], "/v1/tokens/a?format=json", 403, refused("a")),
        ("Accept JSON", &json, "/v1/tokens/a", 403, refused("a")),
        ("long-poll", &[], "/v1/tokens/a?wait=30s", 403, refused("a")),
        ("long-poll after", &[], &after, 403, refused("a")),
        ("another reader's", &[], "/v1/tokens/b", 403, refused("b")),
        ("unknown", &[], "/v1/tokens/c", 403, refused("c")),
        (
            "POST",
            &["-X", "POST", "-d", "x"],
            "/v1/tokens/a",
            405,
            "only GET and HEAD are supported\n".into(),
        ),
        (
            "metrics",
            &[],
            "/metrics",
            403,
            "uid 65534 may not read /metrics\n".into(),
        ),
        ("metrics HEAD", &["-I"], "/metrics", 403, String::new()),
        ("listing", &[], "/v1/tokens", 200, "{\"clients\":[]}".into()),
        ("listing/", &[], "/v1/tokens/", 200, "{\"clients\":[]}".into()),
        ("healthz", &[], "/healthz", 200, "ok\n".into()),
        ("readyz", &[], "/readyz", 200, "ready\n".into()),
    ];
    for (what, args, path, status, body) in &cases {
        let started = Instant::now();
        let (got, answer) = nobody(&socket, args, path);
        assert_eq!(got, *status, "{what}: {answer}");
        let (_, got_body) = answer.split_once("\r\n\r\n").unwrap();
        assert_eq!(got_body, body, "{what}");
        assert!(!answer.to_lowercase().contains("token-version"), "{what}: {answer}");
        assert_no_token(&answer, &tokens, what);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{what} took {:?}",
            started.elapsed()
        );
    }
    // `tokend status` shows nothing; the token proxy refuses every method and path.
    let o = as_nobody(
        &[],
        crate::util::BIN,
        &["status", "--json", "--socket", socket.to_str().unwrap()],
    );
    let status = lossy(&o.stdout);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&status).unwrap()["clients"],
        serde_json::json!([])
    );
    assert_no_token(&status, &tokens, "status");
    for (args, path) in [
        (&[][..], "/api/x"),
        (&["-I"], "/"),
        (&["-X", "POST", "-d", "payload"], "/api/x"),
        (&["-X", "DELETE"], "/../x"),
    ] {
        let (got, answer) = nobody(&proxy, args, path);
        assert_eq!(got, 403, "proxy {args:?} {path}: {answer}");
        assert_no_token(&answer, &tokens, "proxy");
    }
    upstream.set_nonblocking(true).unwrap();
    assert_eq!(
        upstream.accept().map(|_| ()).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock,
        "the proxy made an upstream request for a refused caller"
    );
    // What hyper answers by itself on the proxy's socket is counted, as on the API socket.
    let big = format!("GET /api/x HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(20_000));
    for (raw, status) in [(&b"GET /api/x HTTP/9.9\r\n\r\n"[..], 400), (big.as_bytes(), 431)] {
        assert_eq!(statuses(&responses(&exchange(&proxy, raw))), [status]);
    }
    let (_, _, metrics) = get(&socket, "/metrics", &[]);
    for (line, value) in [
        ("tokend_proxy_requests_total{client=\"a\",status=\"403\"}", 4),
        ("tokend_proxy_requests_total{client=\"a\",status=\"400\"}", 1),
        ("tokend_proxy_requests_total{client=\"a\",status=\"431\"}", 1),
        (
            "tokend_proxy_connection_errors_total{client=\"a\",reason=\"malformed\"}",
            1,
        ),
        (
            "tokend_proxy_connection_errors_total{client=\"a\",reason=\"header_too_large\"}",
            1,
        ),
    ] {
        assert_eq!(series(&metrics, line), value, "{line} in\n{metrics}");
    }
    assert!(daemon.stop().success());
}

/// Odd names in `/v1/tokens/{name}` — dot segments, encoded dots and slashes, NUL, CR/LF,
/// case, percent-encoded letters, unicode, a trailing or doubled slash, a very long name — never
/// reach another client: a reader of `a` alone gets 403 (and a malformed name is not echoed),
/// root gets 404; neither gets a token. The bytes go as written (curl --path-as-is).
#[test]
fn odd_names_and_path_traversal_never_reach_another_client() {
    if !running_as_root("odd_names_and_path_traversal_never_reach_another_client") {
        return;
    }
    let dir = TestDir::new("odd-names");
    open_up(&dir);
    let issuer = Issuer::start(&dir, &[("app", SECRET)], "1h");
    let cfg = config(
        &dir,
        &issuer,
        &[
            ("a", "audience: https://a/\nreaders: { users: [65534] }"),
            ("b", "audience: https://b/"),
        ],
    );
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text.replace("socket: {", "socket: { mode: \"0666\",")).unwrap();
    let daemon = Tokend::run(&dir, &cfg);
    let socket = dir.join("tokend.sock");
    wait_ready(&socket);
    let (_, _, a) = get(&socket, "/v1/tokens/a", &[]);
    let (_, _, b) = get(&socket, "/v1/tokens/b", &[]);
    assert_eq!(nobody(&socket, &[], "/v1/tokens/a").0, 200, "the reader reads a");

    let long = format!("/v1/tokens/{}", "x".repeat(8000));
    let malformed = "uid 65534 may not read client (malformed name)\n".to_owned();
    // (path, nobody's status, nobody's body; root's status)
    let cases: Vec<(&str, u16, String, u16)> = vec![
        ("/v1/tokens/../tokens/b", 403, malformed.clone(), 404),
        ("/v1/tokens/a/../b", 403, malformed.clone(), 404),
        ("/v1/tokens/./b", 403, malformed.clone(), 404),
        ("/v1/tokens/..", 403, malformed.clone(), 404),
        (
            "/v1/../v1/tokens/b",
            404,
            "no such endpoint; see /v1/tokens/{name}\n".into(),
            404,
        ),
        ("/v1/tokens/%2e%2e/b", 403, malformed.clone(), 404),
        ("/v1/tokens/a%2f..%2fb", 403, malformed.clone(), 404),
        ("/v1/tokens/a%2Fb", 403, malformed.clone(), 404),
        ("/v1/tokens/b%00", 403, malformed.clone(), 404),
        ("/v1/tokens/a%00", 403, malformed.clone(), 404),
        ("/v1/tokens/a%0d%0aX-Injected:%201", 403, malformed.clone(), 404),
        ("/v1/tokens/a%20", 403, malformed.clone(), 404),
        ("/v1/tokens/%61", 403, malformed.clone(), 404),
        ("/v1/tokens/%C3%A9", 403, malformed.clone(), 404),
        ("/v1/tokens/a;b", 403, malformed.clone(), 404),
        ("/v1/tokens/a/", 403, malformed.clone(), 404),
        ("/v1/tokens//a", 403, malformed.clone(), 404),
        ("/v1/tokens/A", 403, "uid 65534 may not read client A\n".into(), 404),
        ("/v1/tokens/B", 403, "uid 65534 may not read client B\n".into(), 404),
        (
            &long,
            403,
            format!("uid 65534 may not read client {}\n", "x".repeat(8000)),
            404,
        ),
    ];
    for (path, status, body, root_status) in &cases {
        let (got, answer) = nobody(&socket, &[], path);
        assert_eq!(got, *status, "{path}: {answer}");
        assert_eq!(answer.split_once("\r\n\r\n").unwrap().1, body, "{path}");
        assert!(!answer.contains("X-Injected"), "{path}: {answer}");
        assert_no_token(&answer, &[&a, &b], path);
        let (got, _, body) = get(&socket, path, &["--path-as-is"]);
        assert_eq!(got, *root_status, "root, {path}: {body}");
        assert_no_token(&body, &[&a, &b], path);
    }
    // Refusals are logged once a minute per caller and client; names that are no client (a
    // new one each time, say, or malformed) share one line, so a caller cannot flood the
    // journal with them. The first of them here was malformed.
    let socket_arg = socket.to_str().unwrap();
    let urls: Vec<String> = (0..100).map(|i| format!("http://localhost/v1/tokens/n{i}")).collect();
    let mut args = vec!["-s", "-o", "/dev/null", "--unix-socket", socket_arg];
    args.extend(urls.iter().map(String::as_str));
    assert!(as_nobody(&[], "curl", &args).status.success());
    let refusal = |e: &serde_json::Value| {
        e["uid"] == 65534
            && is(
                e,
                "message",
                "refused a socket request: caller is not a reader of this client",
            )
    };
    let logged: Vec<String> = daemon
        .events()
        .iter()
        .filter(|e| refusal(e))
        .map(|e| e["client"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(logged, ["(malformed name)"], "one line for all the names of no client");
    // The empty name is the listing: only `a` for its reader.
    let (status, answer) = nobody(&socket, &[], "/v1/tokens/");
    assert_eq!(status, 200);
    assert!(
        answer.contains("\"name\":\"a\"") && !answer.contains("\"name\":\"b\""),
        "{answer}"
    );
    // Bytes curl would not send, as root: raw UTF-8 is a name like any other (no such client);
    // control bytes in the request line are a malformed request.
    for (raw, status) in [
        (
            &b"GET /v1/tokens/\xc3\xa9 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"[..],
            404,
        ),
        (b"GET /v1/tokens/b\x7f HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET /v1/tokens/b\tx HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET /v1/tokens/b\rx HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ] {
        let answers = responses(&exchange(&socket, raw));
        assert_eq!(statuses(&answers), [status], "{:?}", lossy(raw));
        assert_no_token(&answers[0].body, &[&a, &b], &lossy(raw));
    }
    assert!(daemon.stop().success());
}

/// (file type, mode in octal, uid, gid) of `path`, not following a symlink.
fn owner_and_mode(path: &Path) -> (&'static str, String, u32, u32) {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = std::fs::symlink_metadata(path).unwrap();
    let kind = match meta.file_type() {
        t if t.is_socket() => "socket",
        t if t.is_dir() => "dir",
        _ => "other",
    };
    (kind, format!("{:o}", meta.mode() & 0o7777), meta.uid(), meta.gid())
}

/// The socket file and the directories tokend creates on its way get exactly the configured
/// mode, tokend's user as owner, and the configured group (else tokend's own), under a umask
/// that would narrow (077) or widen (000) them; and the mode decides who may connect at all.
#[test]
fn the_socket_and_its_directories_get_the_configured_mode_and_owner() {
    if !running_as_root("the_socket_and_its_directories_get_the_configured_mode_and_owner") {
        return;
    }
    let dir = TestDir::new("socket-owner");
    open_up(&dir);
    let issuer = Issuer::start(&dir, &[("app", SECRET)], "1h");
    let cfg = config(&dir, &issuer, &[("m", "audience: https://m/")]);
    let plain = std::fs::read_to_string(&cfg).unwrap();
    let socket = dir.join("run/a/b/tokend.sock");
    let with = |socket_line: &str| {
        let start = plain.find("socket: {").unwrap();
        let end = start + plain[start..].find('\n').unwrap();
        std::fs::write(&cfg, format!("{}{socket_line}{}", &plain[..start], &plain[end..])).unwrap();
    };
    let in_umask = |umask: &str| {
        let script = format!("umask {umask} && exec \"$@\"");
        Tokend::spawn_under(
            &dir,
            &["sh", "-c", &script, "sh"],
            &["--config", cfg.to_str().unwrap(), "run"],
            &[],
        )
    };
    let connect_as_nobody = |groups: &[u32]| {
        let o = as_nobody(
            groups,
            "curl",
            &[
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--unix-socket",
                socket.to_str().unwrap(),
                "http://localhost/healthz",
            ],
        );
        (o.status.code(), lossy(&o.stdout))
    };

    with(&format!(
        "socket: {{ path: {}, mode: \"0660\", group: 4242 }}",
        socket.display()
    ));
    let daemon = in_umask("077");
    wait_ready(&socket);
    assert_eq!(owner_and_mode(&socket), ("socket", "660".into(), 0, 4242));
    for d in ["run", "run/a", "run/a/b"] {
        assert_eq!(owner_and_mode(&dir.join(d)), ("dir", "755".into(), 0, 0), "{d}");
    }
    // Not in the group: no connection at all (curl's 7: could not connect); in it: served.
    assert_eq!(connect_as_nobody(&[]), (Some(7), "000".to_owned()));
    assert_eq!(connect_as_nobody(&[4242]), (Some(0), "200".to_owned()));
    assert!(daemon.stop().success());

    with(&format!("socket: {{ path: {}, mode: \"0600\" }}", socket.display()));
    let daemon = in_umask("000");
    wait_ready(&socket);
    assert_eq!(owner_and_mode(&socket), ("socket", "600".into(), 0, 0));
    assert_eq!(
        connect_as_nobody(&[0, 4242]).0,
        Some(7),
        "group members may not connect to 0600"
    );
    assert!(daemon.stop().success());

    // Run as another user, with the default mode: that user's socket, in its group.
    let dir = TestDir::new("socket-owner-nobody");
    let issuer = Issuer::start(&dir, &[("app", SECRET)], "1h");
    let cfg = config(&dir, &issuer, &[("m", "audience: https://m/")]);
    crate::hand_to_nobody(&dir);
    let daemon = Tokend::spawn_as(&dir, 65534, &["--config", cfg.to_str().unwrap(), "run"]);
    let socket = dir.join("tokend.sock");
    wait_ready(&socket);
    assert_eq!(owner_and_mode(&socket), ("socket", "660".into(), 65534, 65534));
    assert!(daemon.stop().success());
}
