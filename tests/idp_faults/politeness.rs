//! The IdP is never hammered: two hundred clients due at once, against
//! `oauth2-mock-server`, which counts the TLS connections it accepts and the most token requests
//! it has in progress at once. tokend lets at most `idp.max_concurrent_requests` (default 8) be
//! in flight to one server, and reuses the connections it opened; every client still gets its
//! token. A limit out of range is refused, naming the key.

use std::path::Path;

use super::mock_server::MockIdp;
use crate::util::*;

const CLIENTS: usize = 200;

fn config(dir: &TestDir, idp: &MockIdp, limit: Option<usize>) -> std::path::PathBuf {
    let secret = dir.secret("secret", super::SECRET);
    let mut yaml = format!(
        "state_dir: {state}\nsocket: {{ path: {socket} }}\ndefaults:\n  token_url: {url}\n  ca_file: {ca}\n  client_id: app\n  client_secret: {{ file: {secret} }}\nclients:\n",
        state = dir.join("state").display(),
        socket = dir.join("tokend.sock").display(),
        url = idp.token_url,
        ca = idp.ca_file,
        secret = secret.display(),
    );
    for i in 0..CLIENTS {
        yaml.push_str(&format!(
            "  c{i}: {{ audience: https://c{i}/, outputs: [{{ path: {} }}] }}\n",
            dir.join(&format!("out/c{i}")).display()
        ));
    }
    if let Some(n) = limit {
        yaml.push_str(&format!("idp: {{ max_concurrent_requests: {n} }}\n"));
    }
    dir.write("config.yaml", &yaml)
}

#[test]
fn clients_due_at_once_share_a_few_connections_to_their_idp() {
    let test = "idp_faults::politeness::clients_due_at_once_share_a_few_connections_to_their_idp";
    if !crate::environments::interop_suite::interop_ready(test, &[]) {
        return;
    }
    let mut figures = Vec::new();
    for (limit, expected) in [(None, 8), (Some(2), 2)] {
        let dir = TestDir::new("idp-politeness");
        let idp = MockIdp::start(&dir, 3600);
        let cfg = config(&dir, &idp, limit);
        let daemon = Tokend::run_at_info(&dir, &cfg);
        wait_ready(&dir.join("tokend.sock"));
        let counts = idp.counts();
        let (requests, connections, peak) = (
            counts["count"].as_u64().unwrap() as usize,
            counts["connections"].as_u64().unwrap() as usize,
            counts["peak_in_flight"].as_u64().unwrap() as usize,
        );
        let case = format!("limit {limit:?}: {requests} requests, {connections} connections, {peak} at once");
        assert_eq!(requests, CLIENTS, "{case}");
        assert_eq!(std::fs::read_dir(dir.join("out")).unwrap().count(), CLIENTS, "{case}");
        assert!(peak <= expected, "{case}");
        // Connections are reused. Not exactly `expected`: hyper returns a connection to its pool
        // from a task of its own once the body is read, and a request that starts before that
        // opens a new one (8–25 for the default, 4–5 for 2, in runs here); never one per request.
        assert!(connections <= CLIENTS / 5, "{case}");
        assert!(daemon.stop().success());
        figures.push(case);
    }
    eprintln!("{}", figures.join("\n"));

    // 0 (and too many) are refused, naming the key and the range.
    let dir = TestDir::new("idp-politeness-bad");
    for bad in [0, 5000] {
        let cfg = dir.write(
            "bad.yaml",
            &format!(
                "idp: {{ max_concurrent_requests: {bad} }}\nclients:\n  a: {{ token_url: https://idp.example/t, client_id: a, client_secret: {{ file: {} }} }}\n",
                dir.secret("s", "x").display()
            ),
        );
        let out = tokend(&["--config", cfg.to_str().unwrap(), "check"]);
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{said}");
        assert!(
            said.contains("idp.max_concurrent_requests") && said.contains("must be from 1 to 1024"),
            "{said}"
        );
        assert!(Path::new(&cfg).exists());
    }
}
