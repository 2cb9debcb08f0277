//! A small HTTP/1.1 load generator over a Unix socket or TCP, used by `bench/socket.sh` and
//! `bench/proxy.sh` to load tokend and nginx the same way. Each connection is kept alive and
//! sends one request after another (no pipelining); every latency is recorded.
//!
//!   cargo bench --bench loadgen -- load --socket S --path /v1/tokens/x --connections 64 --duration 10s
//!   cargo bench --bench loadgen -- load --tcp 127.0.0.1:8081 --header 'Authorization: Bearer T' --path /
//!   cargo bench --bench loadgen -- idle --socket S --path /v1/tokens/x --connections 1000 --hold 10s
//!
//! `load` prints one line: `connections=64 requests=… rps=… p50_us=… p99_us=… errors=…`.
//! `idle` opens the connections, makes one request on each, prints `idle-ready`, holds them open.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

struct Args {
    mode: String,
    socket: PathBuf,
    /// Instead of `socket`: a TCP address.
    tcp: Option<String>,
    /// Extra request headers (`Name: value`).
    headers: Vec<String>,
    path: String,
    connections: usize,
    duration: Duration,
    hold: Duration,
}

fn parse_args() -> Args {
    let mut args = Args {
        mode: String::new(),
        socket: PathBuf::new(),
        tcp: None,
        headers: Vec::new(),
        path: "/".into(),
        connections: 1,
        duration: Duration::from_secs(10),
        hold: Duration::from_secs(10),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "load" | "idle" => args.mode = a.clone(),
            "--socket" => args.socket = value().into(),
            "--tcp" => args.tcp = Some(value()),
            "--header" => args.headers.push(value()),
            "--path" => args.path = value(),
            "--connections" => args.connections = value().parse().expect("a number"),
            "--duration" => args.duration = humantime::parse_duration(&value()).expect("a duration"),
            "--hold" => args.hold = humantime::parse_duration(&value()).expect("a duration"),
            // Added by `cargo bench`.
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(!args.mode.is_empty(), "say `load` or `idle`");
    args
}

async fn connect(args: &Args) -> Box<dyn Stream> {
    match &args.tcp {
        Some(addr) => {
            let s = TcpStream::connect(addr).await.expect("connect");
            s.set_nodelay(true).unwrap();
            Box::new(s)
        }
        None => Box::new(UnixStream::connect(&args.socket).await.expect("connect")),
    }
}

fn request(args: &Args) -> Vec<u8> {
    let mut r = format!("GET {} HTTP/1.1\r\nHost: localhost\r\n", args.path);
    for h in &args.headers {
        r.push_str(h);
        r.push_str("\r\n");
    }
    r.push_str("\r\n");
    r.into_bytes()
}

/// Reads one response; returns whether it was a 200.
async fn read_response(stream: &mut Box<dyn Stream>, buf: &mut Vec<u8>) -> std::io::Result<bool> {
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end]).map_err(std::io::Error::other)?;
            let ok = head.starts_with("HTTP/1.1 200");
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .ok_or_else(|| std::io::Error::other("no content-length"))?;
            let total = end + 4 + length;
            while buf.len() < total {
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Ok(ok);
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn load(args: &Arc<Args>) {
    let request = request(args);
    let warmup = Duration::from_secs(1);
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + args.duration;
    let mut tasks = Vec::new();
    for _ in 0..args.connections {
        let request = request.clone();
        let args = args.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies: Vec<u32> = Vec::with_capacity(1 << 16);
            let mut errors = 0u64;
            let mut stream = connect(&args).await;
            let mut buf = Vec::with_capacity(8192);
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let ok = match stream.write_all(&request).await {
                    Ok(()) => read_response(&mut stream, &mut buf).await,
                    Err(e) => Err(e),
                };
                match ok {
                    Ok(true) => {
                        if sent >= measure_from {
                            latencies.push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32);
                        }
                    }
                    Ok(false) => errors += 1,
                    Err(_) => {
                        errors += 1;
                        stream = connect(&args).await;
                    }
                }
            }
            (latencies, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.expect("a connection task");
        all.extend(l);
        errors += e;
    }
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "connections={} requests={} rps={:.0} p50_us={} p99_us={} errors={}",
        args.connections,
        all.len(),
        all.len() as f64 / args.duration.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        errors
    );
}

async fn idle(args: &Args) {
    let request = request(args);
    let mut open = Vec::with_capacity(args.connections);
    let mut buf = Vec::with_capacity(8192);
    for _ in 0..args.connections {
        let mut stream = connect(args).await;
        stream.write_all(&request).await.expect("write");
        assert!(read_response(&mut stream, &mut buf).await.expect("read"), "not a 200");
        open.push(stream);
    }
    println!("idle-ready {}", open.len());
    tokio::time::sleep(args.hold).await;
    drop(open);
}

fn main() {
    let args = Arc::new(parse_args());
    // Two threads: the load generator shares the machine's two cores with the server under test.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        match args.mode.as_str() {
            "load" => load(&args).await,
            _ => idle(&args).await,
        }
    });
}
