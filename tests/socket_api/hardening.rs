//! Issue 12, item 15: the socket API against hostile or broken callers, byte by byte. Requests
//! go over a raw `UnixStream` (exactly the bytes written, no client normalizing them), or as
//! another uid through `setpriv` + curl. What `mod.rs` proves already is not repeated here.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use super::{SECRET, config, get, header};
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
