//! What running in a pod asks of the daemon itself, tested on the binary without containers:
//! health and metrics over TCP (`metrics.listen`), reloading a ConfigMap that the kubelet
//! updates by swapping symlinks (`run --watch-config`), and `prepare-dirs` for the init
//! container with CAP_CHOWN alone.

use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::util::*;
use crate::{SECRET, T, config, out, running_as_root};

/// The address the TCP listener bound, from its log line.
fn tcp_addr(daemon: &Tokend, after: usize) -> String {
    let events = daemon.wait_events(after, T, "the TCP listener", |e| {
        e["message"].as_str().is_some_and(|m| m.contains("over TCP"))
    });
    events[after - 1]["listen"].as_str().unwrap().to_owned()
}

fn get(addr: &str, path: &str) -> (u16, String) {
    curl(&[&format!("http://{addr}{path}")])
}

/// Prometheus gets `/healthz`, `/readyz` and `/metrics` over TCP, a token never, by any path; a
/// reload that moves the listener closes the old address. `tokend probe` gives the same answers
/// through the socket, as exit statuses.
#[test]
fn health_and_metrics_over_tcp_never_a_token_and_the_same_answers_from_probe() {
    let dir = TestDir::new("tcp");
    let issuer = Issuer::start(&dir, &[("app", SECRET)], "1h");
    let a = format!("audience: https://a/\noutputs: [{{ path: {} }}]", out(&dir, "a.token"));
    // `b` is refused by the issuer: not every client has a token, so not ready.
    let b = "audience: https://b/\nclient_id: nobody";
    let cfg = config(&dir, &issuer, &[("a", &a), ("b", b)]);
    let with_listener = |listen: &str| {
        let yaml = std::fs::read_to_string(&cfg).unwrap();
        let yaml = yaml
            .lines()
            .filter(|l| !l.starts_with("metrics:"))
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(&cfg, format!("metrics: {{ listen: \"{listen}\" }}\n{yaml}\n")).unwrap();
    };
    with_listener("127.0.0.1:0");
    let daemon = Tokend::run(&dir, &cfg);
    let addr = tcp_addr(&daemon, 1);
    wait_for(T, "a's token", || read(&dir.join("out/a.token")));
    assert_eq!(get(&addr, "/healthz").0, 200);
    wait_for(T, "b's rejection", || {
        daemon.events().into_iter().find(|e| is(e, "outcome", "rejected"))
    });
    let (status, body) = get(&addr, "/readyz");
    assert_eq!(status, 503, "{body}");
    // The same answers as exit statuses, through the socket (for exec probes).
    let socket = dir.join("tokend.sock");
    let probe = |check: &str| tokend(&["probe", check, "--socket", socket.to_str().unwrap()]);
    assert!(probe("live").status.success());
    let not_ready = probe("ready");
    assert_eq!(not_ready.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&not_ready.stderr).contains("not ready: 1 of 2 clients have a valid token"),
        "{}",
        String::from_utf8_lossy(&not_ready.stderr)
    );
    let (status, metrics) = get(&addr, "/metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("tokend_token_expiry_timestamp_seconds{client=\"a\"}"),
        "{metrics}"
    );
    let token = read(&dir.join("out/a.token")).unwrap();
    for path in ["/v1/tokens/a", "/v1/tokens/a?format=json", "/v1/tokens", "/v1/tokens/"] {
        let (status, body) = get(&addr, path);
        assert!(matches!(status, 400 | 404), "{path}: {status} {body}");
        assert!(!body.contains(&token), "{path} served the token");
    }
    let (status, _) = curl(&["-X", "POST", &format!("http://{addr}/healthz")]);
    assert_eq!(status, 405);
    assert!(!metrics.contains(&token));

    // Fixing b makes the pod ready; moving the listener closes the old address.
    let b = "audience: https://b/";
    config(&dir, &issuer, &[("a", &a), ("b", b)]);
    with_listener("127.0.0.2:0");
    daemon.signal(Signal::SIGHUP);
    daemon.wait_event(T, "the reload", |e| is(e, "reload", "applied"));
    let moved = tcp_addr(&daemon, 2);
    assert_ne!(moved, addr);
    wait_for(T, "ready on the new address", || {
        (get(&moved, "/readyz").0 == 200).then_some(())
    });
    assert!(probe("ready").status.success());
    let old = Command::new("curl")
        .args(["-s", "--max-time", "2", &format!("http://{addr}/healthz")])
        .status()
        .unwrap();
    assert!(!old.success(), "the old address still answers");
    assert!(daemon.stop().success());
    assert_eq!(probe("live").status.code(), Some(69), "no daemon: EX_UNAVAILABLE");
}

/// The kubelet's layout for a ConfigMap volume: the files in a timestamped directory, `..data`
/// a symlink to it, each file a symlink through `..data`. An update writes a new directory and
/// renames a new `..data` over the old one: no event on `config.yaml` itself.
struct ConfigMapDir {
    dir: std::path::PathBuf,
    version: usize,
}

impl ConfigMapDir {
    fn new(dir: &Path, config: &str) -> ConfigMapDir {
        std::fs::create_dir_all(dir).unwrap();
        let mut cm = ConfigMapDir {
            dir: dir.to_owned(),
            version: 0,
        };
        cm.update(config);
        symlink("..data/config.yaml", dir.join("config.yaml")).unwrap();
        cm
    }

    fn update(&mut self, config: &str) {
        self.version += 1;
        let old = format!("..2026_12_01_00_00_0{}.000", self.version - 1);
        let new = format!("..2026_12_01_00_00_0{}.000", self.version);
        std::fs::create_dir(self.dir.join(&new)).unwrap();
        std::fs::write(self.dir.join(&new).join("config.yaml"), config).unwrap();
        symlink(&new, self.dir.join("..data_tmp")).unwrap();
        std::fs::rename(self.dir.join("..data_tmp"), self.dir.join("..data")).unwrap();
        let _ = std::fs::remove_dir_all(self.dir.join(old));
    }

    fn path(&self) -> std::path::PathBuf {
        self.dir.join("config.yaml")
    }
}

/// `run --watch-config` reloads a ConfigMap update without a signal, exactly as SIGHUP would:
/// a new client appears, a broken update is rejected with the old clients still served, and an
/// update that leaves the content as it was reloads nothing.
#[test]
fn watch_config_reloads_a_configmap_update_and_rejects_a_broken_one() {
    let dir = TestDir::new("watch");
    let issuer = Issuer::start(&dir, &[("app", SECRET)], "1h");
    let a = format!("audience: https://a/\noutputs: [{{ path: {} }}]", out(&dir, "a.token"));
    let b = format!("audience: https://b/\noutputs: [{{ path: {} }}]", out(&dir, "b.token"));
    let one = std::fs::read_to_string(config(&dir, &issuer, &[("a", &a)])).unwrap();
    let two = std::fs::read_to_string(config(&dir, &issuer, &[("a", &a), ("b", &b)])).unwrap();
    let mut cm = ConfigMapDir::new(&dir.join("configmap"), &one);
    // The environment's form of --watch-config, as a manifest may set it.
    let daemon = Tokend::spawn(
        &dir,
        &["--config", cm.path().to_str().unwrap(), "run"],
        &[("TOKEND_WATCH_CONFIG", "1")],
    );
    wait_for(T, "a's token", || read(&dir.join("out/a.token")));
    let token_a = read(&dir.join("out/a.token")).unwrap();

    cm.update(&two);
    let reload = daemon.wait_event(T, "the reload", |e| is(e, "reload", "applied"));
    assert_eq!(
        (reload["added"].as_str(), reload["unchanged"].as_str()),
        (Some("1"), Some("1"))
    );
    wait_for(T, "b's token", || read(&dir.join("out/b.token")));
    assert_eq!(read(&dir.join("out/a.token")).unwrap(), token_a, "a is untouched");

    cm.update("clients:\n  a:\n    tokne_url: nope\n");
    daemon.wait_event(T, "the rejected reload", |e| is(e, "reload", "rejected"));
    assert!(
        daemon.output().contains("unknown key `tokne_url`"),
        "{}",
        daemon.output()
    );
    let socket = dir.join("tokend.sock");
    assert_eq!(socket_status(&socket, "/v1/tokens/b"), Some(200));

    // The same content again (the fix of the broken one): applied. Then an update that changes
    // nothing: no reload at all.
    cm.update(&two);
    daemon.wait_events(2, T, "the second reload", |e| is(e, "reload", "applied"));
    cm.update(&two);
    std::thread::sleep(Duration::from_secs(2));
    let reloads = daemon.events().into_iter().filter(|e| e["reload"].is_string()).count();
    assert_eq!(reloads, 3, "{}", daemon.output());
    assert_eq!(issuer.request_count(), 2, "one request per client, no more");
    let mut daemon = daemon;
    assert!(daemon.is_running());
    assert!(daemon.stop().success());
}

/// `tokend prepare-dirs --owner 64023:64023 DIRS…` as the init container runs it: root with
/// CAP_CHOWN and no other capability.
fn prepare_with_cap_chown_alone(dirs: &[&str]) -> std::process::Output {
    Command::new("setpriv")
        .args([
            "--inh-caps=-all",
            "--bounding-set=-all,+chown",
            BIN,
            "prepare-dirs",
            "--owner",
            "64023:64023",
        ])
        .args(dirs)
        .output()
        .unwrap()
}

/// `prepare-dirs` as the init container runs it: root with CAP_CHOWN and nothing else. It
/// creates the host directories, gives them to tokend's uid, and on a later run (a pod restart)
/// puts back a mode someone changed, though root no longer owns them.
#[test]
fn prepare_dirs_works_with_cap_chown_alone_and_on_every_restart() {
    if !running_as_root("prepare_dirs_works_with_cap_chown_alone_and_on_every_restart") {
        return;
    }
    let dir = TestDir::new("prepare");
    let run = dir.join("node/run/tokend");
    let state = dir.join("node/var/lib/tokend");
    let prepare =
        || prepare_with_cap_chown_alone(&[&format!("{}:0755", run.display()), &format!("{}:0700", state.display())]);
    let owner_mode = |p: &Path| {
        let m = std::fs::metadata(p).unwrap();
        (m.uid(), m.gid(), m.mode() & 0o7777)
    };
    let first = prepare();
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    assert_eq!(owner_mode(&run), (64023, 64023, 0o755));
    assert_eq!(owner_mode(&state), (64023, 64023, 0o700));
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o777)).unwrap();
    let again = prepare();
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    assert_eq!(owner_mode(&run), (64023, 64023, 0o755));
    // Without CAP_CHOWN it says what it needs.
    let run2 = dir.join("other");
    let denied = Command::new("setpriv")
        .args([
            "--inh-caps=-all",
            "--bounding-set=-all",
            BIN,
            "prepare-dirs",
            "--owner",
            "64023:64023",
        ])
        .arg(format!("{}:0755", run2.display()))
        .output()
        .unwrap();
    assert!(!denied.status.success());
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("the container needs CAP_CHOWN"),
        "{}",
        String::from_utf8_lossy(&denied.stderr)
    );
}

/// A path another user can steer: `m` is theirs, and they made `m/sub` a symlink to a directory
/// of root's. `prepare-dirs`, as root with CAP_CHOWN alone, refuses the symlink in the middle
/// of the path and gives nothing under root's directory away.
#[test]
fn prepare_dirs_follows_no_symlink_anywhere_in_the_path() {
    if !running_as_root("prepare_dirs_follows_no_symlink_anywhere_in_the_path") {
        return;
    }
    let dir = TestDir::new("prepare-symlink");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let victim = dir.join("root-only");
    std::fs::create_dir_all(victim.join("tokend")).unwrap();
    std::fs::set_permissions(victim.join("tokend"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let theirs = dir.join("m");
    std::fs::create_dir(&theirs).unwrap();
    symlink(&victim, theirs.join("sub")).unwrap();
    let nobody = Some(nix::unistd::Uid::from_raw(65534));
    nix::unistd::chown(&theirs, nobody, None).unwrap();
    nix::unistd::fchownat(
        nix::fcntl::AT_FDCWD,
        &theirs.join("sub"),
        nobody,
        None,
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .unwrap();
    for target in ["m/sub/tokend", "m/sub/new/tokend"] {
        let out = prepare_with_cap_chown_alone(&[&format!("{}:0700", dir.join(target).display())]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{target}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "{}/sub is not a directory (a symlink is not followed",
                theirs.display()
            )),
            "{target}: {stderr}"
        );
    }
    let meta = std::fs::metadata(victim.join("tokend")).unwrap();
    assert_eq!((meta.uid(), meta.gid(), meta.mode() & 0o7777), (0, 0, 0o755));
    assert!(!victim.join("new").exists());
}
