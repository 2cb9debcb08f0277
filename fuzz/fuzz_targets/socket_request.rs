//! Raw bytes from a caller of the socket API, served by the daemon's own connection code (hyper's
//! HTTP/1 parser with tokend's head limit and header timeout, then the routes) over a real
//! socketpair, with a store holding tokens.
//!
//! The first byte picks who the kernel says the caller is (a stranger, a reader of one client by
//! user, a reader of another by supplementary group, a metrics reader); the rest is what it
//! sends, which may hold several pipelined requests. The caller's end stays open, as a client
//! waiting for answers would keep it; the daemon's header timeout then closes the connection, on
//! a paused clock, so timeouts and long-polls end at once.
//!
//! Beyond "no panic": the caller never receives 12 consecutive bytes (that it did not send
//! itself) of a token it may not read or of an expired token; tokend never logs a token; what
//! comes back is HTTP/1 answers.

#![no_main]

use std::io::Write;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use secrecy::SecretString;
use tokend::config::{Access, ClientName, Owner, Principal, Readers};
use tokend::metrics::Metrics;
use tokend::server::ServerState;
use tokend::server::access::Authority;
use tokend::server::peer::Peer;
use tokend::store::Store;
use tokend::token::{LifetimeSource, Origin, Token};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::runtime::Runtime;

/// The clients in the store: name, token, who may read it, and whether the token is valid.
const CLIENTS: &[(&str, &str, Reader, bool)] = &[
    (
        "billing",
        "eyJhbGciOiJFZERTQSJ9.billing-TOKEN-6f1c2a9e.c2ln",
        Reader::User(1001),
        true,
    ),
    ("reports", "reports-TOKEN-0b7d44e1c98f3a25", Reader::Group(2000), true),
    ("expired", "expired-TOKEN-93be0f6a12d4c857", Reader::User(1001), false),
    ("pending", "", Reader::User(1001), false),
];

#[derive(Clone, Copy)]
enum Reader {
    User(u32),
    Group(u32),
}

/// Callers, by the first byte of the input.
const PEERS: [(u32, u32, &[u32]); 4] = [
    (4242, 4242, &[]),        // listed nowhere
    (1001, 1001, &[]),        // reads billing and expired
    (1002, 1002, &[5, 2000]), // reads reports through a supplementary group
    (3000, 3000, &[]),        // reads /metrics only
];
const METRICS_READER: u32 = 3000;

fn owner(id: u32) -> Owner {
    Owner {
        spec: Principal::Id(id),
        id,
    }
}

fn state() -> Arc<ServerState> {
    let store = Store::new();
    let names: Vec<ClientName> = CLIENTS.iter().map(|c| ClientName::new(c.0).unwrap()).collect();
    store.retain_clients(&names);
    let mut access = Access::default();
    let now = SystemTime::now();
    for ((_, token, reader, valid), name) in CLIENTS.iter().zip(&names) {
        let readers = match *reader {
            Reader::User(uid) => Readers {
                users: vec![owner(uid)],
                groups: vec![],
            },
            Reader::Group(gid) => Readers {
                users: vec![],
                groups: vec![owner(gid)],
            },
        };
        access.readers.insert(name.clone(), readers);
        if token.is_empty() {
            continue;
        }
        let issued_at = now - Duration::from_secs(600);
        let lifetime = if *valid {
            Duration::from_secs(7200)
        } else {
            Duration::from_secs(60)
        };
        let token = Token {
            access_token: SecretString::from(*token),
            token_type: "Bearer".into(),
            scope: Some("read:invoices".into()),
            issued_at,
            expires_at: issued_at + lifetime,
            lifetime_source: LifetimeSource::ExpiresIn,
            origin: Origin::Here,
        };
        store.update(name, |s| {
            s.set_token(Arc::new(token));
            s.next_attempt = Some(now + Duration::from_secs(30));
        });
    }
    access.metrics_readers = Readers {
        users: vec![owner(METRICS_READER)],
        groups: vec![],
    };
    ServerState::new(store, Arc::new(Metrics::new()), Authority::new(access))
}

/// tokend's log lines of the current input (every level).
static LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOG.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        // A write to a connection the server already closed must be an error, not SIGPIPE
        // (libFuzzer's `main` does not ignore it as Rust's does).
        signal_hook::flag::register(signal_hook::consts::SIGPIPE, Arc::new(AtomicBool::new(false)))
            .expect("SIGPIPE handler");
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(|| LogWriter)
            .with_ansi(false)
            .init();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&who, request)) = data.split_first() else {
        return;
    };
    let rt = runtime();
    let (uid, gid, groups) = PEERS[usize::from(who) % PEERS.len()];
    let peer = Peer {
        uid,
        gid,
        pid: 4321,
        groups: groups.to_vec(),
    };
    LOG.lock().unwrap().clear();
    let state = state();
    let answer = rt.block_on(async {
        let (mut caller, daemon) = UnixStream::pair().expect("socketpair");
        let served = tokio::spawn(tokend::fuzzing::serve_socket_connection(daemon, peer, state.clone()));
        // Ignored: the daemon may close the connection before it has read everything (a
        // malformed head), and then the rest cannot be sent.
        let _ = caller.write_all(request).await;
        let mut answer = Vec::new();
        // Ignored: a reset after a malformed head; what was read before it is in `answer`.
        let _ = caller.read_to_end(&mut answer).await;
        served.await.expect("the connection task panicked");
        answer
    });
    let log = std::mem::take(&mut *LOG.lock().unwrap());
    for (name, token, reader, valid) in CLIENTS {
        if token.is_empty() {
            continue;
        }
        let may_read = *valid
            && match *reader {
                Reader::User(u) => u == uid,
                Reader::Group(g) => g == gid || groups.contains(&g),
            };
        if !may_read {
            assert!(
                !served_part(&answer, request, token.as_bytes()),
                "uid {uid} received (part of) the token of {name}:\n{}",
                String::from_utf8_lossy(&answer)
            );
        }
        assert!(
            !served_part(&log, request, token.as_bytes()),
            "the token of {name} was logged"
        );
    }
    assert!(
        answer.is_empty() || answer.starts_with(b"HTTP/1.1 ") || answer.starts_with(b"HTTP/1.0 "),
        "not an HTTP/1 answer: {:?}",
        String::from_utf8_lossy(&answer[..answer.len().min(200)])
    );
});

/// Whether `out` holds 12 consecutive bytes of `token` that the caller did not send itself (the
/// fuzzer learns the tokens from the comparisons here, and an answer may quote the request).
fn served_part(out: &[u8], request: &[u8], token: &[u8]) -> bool {
    const PART: usize = 12;
    let has = |haystack: &[u8], part: &[u8]| haystack.windows(part.len()).any(|w| w == part);
    token
        .windows(PART.min(token.len()))
        .any(|part| has(out, part) && !has(request, part))
}
