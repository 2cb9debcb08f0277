//! The container image and the Kubernetes manifests, for real: `packaging/kubernetes/test-pods.sh`
//! validates the rendered manifests offline, runs the image with podman and plays tokend's pod
//! and a consumer pod with `podman kube play`; `packaging/kubernetes/test-fleet-pods.sh` does the
//! same for fleet mode (the fleet component's refreshers and follower, the sidecar example, a
//! Redis). They need the image that `packaging/container/build-image.sh` builds from the static
//! binary; skipped, loudly, where they cannot run (not root, no podman, no image, no Redis), and
//! `TOKEND_REQUIRE_PODMAN=1` (as `.ci/run` sets after building the image) makes that an error.

mod daemon;
mod fleet;

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{run_checks, unless_skipped};

fn here() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn image() -> String {
    format!("localhost/tokend:{}", env!("CARGO_PKG_VERSION"))
}

/// The instructions of a Containerfile's last stage, without comments and with each `COPY`
/// reduced to its destination (the sources differ: a build stage in one, the context in the
/// other).
fn final_stage(file: &str) -> Vec<String> {
    let text = std::fs::read_to_string(here().join(file)).unwrap();
    // Continuation lines joined, comments and blank lines dropped.
    let joined = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join("\n")
        .replace("\\\n", " ");
    let lines: Vec<&str> = joined.lines().collect();
    let last = lines.iter().rposition(|l| l.starts_with("FROM ")).unwrap();
    lines[last..]
        .iter()
        .map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            match words.first() {
                Some(&"COPY") => format!("COPY {}", words.last().unwrap()),
                _ => words.join(" "),
            }
        })
        .collect()
}

#[test]
fn the_dockerfile_builds_the_same_final_stage_as_the_offline_containerfile() {
    let docker = final_stage("packaging/container/Dockerfile");
    let offline = final_stage("packaging/container/Containerfile");
    assert_eq!(docker, offline);
    assert_eq!(docker[0], "FROM scratch");
    for wanted in [
        &format!("ARG VERSION={}", env!("CARGO_PKG_VERSION")),
        "USER 64023:64023",
        "COPY /usr/bin/tokend",
        "COPY /etc/ssl/certs/ca-certificates.crt",
        "ENTRYPOINT [\"/usr/bin/tokend\"]",
    ] {
        assert!(docker.iter().any(|l| l == wanted), "{wanted} in {docker:#?}");
    }
}

fn found(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool} || [ -x /usr/sbin/{tool} ]")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn sources_newer_than(built: std::time::SystemTime) -> Option<PathBuf> {
    let mut todo: Vec<PathBuf> = ["src", "Cargo.toml", "Cargo.lock"]
        .iter()
        .map(|p| here().join(p))
        .collect();
    while let Some(path) = todo.pop() {
        if path.is_dir() {
            todo.extend(std::fs::read_dir(&path).unwrap().flatten().map(|e| e.path()));
        } else if std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t > built)
        {
            return Some(path);
        }
    }
    None
}

/// The static binary and an image built from it, both current; or why the test cannot run.
fn ready() -> Result<(), String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Err("needs root".into());
    }
    for tool in [
        "podman",
        "runc",
        "catatonit",
        "kubectl",
        "kubernetes-validate",
        "curl",
        "openssl",
        "nginx",
        "dnsmasq",
    ] {
        if !found(tool) {
            return Err(format!("{tool} is missing (see .ci/run for what to install)"));
        }
    }
    if !Path::new("/bin/busybox").exists() {
        return Err("/bin/busybox is missing (apt-get install busybox-static)".into());
    }
    let bin = here().join("target/x86_64-unknown-linux-gnu/release/tokend");
    let built = std::fs::metadata(&bin).and_then(|m| m.modified()).map_err(|_| {
        format!(
            "no static binary at {}; build it as packaging/container/build-image.sh says",
            bin.display()
        )
    })?;
    if let Some(newer) = sources_newer_than(built) {
        return Err(format!(
            "{} is older than {}; rebuild it and the image",
            bin.display(),
            newer.display()
        ));
    }
    for (label, file) in [
        ("tokend.binary.sha256", bin),
        (
            "tokend.containerfile.sha256",
            here().join("packaging/container/Containerfile"),
        ),
    ] {
        let format = format!("{{{{index .Labels \"{label}\"}}}}");
        let inspect = Command::new("podman")
            .env("CONTAINERS_CONF", here().join("packaging/container/containers.conf"))
            .args(["image", "inspect", &image(), "--format", &format])
            .output()
            .map_err(|e| format!("podman: {e}"))?;
        if !inspect.status.success() {
            return Err(format!(
                "no image {}; build it with packaging/container/build-image.sh",
                image()
            ));
        }
        let digest = Command::new("sha256sum")
            .arg(&file)
            .output()
            .map_err(|e| e.to_string())?;
        let (digest, labelled) = (
            String::from_utf8_lossy(&digest.stdout),
            String::from_utf8_lossy(&inspect.stdout),
        );
        if labelled.trim().len() != 64 || !digest.starts_with(labelled.trim()) {
            return Err(format!(
                "the image {} was not built from the current {}; rebuild it with packaging/container/build-image.sh",
                image(),
                file.display()
            ));
        }
    }
    Ok(())
}

#[test]
fn the_image_and_the_pods_run_under_podman() {
    let test = "the_image_and_the_pods_run_under_podman";
    if unless_skipped(test, "TOKEND_REQUIRE_PODMAN", ready()).is_none() {
        return;
    }
    let script = here().join("packaging/kubernetes/test-pods.sh");
    run_checks("image and pod test", &script, &[image().as_ref()]);
}

/// Fleet mode on Kubernetes: the refreshers hold the client secret, the follower on the node and
/// the sidecar do not, all serve the same token, and the IdP sees one request per refresh.
#[test]
fn the_fleet_pods_share_one_token_request_under_podman() {
    let test = "the_fleet_pods_share_one_token_request_under_podman";
    let ready = ready().and_then(|()| {
        ["redis-server", "redis-cli"]
            .into_iter()
            .find(|tool| !found(tool))
            .map_or(Ok(()), |tool| {
                Err(format!("{tool} is missing (apt-get install redis-server redis-tools)"))
            })
    });
    if unless_skipped(test, "TOKEND_REQUIRE_PODMAN", ready).is_none() {
        return;
    }
    let script = here().join("packaging/kubernetes/test-fleet-pods.sh");
    run_checks("fleet pod test", &script, &[image().as_ref()]);
}
