//! The refresh path, one refresh at a time: what a group's task does when its token is due
//! (`Runner::refresh`: the token request over HTTP to the token server, parsing and validating
//! the answer, then the state file and four outputs written atomically and fsynced, the store
//! and the metrics updated). It reports time, heap allocations and bytes allocated per refresh,
//! the fsyncs on their own, and the same refreshes with fsync turned off.
//!
//!   cargo bench --bench refresh_path -- [--refreshes 1000] [--warmup 50] [--fourth env|template]
//!       [--dir DIR] [--raw FILE]     (or bench/refresh_path.sh, which takes the benchmark lock)
//!
//! The token server is the development issuer as its own process (`tokend dev --issuer-only`,
//! the binary Cargo built with this bench) on 127.0.0.1, so only tokend's side of the exchange
//! is counted here. The library is driven through its public entry points exactly as the daemon
//! wires them (`config::parse_str` → `Group` → `IdpSource` + `Publisher` → `Runner`), on a
//! runtime built as `tokend run` builds it, and without a log subscriber (the daemon's one
//! `info` line per refresh is not formatted here).
//!
//! Two things in this file replace libc's and std's for the measurement only:
//! - a counting `#[global_allocator]` around `System`: every allocation of the process (all
//!   threads: the runtime's workers and the blocking pool that writes the files);
//! - an `fsync` of its own, which the linker picks over libc's for every call in this binary
//!   (std's `File::sync_all` included): it counts and times each one, or skips it (returns 0
//!   without syncing) for the "fsync off" runs. `fdatasync` likewise; tokend calls neither else.
//!
//! Modes, interleaved in blocks of 50 so that the machine's noise falls on all of them alike:
//! `e2e` (Runner::refresh, fsync on), `e2e-nofsync` (the same, fsync skipped), and `split`
//! (IdpSource::obtain, then the validation once more with the keys cached, then
//! Publisher::publish, each timed and counted on its own); then each output's rendering alone
//! (`output::format::render`, no I/O).

// The allocator wrapper and the `fsync` interposer below are the only unsafe code; each says
// why it is sound.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Instant, SystemTime};

use secrecy::ExposeSecret;
use tokend::config::{self, Endpoint};
use tokend::metrics::Metrics;
use tokend::oauth::issuer::IssuerCache;
use tokend::oauth::{ClientSettings, HttpClients};
use tokend::output::hooks::Reason;
use tokend::refresh::clock::Clock;
use tokend::refresh::{Attempts, Group, IdpSource, Publisher, Runner, TokenSource};
use tokend::store::Store;

// ---- counting allocator ----------------------------------------------------------------

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

struct Counting;

// SAFETY: every method forwards its arguments unchanged to `System`, which upholds the
// `GlobalAlloc` contract; the only addition is two relaxed atomic increments, which neither
// allocate nor touch the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        BYTES.fetch_add(layout.size() as u64, Relaxed);
        // SAFETY: the caller's guarantees for `layout` are passed on as they are.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        BYTES.fetch_add(layout.size() as u64, Relaxed);
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` with `layout` (every allocation above is System's).
        unsafe { System.dealloc(ptr, layout) }
    }

    /// A realloc counts as one allocation of the new size (it may move the block).
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        BYTES.fetch_add(new_size as u64, Relaxed);
        // SAFETY: as for `dealloc`; the caller guarantees `new_size` is valid for `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

// ---- fsync interposer ------------------------------------------------------------------

static SKIP_FSYNC: AtomicBool = AtomicBool::new(false);
static FSYNCS: AtomicU64 = AtomicU64::new(0);
static FSYNC_NANOS: AtomicU64 = AtomicU64::new(0);

fn sync_call(number: libc::c_long, fd: libc::c_int) -> libc::c_int {
    FSYNCS.fetch_add(1, Relaxed);
    if SKIP_FSYNC.load(Relaxed) {
        return 0;
    }
    let started = Instant::now();
    // SAFETY: fsync(2) and fdatasync(2) take one int and touch no memory of ours; on failure
    // `syscall` returns -1 and sets errno, exactly as libc's wrappers do.
    let result = unsafe { libc::syscall(number, fd) } as libc::c_int;
    FSYNC_NANOS.fetch_add(started.elapsed().as_nanos() as u64, Relaxed);
    result
}

/// Replaces libc's `fsync` for this binary (the linker resolves std's call to this definition
/// before it looks in libc.so): counted, timed, or skipped.
// SAFETY (of `no_mangle`): no other definition of `fsync` is linked into this executable (libc's
// is in the shared library, which this one takes precedence over), and the signature is
// fsync(2)'s.
#[unsafe(no_mangle)]
pub extern "C" fn fsync(fd: libc::c_int) -> libc::c_int {
    sync_call(libc::SYS_fsync, fd)
}

/// As `fsync`.
// SAFETY (of `no_mangle`): as for `fsync`.
#[unsafe(no_mangle)]
pub extern "C" fn fdatasync(fd: libc::c_int) -> libc::c_int {
    sync_call(libc::SYS_fdatasync, fd)
}

// ---- counters around one step ----------------------------------------------------------

#[derive(Clone, Copy, Default)]
struct Sample {
    nanos: u64,
    allocs: u64,
    bytes: u64,
    fsyncs: u64,
    fsync_nanos: u64,
}

struct Meter {
    started: Instant,
    allocs: u64,
    bytes: u64,
    fsyncs: u64,
    fsync_nanos: u64,
}

impl Meter {
    fn start() -> Meter {
        Meter {
            allocs: ALLOCS.load(Relaxed),
            bytes: BYTES.load(Relaxed),
            fsyncs: FSYNCS.load(Relaxed),
            fsync_nanos: FSYNC_NANOS.load(Relaxed),
            started: Instant::now(),
        }
    }

    fn stop(&self) -> Sample {
        let nanos = self.started.elapsed().as_nanos() as u64;
        Sample {
            nanos,
            allocs: ALLOCS.load(Relaxed) - self.allocs,
            bytes: BYTES.load(Relaxed) - self.bytes,
            fsyncs: FSYNCS.load(Relaxed) - self.fsyncs,
            fsync_nanos: FSYNC_NANOS.load(Relaxed) - self.fsync_nanos,
        }
    }
}

// ---- the token server ------------------------------------------------------------------

/// `tokend dev --issuer-only` as its own process; killed when dropped.
struct IssuerProcess {
    child: Child,
    base_url: String,
}

impl IssuerProcess {
    fn start() -> IssuerProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tokend"))
            .args(["dev", "--issuer-only", "--port", "0", "--lifetime", "1h"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start `tokend dev --issuer-only`");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut line)
            .expect("the issuer's first line");
        let base_url = line
            .trim()
            .rsplit(' ')
            .next()
            .filter(|u| u.starts_with("http://"))
            .unwrap_or_else(|| panic!("unexpected first line from the issuer: {line:?}"))
            .to_owned();
        IssuerProcess { child, base_url }
    }
}

impl Drop for IssuerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- the client under test -------------------------------------------------------------

/// The four output formats of `tokend dev`'s own config (raw, header, json, env), or with
/// `template` in place of `env`.
fn config_text(issuer: &str, dir: &Path, fourth: &str) -> String {
    let d = dir.display();
    let fourth = match fourth {
        "env" => format!("{{ path: {d}/tokens/bench.env, format: env }}"),
        _ => format!(
            "{{ path: {d}/tokens/bench.properties, format: template, template: \"oauth.token={{{{ access_token }}}}\\noauth.token.type={{{{ token_type }}}}\\noauth.token.expires_at={{{{ expires_at }}}}\\n\" }}"
        ),
    };
    format!(
        "\
state_dir: {d}/state
clients:
  bench:
    issuer: {issuer}
    client_id: tokend-dev
    client_secret: {{ file: {d}/client-secret }}
    audience: https://api.example.dev/
    scope: read:demo
    validate: true
    outputs:
      - {{ path: {d}/tokens/bench.token }}
      - {{ path: {d}/tokens/bench.header, format: header }}
      - {{ path: {d}/tokens/bench.json, format: json }}
      - {fourth}
"
    )
}

struct Setup {
    group: Arc<Group>,
    state_dir: PathBuf,
    http: HttpClients,
}

fn setup(issuer: &str, dir: &Path, fourth: &str) -> Setup {
    std::fs::create_dir_all(dir).unwrap();
    let secret = dir.join("client-secret");
    std::fs::write(&secret, tokend::cli::dev::ISSUER_ONLY_CLIENT.1).unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let path = dir.join("config.yaml");
    let text = config_text(issuer, dir, fourth);
    std::fs::write(&path, &text).unwrap();
    let config = config::parse_str(&text, &path).unwrap_or_else(|e| panic!("{e}"));
    let mut groups = Group::from_clients(&config.clients);
    assert_eq!(groups.len(), 1);
    Setup {
        group: Arc::new(groups.remove(0)),
        state_dir: config.state_dir,
        http: HttpClients::default(),
    }
}

impl Setup {
    fn publisher(&self) -> Publisher {
        Publisher::new(
            self.group.clone(),
            &self.state_dir,
            Store::new(),
            Arc::new(Metrics::new()),
            Clock::system(),
        )
    }

    fn runner(&self) -> Runner<IdpSource> {
        Runner::new(
            self.group.clone(),
            IdpSource::new(&self.group, &self.http, Arc::new(Metrics::new())),
            self.publisher(),
            Clock::system(),
        )
    }
}

/// The pieces of one refresh, driven one at a time.
struct Split {
    source: IdpSource,
    publisher: Publisher,
    /// A cache of the issuer's keys of its own, to time the validation alone.
    keys: IssuerCache,
    http: tokend::oauth::HttpClient,
    issuer: String,
    jwks_uri: url::Url,
    group: Arc<Group>,
}

impl Split {
    async fn new(setup: &Setup) -> Split {
        let spec = &setup.group.spec;
        let timeouts = setup.group.timeouts();
        let settings = ClientSettings {
            connect_timeout: timeouts.connect,
            ca_pem: None,
            identity_pem: None,
            proxy: spec.transport.proxy.clone(),
        };
        let http = setup.http.get(&settings, timeouts).unwrap();
        let Endpoint::Issuer(issuer_url) = &spec.grant.endpoint else {
            unreachable!("the config names an issuer")
        };
        let mut keys = IssuerCache::default();
        let metadata = keys.metadata(&http, issuer_url, false).await.unwrap();
        Split {
            source: IdpSource::new(&setup.group, &setup.http, Arc::new(Metrics::new())),
            publisher: setup.publisher(),
            keys,
            http,
            issuer: metadata.issuer,
            jwks_uri: metadata.jwks_uri.expect("the dev issuer has a jwks_uri"),
            group: setup.group.clone(),
        }
    }

    /// obtain (request, parse, validation), validation again (keys cached), publish (writes).
    async fn once(&mut self) -> [Sample; 3] {
        let m = Meter::start();
        let token = self.source.obtain(SystemTime::now(), None).await.unwrap();
        let obtain = m.stop();
        let rules = self.group.spec.validation.as_ref().expect("validate: true");
        let m = Meter::start();
        self.keys
            .validate(
                &self.http,
                token.access_token.expose_secret(),
                rules,
                &self.issuer,
                &self.jwks_uri,
            )
            .await
            .unwrap();
        let validate = m.stop();
        let attempts = Attempts {
            failures: 0,
            next: self.group.plan(&token).at,
            held_until: None,
        };
        let m = Meter::start();
        self.publisher
            .publish(Arc::new(token), attempts, true, Some(Reason::New))
            .await;
        let publish = m.stop();
        assert_eq!(self.publisher.failed_outputs(), 0);
        [obtain, validate, publish]
    }
}

fn render_name(format: config::Format) -> &'static str {
    match format {
        config::Format::Raw => "render.raw",
        config::Format::Header => "render.header",
        config::Format::Json => "render.json",
        config::Format::Env => "render.env",
        config::Format::Template => "render.template",
    }
}

// ---- statistics ------------------------------------------------------------------------

fn percentile(sorted: &[u64], p: f64) -> u64 {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank]
}

/// `name median p90 … ` of each field over `samples`.
fn summary(name: &str, samples: &[Sample]) -> String {
    let stat = |f: fn(&Sample) -> u64| {
        let mut v: Vec<u64> = samples.iter().map(f).collect();
        v.sort_unstable();
        (percentile(&v, 0.5), percentile(&v, 0.9))
    };
    let us = |n: u64| n as f64 / 1000.0;
    let (t50, t90) = stat(|s| s.nanos);
    let (a50, a90) = stat(|s| s.allocs);
    let (b50, _) = stat(|s| s.bytes);
    let (f50, _) = stat(|s| s.fsyncs);
    let (fs50, fs90) = stat(|s| s.fsync_nanos);
    let mean_allocs = samples.iter().map(|s| s.allocs).sum::<u64>() as f64 / samples.len() as f64;
    let mean_bytes = samples.iter().map(|s| s.bytes).sum::<u64>() as f64 / samples.len() as f64;
    format!(
        "{name:<14} n={:<5} time_us median={:>8.1} p90={:>8.1}  allocs median={a50} p90={a90} mean={mean_allocs:.1}  \
         bytes median={b50} mean={mean_bytes:.0}  fsyncs={f50} fsync_us median={:>7.1} p90={:>7.1}",
        samples.len(),
        us(t50),
        us(t90),
        us(fs50),
        us(fs90),
    )
}

// ---- main ------------------------------------------------------------------------------

struct Args {
    refreshes: usize,
    warmup: usize,
    dir: Option<PathBuf>,
    raw: Option<PathBuf>,
    fourth: String,
}

fn parse_args() -> Args {
    let mut args = Args {
        refreshes: 1000,
        warmup: 50,
        dir: None,
        raw: None,
        fourth: "env".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--refreshes" => args.refreshes = value().parse().expect("--refreshes N"),
            "--warmup" => args.warmup = value().parse().expect("--warmup N"),
            "--dir" => args.dir = Some(value().into()),
            "--raw" => args.raw = Some(value().into()),
            "--fourth" => args.fourth = value(),
            // `cargo bench` passes --bench.
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(
        args.fourth == "env" || args.fourth == "template",
        "--fourth env|template"
    );
    args
}

const BLOCK: usize = 50;

fn main() {
    let args = parse_args();
    let issuer = IssuerProcess::start();
    // The outputs go where the daemon's would on this host (the same file system as
    // /var/lib and /run/tokend's parent), in a directory of their own.
    let scratch = match &args.dir {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(16)
        .enable_all()
        .build()
        .unwrap();
    let rows = runtime.block_on(async {
        let e2e_setup = setup(&issuer.base_url, &scratch.path().join("e2e"), &args.fourth);
        let split_setup = setup(&issuer.base_url, &scratch.path().join("split"), &args.fourth);
        let mut runner = e2e_setup.runner();
        let mut split = Split::new(&split_setup).await;
        // Warm-up: the first refresh discovers the issuer, fetches its keys, builds the HTTP
        // client and opens the connection; later ones reuse all of that, as in the daemon.
        for _ in 0..args.warmup {
            runner.refresh().await.unwrap();
            split.once().await;
        }
        let (mut e2e, mut nofsync, mut obtain, mut validate, mut publish) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        while e2e.len() < args.refreshes {
            for skip in [false, true] {
                SKIP_FSYNC.store(skip, Relaxed);
                for _ in 0..BLOCK {
                    let m = Meter::start();
                    runner.refresh().await.unwrap();
                    let s = m.stop();
                    assert_eq!(runner.failed_outputs(), 0);
                    if skip { &mut nofsync } else { &mut e2e }.push(s);
                }
            }
            SKIP_FSYNC.store(false, Relaxed);
            for _ in 0..BLOCK {
                let [o, v, p] = split.once().await;
                obtain.push(o);
                validate.push(v);
                publish.push(p);
            }
        }
        // Rendering alone, per format (no I/O): what each output costs before its file is
        // written.
        let token = split.source.obtain(SystemTime::now(), None).await.unwrap();
        let mut renders = Vec::new();
        for out in split.group.members().flat_map(|m| m.outputs.iter()) {
            let mut samples = Vec::with_capacity(args.refreshes);
            for _ in 0..args.refreshes {
                let m = Meter::start();
                let bytes = tokend::output::format::render(out, &token, SystemTime::now()).unwrap();
                samples.push(m.stop());
                drop(bytes);
            }
            renders.push((render_name(out.format), samples));
        }
        let mut rows = vec![
            ("e2e", e2e),
            ("e2e-nofsync", nofsync),
            ("split.obtain", obtain),
            ("split.validate", validate),
            ("split.publish", publish),
        ];
        rows.extend(renders);
        rows
    });
    println!(
        "refresh_path: issuer={} (own process) fourth_output={} dir={} refreshes={} warmup={}",
        issuer.base_url,
        args.fourth,
        scratch.path().display(),
        args.refreshes,
        args.warmup
    );
    for (name, samples) in &rows {
        println!("{}", summary(name, samples));
    }
    if let Some(path) = &args.raw {
        let mut text = String::from("mode,nanos,allocs,bytes,fsyncs,fsync_nanos\n");
        for (name, samples) in &rows {
            for s in samples {
                text.push_str(&format!(
                    "{name},{},{},{},{},{}\n",
                    s.nanos, s.allocs, s.bytes, s.fsyncs, s.fsync_nanos
                ));
            }
        }
        std::fs::write(path, text).unwrap();
    }
}
