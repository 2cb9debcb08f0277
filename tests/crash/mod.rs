//! Crash mid-write: the real daemon is killed with SIGKILL at random moments
//! while six clients rotate three-second tokens into four formats each. After every kill, every
//! output and state file present holds a complete token of its own client; every few kills a
//! restarted daemon must reuse the saved token or request a new one, never publish a token older
//! than one readers already saw, and clean up the temp files the kill left. `TOKEND_KILLS` sets
//! the number of kills (200 by default), `TOKEND_KILL_SEED` the seed of the kill moments.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;

use super::{SECRET, T, config, out};
use crate::util::*;

const CLIENTS: [&str; 6] = ["c0", "c1", "c2", "c3", "c4", "c5"];
const FORMATS: [&str; 4] = ["raw", "header", "json", "env"];
/// The dev issuer's tokens live this long; tokend refreshes them at half-life.
const LIFETIME: &str = "3s";
/// Half the kills come up to this long after the daemon was started (or found ready), when it
/// writes every output at start-up …
const EARLY_DELAY_MS: u64 = 200;
/// … the others up to this long after, through its refreshes.
const MAX_DELAY_MS: u64 = 1000;
/// Every this many kills, the next daemon is first checked once it is ready.
const VERIFY_EVERY: usize = 4;
/// The dev issuer's Ed25519 signature, base64url without padding.
const SIGNATURE_LEN: usize = 86;

/// xorshift64*: a few lines, and the same kill moments for the same seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name)
        .ok()
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a number")))
}

fn output_path(dir: &TestDir, client: &str, format: &str) -> std::path::PathBuf {
    dir.join(&format!("out/{client}.{format}"))
}

/// The access token in `text`, an output of `format`, or why `text` is not a complete one.
fn token_in(format: &str, text: &str) -> Result<String, String> {
    let token = match format {
        "raw" => Some(text.to_owned()),
        "header" => text
            .strip_prefix("Authorization: Bearer ")
            .and_then(|t| t.strip_suffix('\n'))
            .map(str::to_owned),
        "env" => text
            .strip_prefix("ACCESS_TOKEN=")
            .and_then(|t| t.strip_suffix('\n'))
            .map(str::to_owned),
        "json" => serde_json::from_str::<Value>(text)
            .ok()
            .and_then(|v| v["access_token"].as_str().map(str::to_owned)),
        "state" => serde_json::from_str::<Value>(text)
            .ok()
            .and_then(|v| v["access_token"].as_str().map(str::to_owned)),
        _ => unreachable!(),
    };
    token.ok_or_else(|| format!("incomplete {format} file {text:?}"))
}

/// A complete token of the dev issuer, for `client`: three parts, a whole signature, and the
/// client's own audience. Returns its claims.
fn check_token(client: &str, token: &str) -> Result<Value, String> {
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 || parts[2].len() != SIGNATURE_LEN {
        return Err(format!("torn token {token:?}"));
    }
    let claims = claims(token);
    if claims["aud"] != format!("https://{client}.example/") {
        return Err(format!("{client} holds a foreign token: {claims}"));
    }
    Ok(claims)
}

/// What is on disk for each client: the tokens of its outputs (absent ones left out) and of its
/// state file. Panics on anything torn or foreign.
struct OnDisk {
    outputs: BTreeMap<&'static str, Vec<(String, Value)>>,
    state: BTreeMap<&'static str, (String, Value)>,
    /// The state files' `expires_at_ms`.
    state_expiry_ms: BTreeMap<&'static str, u64>,
}

fn on_disk(dir: &TestDir, when: &str) -> OnDisk {
    let mut found = OnDisk {
        outputs: BTreeMap::new(),
        state: BTreeMap::new(),
        state_expiry_ms: BTreeMap::new(),
    };
    for client in CLIENTS {
        let mut tokens = Vec::new();
        for format in FORMATS {
            let Ok(text) = fs::read_to_string(output_path(dir, client, format)) else {
                continue;
            };
            let token = token_in(format, &text)
                .and_then(|t| check_token(client, &t).map(|c| (t, c)))
                .unwrap_or_else(|e| panic!("{when}: {client}.{format}: {e}"));
            tokens.push(token);
        }
        found.outputs.insert(client, tokens);
        if let Ok(text) = fs::read_to_string(dir.join(&format!("state/{client}.state"))) {
            let token = token_in("state", &text)
                .and_then(|t| check_token(client, &t).map(|c| (t, c)))
                .unwrap_or_else(|e| panic!("{when}: {client}.state: {e}"));
            let v: Value = serde_json::from_str(&text).unwrap();
            found
                .state_expiry_ms
                .insert(client, v["expires_at_ms"].as_u64().unwrap());
            found.state.insert(client, token);
        }
    }
    found
}

fn iat(claims: &Value) -> u64 {
    claims["iat"].as_u64().unwrap()
}

#[test]
fn a_daemon_killed_at_random_moments_leaves_only_whole_tokens_and_recovers() {
    let kills = env_number("TOKEND_KILLS").unwrap_or(200) as usize;
    let seed = env_number("TOKEND_KILL_SEED").unwrap_or_else(|| now_ms() | 1);
    eprintln!("crash test: {kills} kills, TOKEND_KILL_SEED={seed}");
    let mut rng = Rng(seed);

    let dir = TestDir::new("crash");
    let issuer = Issuer::start(&dir, &[("app", SECRET)], LIFETIME);
    let clients: Vec<(String, String)> = CLIENTS
        .iter()
        .map(|c| {
            let outputs: Vec<String> = FORMATS
                .iter()
                .map(|f| format!("- {{ path: {}, format: {f} }}", out(&dir, &format!("{c}.{f}"))))
                .collect();
            (
                c.to_string(),
                format!(
                    "audience: https://{c}.example/\nrefresh: {{ at: 50%, jitter: 0%, min_remaining: 1s }}\noutputs:\n{}",
                    outputs.join("\n")
                ),
            )
        })
        .collect();
    let clients: Vec<(&str, &str)> = clients.iter().map(|(n, b)| (n.as_str(), b.as_str())).collect();
    let cfg = config(&dir, &issuer, &clients);
    let socket = dir.join("tokend.sock");
    let (out_dir, state_dir) = (dir.join("out"), dir.join("state"));

    let started = Instant::now();
    let (mut verified, mut reused, mut refreshed) = (0, 0, 0);
    let (mut kills_leaving_temps, mut temps_left, mut most_temps) = (0, 0, 0);
    // Kills after which some client's outputs held different tokens: the kill came part-way
    // through a publication.
    let mut kills_mid_publish = 0;
    let mut daemons = 0;
    for kill in 0..kills {
        let before = on_disk(&dir, &format!("before start {kill}"));
        let temps_before: BTreeSet<_> = temp_files(&out_dir).into_iter().chain(temp_files(&state_dir)).collect();
        let spawned_ms = now_ms();
        let mut daemon = Tokend::run(&dir, &cfg);
        daemons += 1;
        if kill % VERIFY_EVERY == 0 {
            wait_ready(&socket);
            verified += 1;
            let after = on_disk(&dir, &format!("restart {kill}, ready"));
            // The kill's temp files were removed at start-up.
            let left: Vec<_> = temps_before
                .iter()
                .filter(|n| out_dir.join(n).exists() || state_dir.join(n).exists())
                .collect();
            assert!(left.is_empty(), "restart {kill}: temp files not removed: {left:?}");
            // Each client's first outcome (a client may log a second before another its first).
            let first_outcomes = wait_for(T, "every client's first token", || {
                let events = daemon.events();
                let firsts: Vec<Value> = CLIENTS
                    .iter()
                    .filter_map(|c| {
                        events
                            .iter()
                            .find(|e| is(e, "client", c) && e["outcome"].is_string())
                            .cloned()
                    })
                    .collect();
                (firsts.len() == CLIENTS.len()).then_some(firsts)
            });
            let requests = issuer.requests();
            for client in CLIENTS {
                let outputs = &after.outputs[client];
                assert_eq!(outputs.len(), FORMATS.len(), "restart {kill}: {client} lacks outputs");
                let outcome = first_outcomes
                    .iter()
                    .find(|e| is(e, "client", client))
                    .unwrap_or_else(|| panic!("restart {kill}: no first outcome for {client}"))["outcome"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                let newest_seen = before.outputs[client]
                    .iter()
                    .map(|(_, c)| iat(c))
                    .chain(before.state.get(client).map(|(_, c)| iat(c)))
                    .max();
                match outcome.as_str() {
                    "reused" => {
                        reused += 1;
                        let (saved, saved_claims) = before.state.get(client).expect("reused without a state file");
                        assert!(
                            newest_seen.is_none_or(|n| iat(saved_claims) >= n),
                            "restart {kill}: {client} reused a token older than its outputs held"
                        );
                        assert!(
                            before.state_expiry_ms[client] > spawned_ms + 1000,
                            "restart {kill}: {client} reused a token with less than 1 s left"
                        );
                        // Its outputs hold the saved token, or one refreshed since.
                        for (token, claims) in outputs {
                            assert!(
                                token == saved || iat(claims) * 1000 + 999 >= spawned_ms,
                                "restart {kill}: {client} serves neither the saved token nor a new one"
                            );
                        }
                    }
                    "refreshed" => {
                        refreshed += 1;
                        // It decided before its request reached the issuer: the saved token
                        // must have had less than the 1 s reuse needs left by then. (No margin
                        // needed, however slow the start-up.)
                        if let Some(expiry) = before.state_expiry_ms.get(client) {
                            let audience = format!("https://{client}.example/");
                            let asked = requests
                                .iter()
                                .filter(|r| r["audience"] == audience.as_str())
                                .filter_map(|r| r["at_ms"].as_u64())
                                .find(|at| *at >= spawned_ms)
                                .expect("a request for the refreshed client");
                            assert!(
                                *expiry <= asked + 1000,
                                "restart {kill}: {client} refreshed although its saved token had {} ms left",
                                expiry - asked
                            );
                        }
                    }
                    other => panic!("restart {kill}: {client} started with {other}"),
                }
                // Never a token older than one a reader could already have seen.
                if let Some(newest) = newest_seen {
                    for (_, claims) in outputs {
                        assert!(
                            iat(claims) >= newest,
                            "restart {kill}: {client} went back to a token issued at {} after readers saw one issued at {newest} (outcome {outcome})",
                            iat(claims)
                        );
                    }
                }
            }
        }
        let window = if rng.below(2) == 0 {
            EARLY_DELAY_MS
        } else {
            MAX_DELAY_MS
        };
        let delay = rng.below(window);
        std::thread::sleep(Duration::from_millis(delay));
        daemon.signal(Signal::SIGKILL);
        daemon.wait(T);
        let after = on_disk(&dir, &format!("after kill {kill}"));
        let mixed = CLIENTS
            .iter()
            .filter(|c| after.outputs[*c].iter().map(|(t, _)| t).collect::<BTreeSet<_>>().len() > 1)
            .count();
        if mixed > 0 {
            kills_mid_publish += 1;
        }
        for client in CLIENTS {
            // The state file is never behind the outputs: a restart would go back to an older
            // token than readers have seen.
            let Some(newest) = after.outputs[client].iter().map(|(_, c)| iat(c)).max() else {
                continue;
            };
            let saved = after.state.get(client).map(|(_, c)| iat(c));
            assert!(
                saved.is_some_and(|s| s >= newest),
                "after kill {kill}: {client}'s state file (token issued at {saved:?}) is behind its outputs (issued at {newest})"
            );
        }
        let temps: BTreeSet<_> = temp_files(&out_dir).into_iter().chain(temp_files(&state_dir)).collect();
        if !temps.is_empty() {
            kills_leaving_temps += 1;
            temps_left += temps.len();
        }
        most_temps = most_temps.max(temps.len());
        // At most one temp file per group in flight, and the last run's were removed.
        assert!(
            temps.len() <= CLIENTS.len(),
            "after kill {kill}: temp files accumulate: {temps:?}"
        );
    }

    // A clean run after the last kill: ready, then stopped, leaves exactly the outputs and the
    // state files.
    let daemon = Tokend::run(&dir, &cfg);
    wait_ready(&socket);
    on_disk(&dir, "final run");
    assert!(daemon.stop().success());
    let names = |d: &Path| -> BTreeSet<String> {
        fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    let expected_outputs: BTreeSet<String> = CLIENTS
        .iter()
        .flat_map(|c| FORMATS.iter().map(move |f| format!("{c}.{f}")))
        .collect();
    let expected_state: BTreeSet<String> = CLIENTS.iter().map(|c| format!("{c}.state")).collect();
    assert_eq!(names(&out_dir), expected_outputs);
    assert_eq!(names(&state_dir), expected_state);
    let requests = issuer.request_count();
    eprintln!(
        "crash test: {kills} kills of {daemons} daemons in {:.0?} (seed {seed}); {verified} restarts verified \
         ({reused} clients reused their saved token, {refreshed} refreshed); {kills_mid_publish} kills came \
         part-way through a publication; {kills_leaving_temps} kills left {temps_left} temp files (at most {most_temps} at once), all removed; {requests} token requests",
        started.elapsed()
    );
    assert!(
        reused > 0 && refreshed > 0,
        "restarts never reused ({reused}) or never refreshed ({refreshed})"
    );
}
