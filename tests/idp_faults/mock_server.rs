//! `oauth2-mock-server` (npm, pinned in tests/interop/package.json) as a third-party token
//! server, run by tests/interop/mock-idp.mjs as its own process over HTTPS: its
//! `beforeTokenSigning` and `beforeResponse` hooks make the faults, switched on and off through
//! the script's control endpoint.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::util::*;

pub struct MockIdp {
    child: Child,
    pub token_url: String,
    pub ca_file: String,
    control: String,
}

impl MockIdp {
    /// Starts the script with tokens that live `ttl_s` seconds.
    pub fn start(dir: &TestDir, ttl_s: u64) -> MockIdp {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/mock-idp.mjs");
        let log = dir.join("mock-idp.log");
        let mut child = Command::new("node")
            .arg(&script)
            .env("STATE_DIR", dir.join("mock-idp"))
            .env("TOKEN_TTL", ttl_s.to_string())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("node");
        let info = first_json_line(&mut child, Duration::from_secs(60)).unwrap_or_else(|| {
            panic!(
                "mock-idp.mjs did not start:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        });
        let s = |k: &str| info[k].as_str().unwrap().to_owned();
        MockIdp {
            token_url: s("token_endpoint"),
            ca_file: s("ca_file"),
            control: s("control_url"),
            child,
        }
    }

    /// The fault for every token request from now on (`{}`: none).
    pub fn fault(&self, fault: &Value) {
        let (status, body) = curl(&[
            "-X",
            "POST",
            "--data",
            &fault.to_string(),
            &format!("{}/fault", self.control),
        ]);
        assert_eq!(status, 204, "{body}");
    }

    /// The token requests it has seen: `at_ms`, `status` (0: not answered).
    pub fn requests(&self) -> Vec<Value> {
        self.counts()["requests"].as_array().unwrap().clone()
    }

    /// `count`, `requests`, `connections` (TLS connections accepted) and `peak_in_flight`.
    pub fn counts(&self) -> Value {
        let (_, body) = curl(&[&format!("{}/requests", self.control)]);
        serde_json::from_str(&body).unwrap()
    }
}

impl Drop for MockIdp {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}
