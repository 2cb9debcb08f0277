//! The Debian package installed, configured, reloaded, restarted, upgraded, watched, broken and
//! purged on a booted systemd: `packaging/debian/test-booted.sh`, run on the package built by
//! `cargo deb --locked`. Skipped, loudly, where it cannot run (not root, no systemd-nspawn, no
//! package built yet); `TOKEND_REQUIRE_BOOTED=1` (as `.ci/run` sets after building the package)
//! makes that an error.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{run_checks, unless_skipped};

/// The package `cargo deb --locked` writes for this version, if it is there and newer than every
/// source it is built from (and the manifest that gives its metadata).
fn package() -> Result<PathBuf, String> {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let deb = std::env::var_os("TOKEND_DEB").map(PathBuf::from).unwrap_or_else(|| {
        here.join(format!(
            "target/debian/tokend_{}-1_amd64.deb",
            env!("CARGO_PKG_VERSION")
        ))
    });
    let built = std::fs::metadata(&deb)
        .and_then(|m| m.modified())
        .map_err(|_| format!("no package at {}; build it with `cargo deb --locked`", deb.display()))?;
    let mut stale = Vec::new();
    for dir in [
        "src",
        "systemd",
        "packaging/debian",
        "packaging/man",
        "packaging/completions",
        "build.rs",
        "Cargo.toml",
    ] {
        for file in walk(&here.join(dir)) {
            if std::fs::metadata(&file)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t > built)
            {
                stale.push(file);
            }
        }
    }
    if let Some(newer) = stale.first() {
        return Err(format!(
            "{} is older than {} (and {} more files); rebuild it with `cargo deb --locked`",
            deb.display(),
            newer.display(),
            stale.len() - 1
        ));
    }
    Ok(deb)
}

/// Every file under `dir`, or `dir` itself if it is a file.
fn walk(dir: &Path) -> Vec<PathBuf> {
    if dir.is_file() {
        return vec![dir.to_path_buf()];
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|e| {
            let path = e.path();
            if path.is_dir() { walk(&path) } else { vec![path] }
        })
        .collect()
}

fn ready() -> Result<PathBuf, String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Err("needs root".into());
    }
    for tool in ["systemd-nspawn", "nsenter", "debootstrap", "dpkg-deb"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Err(format!(
                "{tool} is missing (apt-get install systemd-container debootstrap)"
            ));
        }
    }
    package()
}

#[test]
fn the_debian_package_works_under_a_booted_systemd() {
    let test = "the_debian_package_works_under_a_booted_systemd";
    let Some(deb) = unless_skipped(test, "TOKEND_REQUIRE_BOOTED", ready()) else {
        return;
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/debian/test-booted.sh");
    run_checks("booted-systemd test", &script, &[deb.as_os_str()]);
}
