//! The alert rules of `packaging/prometheus` in a real Prometheus: `promtool` checks the shipped
//! file and runs its unit tests; the PrometheusRule for the Operator holds the same rules; and a
//! Prometheus scraping a real tokend fires the expiry alert when the IdP fails, at the moment
//! the token's expiry predicts; and every query of the Grafana dashboard returns series from
//! a Prometheus scraping a real tokend (`packaging/grafana/check-dashboard.sh`). Needs `prometheus` and `promtool` (Debian's `prometheus`
//! package); skips loudly without them, fails instead where TOKEND_REQUIRE_PROMETHEUS is set.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::util::*;
use crate::{SECRET, config};

const REQUIRE: &str = "TOKEND_REQUIRE_PROMETHEUS";

/// The shipped rule's `for:` of `TokendTokenWillExpire` (checked against the file below).
const EXPIRY_FOR: Duration = Duration::from_secs(15);
/// Prometheus's scrape and evaluation intervals in the end-to-end test.
const INTERVAL: Duration = Duration::from_secs(1);
/// tokend's `retry.max` in the end-to-end test: a retry comes at most this long after a failure,
/// so the last one before the expiry is at most this long before it.
const RETRY_MAX: Duration = Duration::from_secs(1);

fn rules_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/prometheus")
}

/// The path of `tool` on PATH, if it runs.
fn tool(name: &str) -> Result<PathBuf, String> {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .map_err(|e| e.to_string())?;
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if !out.status.success() || path.as_os_str().is_empty() {
        return Err(format!("{name} is missing (apt-get install prometheus)"));
    }
    Ok(path)
}

fn run_promtool(promtool: &Path, args: &[&str]) -> String {
    let out = Command::new(promtool)
        .args(args)
        .current_dir(rules_dir())
        .output()
        .expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

/// `promtool check rules` accepts the shipped file, and its unit tests (each alert firing, and
/// quiet where it should be) pass.
#[test]
fn promtool_checks_the_rules_and_their_unit_tests_pass() {
    let Some(promtool) = unless_skipped(
        "promtool_checks_the_rules_and_their_unit_tests_pass",
        REQUIRE,
        tool("promtool"),
    ) else {
        return;
    };
    let checked = run_promtool(&promtool, &["check", "rules", "tokend-alerts.yaml"]);
    assert!(checked.contains("SUCCESS: 8 rules found"), "{checked}");
    let tested = run_promtool(&promtool, &["test", "rules", "tokend-alerts.test.yaml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

fn yaml(path: &Path) -> serde_yaml::Value {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The Prometheus Operator's copy of the rules is the plain file's, rule for rule, as written
/// and as `kubectl kustomize` renders the monitoring directory (which the base leaves out: it
/// must apply on clusters without the Operator's CRDs).
#[test]
fn the_prometheusrule_for_the_operator_holds_the_same_rules_as_the_prometheus_file() {
    let plain = yaml(&rules_dir().join("tokend-alerts.yaml"));
    let groups = &plain["groups"];
    assert_eq!(groups[0]["name"], "tokend");
    let for_of = |alert: &str| {
        let rules = groups[0]["rules"].as_sequence().unwrap();
        let rule = rules.iter().find(|r| r["alert"] == alert).unwrap();
        rule["for"].as_str().unwrap().to_owned()
    };
    assert_eq!(for_of("TokendTokenWillExpire"), format!("{}s", EXPIRY_FOR.as_secs()));

    let monitoring = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/kubernetes/monitoring");
    let operator = yaml(&monitoring.join("prometheusrule.yaml"));
    assert_eq!(operator["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(operator["kind"], "PrometheusRule");
    assert_eq!(
        &operator["spec"]["groups"], groups,
        "prometheusrule.yaml differs from tokend-alerts.yaml"
    );

    let base = yaml(&monitoring.join("../kustomization.yaml"));
    let resources = base["resources"].as_sequence().unwrap();
    assert!(
        !resources
            .iter()
            .any(|r| r.as_str().is_some_and(|r| r.contains("monitoring"))),
        "the base must not need the Operator's CRDs"
    );

    let Some(kubectl) = unless_skipped(
        "the_prometheusrule_for_the_operator_holds_the_same_rules_as_the_prometheus_file (kustomize)",
        REQUIRE,
        tool("kubectl"),
    ) else {
        return;
    };
    let out = Command::new(kubectl)
        .arg("kustomize")
        .arg(&monitoring)
        .output()
        .expect("run kubectl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rendered: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_slice(&out.stdout)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let rule = rendered
        .iter()
        .find(|d| d["kind"] == "PrometheusRule")
        .expect("a PrometheusRule in the rendered monitoring directory");
    assert_eq!(rule["metadata"]["namespace"], "tokend");
    assert_eq!(&rule["spec"]["groups"], groups);
    assert!(rendered.iter().any(|d| d["kind"] == "PodMonitor"));
}

/// A Prometheus process of its own, on a free loopback port, killed when dropped.
struct Prometheus {
    _child: Reaped,
    url: String,
    log: PathBuf,
}

impl Prometheus {
    /// Starts `binary` scraping tokend's `metrics.listen` at `target` every second, with the
    /// shipped rules evaluated every second; waits until its API answers.
    fn start(binary: &Path, dir: &TestDir, target: &str) -> Prometheus {
        let rules = rules_dir().join("tokend-alerts.yaml");
        let secs = INTERVAL.as_secs();
        let config = dir.write(
            "prometheus/prometheus.yml",
            &format!(
                "global: {{ scrape_interval: {secs}s, scrape_timeout: {secs}s, evaluation_interval: {secs}s }}\n\
                 rule_files: [\"{rules}\"]\n\
                 scrape_configs:\n  - job_name: tokend\n    static_configs: [{{ targets: [\"{target}\"] }}]\n",
                rules = rules.display()
            ),
        );
        let port = free_port();
        let log = dir.join("prometheus/prometheus.log");
        let out = fs::File::create(&log).unwrap();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("prometheus/data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start prometheus");
        let prometheus = Prometheus {
            _child: Reaped(child),
            url: format!("http://127.0.0.1:{port}"),
            log,
        };
        wait_for(Duration::from_secs(30), "Prometheus to be ready", || {
            let out = Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2"])
                .arg(format!("{}/-/ready", prometheus.url))
                .output()
                .ok()?;
            (out.stdout == b"200").then_some(())
        });
        prometheus
    }

    fn api(&self, path: &str) -> Value {
        let (status, body) = curl(&[&format!("{}/api/v1/{path}", self.url)]);
        assert_eq!(status, 200, "{path}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "success", "{path}: {body}");
        v["data"].clone()
    }

    /// The active (pending or firing) alerts.
    fn alerts(&self) -> Vec<Value> {
        self.api("alerts")["alerts"].as_array().unwrap().clone()
    }

    fn output(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The active alert `name`, if any.
fn alert<'a>(alerts: &'a [Value], name: &str) -> Option<&'a Value> {
    alerts.iter().find(|a| a["labels"]["alertname"] == name)
}

/// When an alert became active (Prometheus's `activeAt`).
fn active_at(alert: &Value) -> SystemTime {
    let text = alert["activeAt"].as_str().expect("activeAt");
    humantime::parse_rfc3339_weak(text).unwrap_or_else(|e| panic!("activeAt {text:?}: {e}"))
}

fn unix(seconds: f64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs_f64(seconds)
}

/// Signed seconds from `from` to `to`, for the assertions' messages.
fn secs(from: SystemTime, to: SystemTime) -> f64 {
    match to.duration_since(from) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// The value of `name{client="app"}` in tokend's `/metrics` over TCP.
fn gauge(metrics_url: &str, name: &str) -> f64 {
    let (status, text) = curl(&[metrics_url]);
    assert_eq!(status, 200);
    let prefix = format!("{name}{{client=\"app\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} in\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

/// Polls the active alerts until `done` holds for them, every 100 ms, within `timeout`;
/// returns them with the time they were read.
fn poll_alerts(
    prometheus: &Prometheus,
    timeout: Duration,
    what: &str,
    done: impl Fn(&[Value]) -> bool,
) -> (Vec<Value>, SystemTime) {
    let deadline = Instant::now() + timeout;
    loop {
        let alerts = prometheus.alerts();
        let seen = SystemTime::now();
        if done(&alerts) {
            return (alerts, seen);
        }
        if Instant::now() > deadline {
            panic!(
                "timed out after {timeout:?} waiting for {what}; alerts: {alerts:#?}\nPrometheus:\n{}",
                prometheus.output()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A real Prometheus with the shipped rules, scraping a real tokend whose IdP starts answering
/// 503 to every request: the expiry alert goes pending when tokend's next attempt moves past
/// the token's expiry — at the latest at the expiry, at the earliest one `retry.max` before it —
/// and fires its `for:` later; the warnings about a failing refresh go pending at the first
/// failure; nothing else fires (not the fleet store alert, whose gauge a tokend without `fleet:`
/// exports at 0); and once the IdP answers again, the expiry alert ends.
#[test]
fn prometheus_fires_the_expiry_alert_when_the_token_expires_before_the_idp_recovers() {
    let test = "prometheus_fires_the_expiry_alert_when_the_token_expires_before_the_idp_recovers";
    let ready = tool("prometheus").and_then(|p| tool("curl").map(|_| p));
    let Some(binary) = unless_skipped(test, REQUIRE, ready) else {
        return;
    };
    let started = Instant::now();
    let dir = TestDir::new("prometheus");
    // Short-lived tokens: refreshed at half their life (shorter than twice `min_remaining`).
    let issuer = Issuer::start(&dir, &[("app", SECRET)], "16s");
    let metrics_port = free_port();
    let cfg = config(&dir, &issuer, &[("app", "audience: https://app/")]);
    let text = fs::read_to_string(&cfg).unwrap();
    let text = text.replace(
        "retry: { initial: 200ms, max: 3s }",
        &format!("retry: {{ initial: 200ms, max: {}s }}", RETRY_MAX.as_secs()),
    );
    assert!(text.contains("max: 1s"), "{text}");
    fs::write(&cfg, format!("metrics: {{ listen: 127.0.0.1:{metrics_port} }}\n{text}")).unwrap();
    let daemon = Tokend::run(&dir, &cfg);
    let socket = dir.join("tokend.sock");
    let target = format!("127.0.0.1:{metrics_port}");
    let prometheus = Prometheus::start(&binary, &dir, &target);
    wait_ready(&socket);

    // Scraped, and quiet while all is well.
    let metrics_url = format!("http://{target}/metrics");
    wait_for(Duration::from_secs(15), "Prometheus to scrape tokend's token", || {
        let result = prometheus.api("query?query=tokend_token_expiry_timestamp_seconds");
        (!result["result"].as_array().unwrap().is_empty()).then_some(())
    });
    // (TokendAbsent may be pending from an evaluation before the first scrape; it ends at the
    // next one.)
    poll_alerts(
        &prometheus,
        Duration::from_secs(10),
        "no alert while all is well",
        <[Value]>::is_empty,
    );

    // The IdP fails from now on; the current token is the last one.
    issuer.faults(json!([{ "status": 503, "until_cleared": true }]));
    let expiry = gauge(&metrics_url, "tokend_token_expiry_timestamp_seconds");
    let expires = unix(expiry);

    // The warnings go pending at the first failure; they fire minutes later, after this test.
    let (alerts, _) = poll_alerts(
        &prometheus,
        Duration::from_secs(30),
        "the failing refresh's warnings",
        |a| alert(a, "TokendTokenExpiringWhileFailing").is_some() && alert(a, "TokendRefreshFailing").is_some(),
    );
    let first_failure = issuer
        .requests()
        .iter()
        .find(|r| r["status"] == 503)
        .map(|r| UNIX_EPOCH + Duration::from_millis(r["at_ms"].as_u64().unwrap()))
        .expect("a failed request");
    let warning = alert(&alerts, "TokendTokenExpiringWhileFailing").unwrap();
    assert_eq!(warning["state"], "pending");
    assert_eq!(warning["labels"]["client"], "app");
    let lag = secs(first_failure, active_at(warning));
    eprintln!("TokendTokenExpiringWhileFailing: pending {lag:.2}s after the first failure");
    assert!(
        (0.0..=2.0 * INTERVAL.as_secs_f64() + 1.5).contains(&lag),
        "TokendTokenExpiringWhileFailing went pending {lag:.2}s after the first failure"
    );

    // Pending when the next attempt passes the expiry: within `retry.max` before it, or at it.
    let (alerts, _) = poll_alerts(
        &prometheus,
        Duration::from_secs(40),
        "the expiry alert to go pending",
        |a| alert(a, "TokendTokenWillExpire").is_some(),
    );
    let expiring = alert(&alerts, "TokendTokenWillExpire").unwrap().clone();
    assert_eq!(expiring["labels"]["client"], "app");
    assert_eq!(expiring["labels"]["severity"], "critical");
    let pending_at = active_at(&expiring);
    let early = secs(pending_at, expires);
    let late = secs(expires, pending_at);
    eprintln!("TokendTokenWillExpire: pending {:+.2}s from the token's expiry", -early);
    assert!(
        early <= RETRY_MAX.as_secs_f64() + 0.5 && late <= 2.0 * INTERVAL.as_secs_f64() + 1.5,
        "TokendTokenWillExpire went pending {:+.2}s from the token's expiry",
        -early
    );

    // Fires `for:` after it went pending, at the next evaluation.
    let (alerts, fired) = poll_alerts(
        &prometheus,
        EXPIRY_FOR + Duration::from_secs(15),
        "the expiry alert to fire",
        |a| alert(a, "TokendTokenWillExpire").is_some_and(|x| x["state"] == "firing"),
    );
    let after = secs(pending_at, fired);
    eprintln!(
        "TokendTokenWillExpire: firing {after:.2}s after pending ({:+.2}s from the expiry; `for:` {}s)",
        secs(expires, fired),
        EXPIRY_FOR.as_secs()
    );
    let least = EXPIRY_FOR.as_secs_f64();
    assert!(
        (least..=least + INTERVAL.as_secs_f64() + 1.5).contains(&after),
        "TokendTokenWillExpire fired {after:.2}s after it went pending"
    );
    let firing = alert(&alerts, "TokendTokenWillExpire").unwrap();
    let summary = firing["annotations"]["summary"].as_str().unwrap();
    assert!(summary.contains("client app"), "{summary}");
    assert!(
        firing["annotations"]["description"]
            .as_str()
            .unwrap()
            .contains("tokend status"),
        "{firing:#?}"
    );
    // Only these three: the socket, the files, the scrape and the fleet store are fine.
    let mut names: Vec<&str> = alerts
        .iter()
        .map(|a| a["labels"]["alertname"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "TokendRefreshFailing",
            "TokendTokenExpiringWhileFailing",
            "TokendTokenWillExpire"
        ],
        "{alerts:#?}"
    );
    assert_eq!(
        gauge(&metrics_url, "tokend_token_expiry_timestamp_seconds"),
        expiry,
        "no token came while the IdP failed"
    );

    // The IdP answers again: the next retry gets a token, and the alert ends.
    issuer.clear_faults();
    poll_alerts(&prometheus, Duration::from_secs(15), "the expiry alert to end", |a| {
        alert(a, "TokendTokenWillExpire").is_none()
    });
    assert!(gauge(&metrics_url, "tokend_token_expiry_timestamp_seconds") > expiry);
    eprintln!("the Prometheus end-to-end test took {:.1?}", started.elapsed());
    assert!(daemon.stop().success());
}

/// The Grafana dashboard's queries (`packaging/grafana`) against a real Prometheus scraping a
/// real tokend for 40 s while the IdP refuses some requests, an output cannot be written and a
/// caller who is not a reader is refused: every expression of every panel returns series.
#[test]
fn every_query_of_the_dashboard_returns_series_from_a_real_prometheus() {
    let test = "every_query_of_the_dashboard_returns_series_from_a_real_prometheus";
    if unless_skipped(test, REQUIRE, tool("prometheus")).is_none() || !crate::running_as_root(test) {
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/grafana/check-dashboard.sh");
    let out = Command::new(script)
        .args([BIN, TEST_ISSUER])
        .env("DURATION", "40")
        .output()
        .expect("run check-dashboard.sh");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{log}");
    let verdict = log.lines().last().unwrap_or_default();
    assert!(
        verdict.starts_with("0 of ") && verdict.ends_with(" expressions returned nothing"),
        "{log}"
    );
}
