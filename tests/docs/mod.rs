//! The user's documentation: README.md and the manual in `docs/`. Every relative link leads
//! somewhere, and every whole configuration shown is one the real `tokend check` accepts.
//!
//! A ```` ```yaml ```` block is a whole configuration when it has a top-level `clients:` key
//! (after the fence's own indentation is taken off); it is run through `tokend check` as written.
//! An HTML comment on the last non-blank line before the fence changes that:
//! `<!-- fragment -->` skips the block (part of a file, shown for one key), and
//! `<!-- invalid … -->` marks an example of mistakes: `check` must refuse it with exit 78.
//!
//! Examples name the paths a real host has (`/etc/tokend/secrets/billing`, the group `billing`),
//! which this machine lacks, and `check` refuses a secret it cannot read with exit 78, as `run`
//! does. So exit 0 or 1 passes, and exit 78 passes only when every error line is about one of
//! those host facts — a file that does not exist, a systemd credential outside systemd, or a user
//! or group this system does not have —
//! which shows that the example itself parses and validates. Any other error line fails.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use crate::util::*;

/// Linked files that another change adds; checked like any other once they exist.
const PENDING: &[&str] = &["packaging/prometheus/README.md"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// README.md and every page under docs/.
fn pages() -> Vec<PathBuf> {
    let mut pages = vec![root().join("README.md")];
    let mut docs: Vec<PathBuf> = fs::read_dir(root().join("docs"))
        .expect("docs/")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    assert!(!docs.is_empty(), "no pages in docs/");
    pages.extend(docs);
    pages
}

/// The page's lines outside fenced code blocks.
fn prose(text: &str) -> Vec<&str> {
    let mut fenced = false;
    text.lines()
        .filter(|l| {
            if l.trim_start().starts_with("```") {
                fenced = !fenced;
                return false;
            }
            !fenced
        })
        .collect()
}

/// GitHub's anchor for a heading: lowercase; letters, digits, `-` and `_` kept; spaces to `-`;
/// everything else dropped.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// Every anchor a page has: its headings' (repeats get `-1`, `-2`, as on GitHub) and `<a id>`s.
fn anchors(text: &str) -> HashSet<String> {
    let mut found = HashSet::new();
    for line in prose(text) {
        if let Some(heading) = line.strip_prefix('#') {
            let base = slug(heading.trim_start_matches('#'));
            let mut name = base.clone();
            let mut n = 0;
            while !found.insert(name.clone()) {
                n += 1;
                name = format!("{base}-{n}");
            }
        }
        let mut rest = line;
        while let Some(at) = rest.find("<a id=\"") {
            let id = &rest[at + 7..];
            let end = id.find('"').expect("a closed id");
            found.insert(id[..end].to_owned());
            rest = &id[end..];
        }
    }
    found
}

/// The targets of the page's `[text](target)` links, outside code.
fn links(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    for line in prose(text) {
        // Code spans hold examples, not links: drop them.
        let mut plain = String::new();
        for (i, part) in line.split('`').enumerate() {
            if i % 2 == 0 {
                plain.push_str(part);
            }
        }
        let mut rest = plain.as_str();
        while let Some(at) = rest.find("](") {
            let target = &rest[at + 2..];
            let end = target.find(')').expect("a closed link");
            targets.push(target[..end].to_owned());
            rest = &target[end..];
        }
    }
    targets
}

/// Where a link leads, or why it leads nowhere.
fn broken(page: &Path, target: &str) -> Option<String> {
    if target.contains("://") || target.starts_with("mailto:") {
        return None;
    }
    let (path, anchor) = target.split_once('#').unwrap_or((target, ""));
    let file = if path.is_empty() {
        page.to_path_buf()
    } else {
        page.parent().unwrap().join(path)
    };
    if !file.exists() {
        let pending = PENDING.iter().any(|p| file.ends_with(p));
        return (!pending).then(|| format!("{} does not exist", file.display()));
    }
    if anchor.is_empty() || file.extension().is_none_or(|e| e != "md") {
        return None;
    }
    let text = fs::read_to_string(&file).unwrap();
    (!anchors(&text).contains(anchor)).then(|| format!("{} has no heading or id `#{anchor}`", file.display()))
}

/// Every relative link in README.md and docs/*.md leads to a file that exists, and every
/// `#anchor` into a markdown file to a heading or `<a id>` there.
#[test]
fn docs_links_lead_to_files_and_headings_that_exist() {
    let mut problems = Vec::new();
    let mut count = 0;
    for page in pages() {
        let text = fs::read_to_string(&page).unwrap();
        for target in links(&text) {
            count += 1;
            if let Some(why) = broken(&page, &target) {
                problems.push(format!("{}: ({target}): {why}", page.display()));
            }
        }
    }
    assert!(count > 50, "only {count} links found: is the scanner broken?");
    assert!(problems.is_empty(), "broken links:\n{}", problems.join("\n"));
}

/// What the comment before a block says it is.
#[derive(Debug, PartialEq)]
enum Mark {
    Whole,
    Fragment,
    Invalid,
}

/// The page's ```yaml blocks that are whole configurations, with their line and mark.
fn configs(text: &str) -> Vec<(usize, Mark, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let fence = lines[i];
        let indent = fence.len() - fence.trim_start().len();
        if fence.trim_start() != "```yaml" {
            i += 1;
            continue;
        }
        let before = lines[..i].iter().rev().find(|l| !l.trim().is_empty()).map(|l| l.trim());
        let mark = match before {
            Some(l) if l.starts_with("<!-- fragment") => Mark::Fragment,
            Some(l) if l.starts_with("<!-- invalid") => Mark::Invalid,
            _ => Mark::Whole,
        };
        let start = i + 1;
        i = start;
        let mut block = String::new();
        while !lines[i].trim_start().starts_with("```") {
            block.push_str(lines[i].get(indent..).unwrap_or(""));
            block.push('\n');
            i += 1;
        }
        i += 1;
        if block.lines().any(|l| l.starts_with("clients:")) {
            found.push((start, mark, block));
        }
    }
    found
}

/// Why an exit 78 is only this host's: a named file or user or group this machine lacks.
fn only_host_facts(config: &Path, stderr: &str) -> bool {
    let prefix = format!("{}:", config.display());
    stderr.lines().filter(|l| l.starts_with(&prefix)).all(|l| {
        l.contains("No such file or directory (os error 2)")
            || l.contains("$CREDENTIALS_DIRECTORY is not set")
            || (l.contains("there is no user `") || l.contains("there is no group `"))
                && l.ends_with("` on this system")
    })
}

/// Every whole configuration in README.md and docs/*.md is accepted by the real `tokend check`
/// as written (see the module's comment for what passes), and every one marked invalid is
/// refused with exit 78.
#[test]
fn docs_configurations_pass_tokend_check() {
    let dir = TestDir::new("docs-configs");
    let mut problems = Vec::new();
    let mut checked = 0;
    for page in pages() {
        let text = fs::read_to_string(&page).unwrap();
        for (line, mark, block) in configs(&text) {
            if mark == Mark::Fragment {
                continue;
            }
            let config = dir.write(&format!("{checked}.yaml"), &block);
            checked += 1;
            let out = tokend(&["--config", config.to_str().unwrap(), "check"]);
            let stderr = String::from_utf8_lossy(&out.stderr);
            let code = out.status.code();
            let fine = match mark {
                Mark::Invalid => code == Some(78),
                _ => code != Some(78) || only_host_facts(&config, &stderr),
            };
            if !fine {
                problems.push(format!(
                    "{}:{line}: `tokend check` exited {code:?} ({mark:?} example):\n{stderr}",
                    page.display()
                ));
            }
        }
    }
    assert!(
        checked >= 8,
        "only {checked} configurations found: is the scanner broken?"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The scanners themselves, on a page made for them.
#[test]
fn docs_scanners_find_links_anchors_and_marked_blocks() {
    assert_eq!(
        slug(" Client keys (all but `outputs` may also go under `defaults`)"),
        "client-keys-all-but-outputs-may-also-go-under-defaults"
    );
    let page = "# A b\n## A b\n<a id=\"x\"></a>see [c](c.md#d) and `[e](f)`\n```sh\n[g](h)\n```\n<!-- fragment -->\n\n```yaml\nclients:\n```\n  ```yaml\n  clients: {}\n  ```\n";
    assert_eq!(anchors(page), HashSet::from(["a-b".into(), "a-b-1".into(), "x".into()]));
    assert_eq!(links(page), vec!["c.md#d"]);
    let marks: Vec<Mark> = configs(page).into_iter().map(|(_, m, _)| m).collect();
    assert_eq!(marks, vec![Mark::Fragment, Mark::Whole]);
}
