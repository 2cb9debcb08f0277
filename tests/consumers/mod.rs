//! Consumers that react to a refresh (issue 11): template outputs, hooks and the token proxy,
//! driven through the real binary.

use std::fs;
use std::process::Command;

use base64::Engine;
use serde_json::Value;

use crate::util::*;

/// The README's template examples, as written there, rendered for a real token and read the
/// way each consumer reads them.
#[test]
fn every_readme_template_renders_what_its_consumer_reads() {
    let dir = TestDir::new("templates");
    let issuer = Issuer::start(&dir, &[("app", "s3cret")], "1h");
    let readme = include_str!("../../README.md");
    let block = readme
        .split("```yaml\n")
        .filter_map(|rest| rest.split_once("```").map(|(b, _)| b))
        .find(|b| b.contains("format: template"))
        .expect("the README's template example");
    // Its outputs, with paths moved into the test directory and no owner or group.
    let outputs = block.split_once("    outputs:\n").expect("outputs").1;
    let moved: String = outputs
        .lines()
        .filter(|l| !l.trim_start().starts_with("owner:") && !l.trim_start().starts_with("group:"))
        .map(|l| {
            let l = l
                .replace("/home/app/", &format!("{}/", dir.join("home").display()))
                .replace("/etc/app/", &format!("{}/", dir.join("etc").display()))
                .replace("/root/.docker/", &format!("{}/", dir.join("docker").display()));
            format!("{l}\n")
        })
        .collect();
    let secret = dir.secret("secret", "s3cret");
    let cfg = dir.write(
        "config.yaml",
        &format!(
            "state_dir: {}\nsocket: {{ enabled: false }}\nclients:\n  registry:\n    token_url: {}\n    client_id: app\n    client_secret: {{ file: {} }}\n    audience: https://registry.example.com/\n    outputs:\n{moved}",
            dir.join("state").display(),
            issuer.token_url(),
            secret.display()
        ),
    );
    let check = tokend(&["--config", cfg.to_str().unwrap(), "check"]);
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert_eq!(report.matches("(template inline,").count(), 4, "{report}");
    let once = tokend(&["--config", cfg.to_str().unwrap(), "once"]);
    assert!(once.status.success(), "{}", String::from_utf8_lossy(&once.stderr));
    let token = fs::read_to_string(dir.join("docker/config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .expect("docker config.json is JSON")["auths"]["registry.example.com"]["auth"]
        .as_str()
        .map(|a| base64::engine::general_purpose::STANDARD.decode(a).unwrap())
        .map(|a| String::from_utf8(a).unwrap())
        .and_then(|a| a.strip_prefix("oauth2accesstoken:").map(str::to_owned))
        .expect("docker's auth is base64 of oauth2accesstoken:TOKEN");
    let claims = claims(&token);
    assert_eq!(claims["aud"], "https://registry.example.com/");

    // .netrc, read by Python's netrc module, as tools that honour ~/.netrc read it.
    let netrc = dir.join("home/.netrc");
    let o = Command::new("python3")
        .args([
            "-c",
            "import netrc, sys; print(netrc.netrc(sys.argv[1]).authenticators('api.example.com')[2])",
        ])
        .arg(&netrc)
        .output()
        .expect("python3");
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        token,
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(mode(&netrc), 0o600);

    // .properties: key=value lines.
    let properties = dir.join("etc/oauth.properties");
    let text = fs::read_to_string(&properties).unwrap();
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("{key} in {text}"))
            .to_owned()
    };
    assert_eq!(value("oauth.token"), token);
    assert_eq!(value("oauth.token.type"), "Bearer");
    assert!(value("oauth.token.expires_at").ends_with('Z'));
    assert_eq!(mode(&properties), 0o640);

    // credentials.json: the tool's own shape, with the expiry the token itself has.
    let credentials: Value =
        serde_json::from_str(&fs::read_to_string(dir.join("etc/credentials.json")).unwrap()).unwrap();
    assert_eq!(credentials["token"], token.as_str());
    assert_eq!(credentials["client"], "registry");
    let exp = claims["exp"].as_u64().unwrap();
    let expiry = credentials["expiry"].as_u64().unwrap();
    assert!(expiry == exp || expiry + 1 == exp, "expiry {expiry}, exp {exp}");
}

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}
