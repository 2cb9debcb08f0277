//! The man pages and shell completions under `packaging/` are generated from the command-line
//! definitions (`src/cli/args.rs`). This test generates them again and fails if a committed file
//! differs, so `--help`, the man pages and the completions never disagree. After changing a
//! command or flag: `TOKEND_BLESS=1 cargo test --test tests generated` rewrites them.

use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging")
}

/// Every generated file: its path under `packaging/` and its contents.
fn generated() -> Vec<(PathBuf, Vec<u8>)> {
    let mut cmd = tokend::cli::Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut files = Vec::new();
    let mut page = |cmd: clap::Command| {
        let man = clap_mangen::Man::new(cmd).manual("tokend manual");
        let mut text = Vec::new();
        man.render(&mut text).unwrap();
        files.push((Path::new("man").join(man.get_filename()), text));
    };
    page(cmd.clone());
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        page(sub.clone());
    }
    for (shell, name) in [
        (Shell::Bash, "tokend.bash"),
        (Shell::Zsh, "_tokend"),
        (Shell::Fish, "tokend.fish"),
    ] {
        let mut text = Vec::new();
        clap_complete::generate(shell, &mut cmd.clone(), "tokend", &mut text);
        files.push((Path::new("completions").join(name), text));
    }
    files
}

#[test]
fn man_pages_and_completions_match_the_command_line() {
    let bless = std::env::var_os("TOKEND_BLESS").is_some();
    let files = generated();
    let mut stale = Vec::new();
    for (path, contents) in &files {
        let full = root().join(path);
        if bless {
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(&full, contents).unwrap();
        } else if std::fs::read(&full).ok().as_ref() != Some(contents) {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "out of date with src/cli/args.rs: {stale:?}; run `TOKEND_BLESS=1 cargo test --test tests generated`"
    );
    // One page for tokend and one for each command, and nothing left over from a removed one.
    let pages: Vec<&Path> = files
        .iter()
        .map(|(p, _)| p.as_path())
        .filter(|p| p.starts_with("man"))
        .collect();
    let on_disk: Vec<PathBuf> = std::fs::read_dir(root().join("man"))
        .unwrap()
        .map(|e| Path::new("man").join(e.unwrap().file_name()))
        .collect();
    assert_eq!(on_disk.len(), pages.len(), "stray pages in packaging/man: {on_disk:?}");
    for command in [
        "tokend.1",
        "tokend-run.1",
        "tokend-check.1",
        "tokend-once.1",
        "tokend-get.1",
        "tokend-status.1",
        "tokend-probe.1",
        "tokend-dev.1",
        "tokend-configured.1",
    ] {
        assert!(
            pages.contains(&Path::new("man").join(command).as_path()),
            "no page {command}"
        );
    }
}
