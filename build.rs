//! Link-time only: the daemon's relative relocations packed as DT_RELR where the C library
//! supports them (glibc 2.36 and later, whose toolchains ship binutils 2.38 or later).
//!
//! The dynamic loader reads every relocation at each start, so the binary's 300 KB RELA table
//! stayed resident for the daemon's whole life; packed it is 3.4 KB, about 0.3 MiB less RSS
//! (BENCHMARKS.md, "The last MiB at 100 clients"). A binary with DT_RELR needs glibc 2.36 to
//! run, which dpkg-shlibdeps cannot see (the GLIBC_ABI_DT_RELR version has no symbol), so the
//! Debian package asks for it in Cargo.toml's `depends`. Left out for static builds (the
//! container image's) and with `TOKEND_NO_RELR=1`.

use std::process::Command;

fn main() {
    println!("cargo::rerun-if-env-changed=TOKEND_NO_RELR");
    let target_env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    let features = std::env::var("CARGO_CFG_TARGET_FEATURE").unwrap_or_default();
    let opted_out = std::env::var_os("TOKEND_NO_RELR").is_some_and(|v| v != "0");
    if target_env != "gnu" || features.split(',').any(|f| f == "crt-static") || opted_out {
        return;
    }
    if glibc_version().is_some_and(|v| v >= (2, 36)) {
        println!("cargo::rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// The build host's glibc, from `getconf GNU_LIBC_VERSION` ("glibc 2.36").
fn glibc_version() -> Option<(u32, u32)> {
    let out = Command::new("getconf").arg("GNU_LIBC_VERSION").output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let (major, minor) = text.trim().strip_prefix("glibc ")?.split_once('.')?;
    let minor = minor.split('.').next()?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}
