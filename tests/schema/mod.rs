//! The configuration's JSON Schema (`tokend schema`, packaged as
//! `packaging/tokend-config.schema.json`) against `tokend check`: the committed file is what the
//! binary prints, and a real validator (Python's `jsonschema`, driven by `validate.py`) and
//! `tokend check` agree on which configurations are valid: the shipped examples and every case of
//! the bad-config catalogue, except those the schema cannot express (`BEYOND_THE_SCHEMA`).
//! After changing the raw config types: `TOKEND_BLESS=1 cargo test --test tests schema`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

use crate::config_catalogue::{self, CASES};
use crate::util::*;

const SCHEMA: &str = "packaging/tokend-config.schema.json";

fn here() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Catalogue classes that `tokend check` refuses and the schema accepts, each with why: a JSON
/// Schema judges each value alone, without the host, the file system or the other keys.
const BEYOND_THE_SCHEMA: &[(&str, &str)] = &[
    // Judged by the validator for output files only (the socket's mode is another rule).
    (
        "bad mode: others may write",
        "a rule for output modes, not for every mode",
    ),
    ("duplicate output path", "compares two outputs"),
    ("output inside the state directory", "compares an output with state_dir"),
    (
        "output in the directory of a secret file",
        "compares an output with a secret's path",
    ),
    (
        "output inside $CREDENTIALS_DIRECTORY",
        "depends on tokend's environment",
    ),
    ("unreadable secret: no such file", "the file system"),
    ("unreadable secret: the variable is not set", "tokend's environment"),
    ("unreadable secret: no $CREDENTIALS_DIRECTORY", "tokend's environment"),
    ("loose secret permissions: readable by every user", "the file system"),
    ("loose secret permissions: readable by its group", "the file system"),
    ("unusable CA file: no such file", "the file system"),
    ("unusable CA file: not PEM", "a file's contents"),
];

/// Shipped configurations that `tokend check` refuses and the schema accepts, each with why.
const SHIPPED_BEYOND_THE_SCHEMA: &[(&str, &str)] = &[(
    "packaging/debian/config.yaml",
    "lists no client yet, on purpose (the unit waits for one), and names the group \
     tokend-readers, which the package creates",
)];

/// `tokend check`'s verdict: valid unless it exits 78, as `run` refuses to start (exit 1 is a
/// problem for the host, such as an example's placeholder IdP, which the file may still have).
fn check_accepts(config: &Path, env: &[(String, String)]) -> bool {
    let out = Command::new(BIN)
        .args(["--config".as_ref(), config.as_os_str(), "check".as_ref()])
        .env_remove("CREDENTIALS_DIRECTORY")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run tokend check");
    match out.status.code() {
        Some(0 | 1) => true,
        Some(78) => false,
        other => panic!(
            "tokend check {}: exit {other:?}: {}",
            config.display(),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// A python3 with `jsonschema` and `yaml`: the PATH's, else Debian's (where `apt-get install
/// python3-jsonschema python3-yaml` puts them), or why there is none.
fn validator() -> Result<&'static str, String> {
    for python in ["python3", "/usr/bin/python3"] {
        if let Ok(o) = Command::new(python).args(["-c", "import jsonschema, yaml"]).output()
            && o.status.success()
        {
            return Ok(python);
        }
    }
    Err("no python3 with jsonschema and yaml (apt-get install python3-jsonschema python3-yaml)".into())
}

/// The schema's verdict on each file: `Ok(())` or `Err(why)`.
fn schema_verdicts(python: &str, files: &[PathBuf]) -> Vec<Result<(), String>> {
    let out = Command::new(python)
        .arg(here().join("tests/schema/validate.py"))
        .arg(here().join(SCHEMA))
        .args(files)
        .output()
        .expect("run validate.py");
    assert!(
        out.status.success(),
        "validate.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), files.len(), "validate.py printed:\n{text}");
    files
        .iter()
        .zip(lines)
        .map(|(file, line)| {
            let file = file.display().to_string();
            if line == format!("valid {file}") {
                Ok(())
            } else {
                let why = line.strip_prefix(&format!("invalid {file}: "));
                Err(why.unwrap_or_else(|| panic!("validate.py: {line}")).to_owned())
            }
        })
        .collect()
}

/// A shipped configuration moved into `dir`: its absolute paths under `dir`, each secret file it
/// names created (0600, a valid fleet key, which is a valid secret too), so that what `check`
/// judges is the file, not this machine.
fn localised(dir: &TestDir, name: &str, text: &str) -> PathBuf {
    let d = dir.path().display().to_string();
    let mut text = text.to_owned();
    for root in ["/etc/tokend", "/run/tokend", "/var/lib/tokend"] {
        text = text.replace(&format!(" {root}"), &format!(" {d}{root}"));
    }
    let key = format!("{}=", "A".repeat(43));
    for source in text.split("{ file: ").skip(1) {
        let path = source.split([',', ' ', '}', '\n']).next().unwrap();
        if let Some(inside) = path.strip_prefix(&format!("{d}/")) {
            dir.secret(inside, &key);
        }
    }
    dir.write(name, &text)
}

/// The sidecar example's configuration: the ConfigMap's `config.yaml`.
fn sidecar_config() -> String {
    let text = fs::read_to_string(here().join("packaging/kubernetes/examples/sidecar.yaml")).unwrap();
    let map = serde_yaml::Deserializer::from_str(&text)
        .map(|doc| serde_yaml::Value::deserialize(doc).unwrap())
        .find(|doc| doc["kind"] == "ConfigMap")
        .expect("a ConfigMap in the sidecar example");
    map["data"]["config.yaml"].as_str().unwrap().to_owned()
}

#[test]
fn schema_file_is_what_tokend_schema_prints() {
    let out = Command::new(BIN).arg("schema").output().unwrap();
    assert!(out.status.success());
    let path = here().join(SCHEMA);
    if std::env::var_os("TOKEND_BLESS").is_some() {
        fs::write(&path, &out.stdout).unwrap();
    }
    assert!(
        fs::read(&path).unwrap() == out.stdout,
        "{SCHEMA} is out of date with src/config/raw.rs; run `TOKEND_BLESS=1 cargo test --test tests schema`"
    );
}

#[test]
fn schema_names_itself_on_the_first_line_of_every_shipped_config() {
    for (file, schema) in [
        (
            "packaging/config.example.yaml",
            "/usr/share/tokend/tokend-config.schema.json",
        ),
        (
            "packaging/debian/config.yaml",
            "/usr/share/tokend/tokend-config.schema.json",
        ),
        ("packaging/kubernetes/config.yaml", "../tokend-config.schema.json"),
        (
            "packaging/kubernetes/fleet/refresher.yaml",
            "../../tokend-config.schema.json",
        ),
        (
            "packaging/kubernetes/fleet/follower.yaml",
            "../../tokend-config.schema.json",
        ),
    ] {
        let text = fs::read_to_string(here().join(file)).unwrap();
        assert_eq!(
            text.lines().next(),
            Some(format!("# yaml-language-server: $schema={schema}").as_str()),
            "{file}"
        );
        // A relative path is relative to the file, and must lead to the committed schema.
        if !schema.starts_with('/') {
            let target = here().join(file).parent().unwrap().join(schema);
            assert_eq!(target.canonicalize().unwrap(), here().join(SCHEMA), "{file}");
        }
    }
    assert!(
        sidecar_config().starts_with("# yaml-language-server: $schema=/usr/share/tokend/tokend-config.schema.json\n")
    );
}

#[test]
fn schema_and_check_agree_on_the_shipped_configs_and_the_bad_config_catalogue() {
    let test = "schema_and_check_agree_on_the_shipped_configs_and_the_bad_config_catalogue";
    let Some(python) = unless_skipped(test, "TOKEND_REQUIRE_SCHEMA", validator()) else {
        return;
    };
    // (what, file, tokend check accepts it, the schema's verdict may differ because)
    let mut cases: Vec<(String, PathBuf, bool, Option<&str>)> = Vec::new();
    let mut dirs = Vec::new();

    let shipped = TestDir::new("schema-shipped");
    let mut texts: Vec<(String, String)> = [
        "packaging/config.example.yaml",
        "packaging/debian/config.yaml",
        "packaging/kubernetes/config.yaml",
        "packaging/kubernetes/fleet/refresher.yaml",
        "packaging/kubernetes/fleet/follower.yaml",
    ]
    .iter()
    .map(|f| (f.to_string(), fs::read_to_string(here().join(f)).unwrap()))
    .collect();
    texts.push(("the sidecar example's ConfigMap".into(), sidecar_config()));
    for (i, (what, text)) in texts.into_iter().enumerate() {
        let file = localised(&shipped, &format!("shipped-{i}.yaml"), &text);
        let exception = SHIPPED_BEYOND_THE_SCHEMA
            .iter()
            .find(|(f, _)| *f == what)
            .map(|(_, why)| *why);
        cases.push((what, file.clone(), check_accepts(&file, &[]), exception));
    }

    // The catalogue's valid base, then each bad case.
    let base = config_catalogue::Case {
        class: "the catalogue's valid base",
        edit: &[],
        secret_mode: None,
        env: &[],
        stderr: "",
    };
    for case in std::iter::once(&base).chain(CASES) {
        let (dir, cfg, env) = config_catalogue::lay_out(case, "schema-catalogue");
        let exception = BEYOND_THE_SCHEMA
            .iter()
            .find(|(class, _)| *class == case.class)
            .map(|(_, why)| *why);
        cases.push((case.class.to_owned(), cfg.clone(), check_accepts(&cfg, &env), exception));
        dirs.push(dir);
    }
    assert!(
        cases[..6].iter().all(|c| c.3.is_some() || c.2),
        "a shipped config is refused"
    );

    let files: Vec<PathBuf> = cases.iter().map(|c| c.1.clone()).collect();
    let mut disagreements = Vec::new();
    for ((what, _, check_ok, exception), schema) in cases.iter().zip(schema_verdicts(python, &files)) {
        let agree = *check_ok == schema.is_ok();
        match (agree, exception) {
            (true, None) => {}
            (false, Some(why)) if !*check_ok && schema.is_ok() => {
                eprintln!("{what}: beyond the schema ({why})")
            }
            (true, Some(why)) => disagreements.push(format!(
                "{what}: listed as beyond the schema ({why}), but the schema and check agree; take it off the list"
            )),
            (false, _) => disagreements.push(format!(
                "{what}: tokend check {}, the schema {}",
                if *check_ok { "accepts it" } else { "refuses it" },
                match &schema {
                    Ok(()) => "accepts it".to_owned(),
                    Err(why) => format!("refuses it: {why}"),
                }
            )),
        }
    }
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
    // Every listed exception is a case that exists.
    for (class, _) in BEYOND_THE_SCHEMA {
        assert!(CASES.iter().any(|c| c.class == *class), "no catalogue case {class}");
    }
}
