//! Issue 12, item 15: the socket API against hostile or broken callers, byte by byte. Requests
//! go over a raw `UnixStream` (exactly the bytes written, no client normalizing them), or as
//! another uid through `setpriv` + curl. What `mod.rs` proves already is not repeated here.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use super::{SECRET, T, config, get, header};
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
