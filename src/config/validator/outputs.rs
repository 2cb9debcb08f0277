//! The files a client's token is written to.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use super::{Kind, Validator};
use crate::config::model::{DEFAULT_ENV_VARIABLE, DEFAULT_MODE, Output};
use crate::config::raw::{Format, RawOutput};
use crate::config::template::{MAX_TEMPLATE_BYTES, OutputTemplate};

impl Validator<'_> {
    pub(super) fn outputs(&mut self, n: &str, raw: Vec<RawOutput>) -> Option<Vec<Output>> {
        let mut outputs = Vec::new();
        let mut ok = true;
        for (i, o) in raw.into_iter().enumerate() {
            let index = i.to_string();
            let key = |k: &'static str| -> Vec<&str> {
                let mut v = vec!["clients", n, "outputs", index.as_str()];
                if !k.is_empty() {
                    v.push(k);
                }
                v
            };
            let Some(path_text) = o.path else {
                self.problem(
                    &key(""),
                    "an output needs a `path` (the absolute path of the file to write, such as `/run/tokend/billing.token`)",
                );
                ok = false;
                continue;
            };
            let path = PathBuf::from(&path_text);
            if !path.is_absolute() {
                self.problem(&key("path"), format!("output path `{}` must be absolute", path_text));
                ok = false;
            } else if path.file_name().is_none()
                || path_text.ends_with('/')
                || path.components().any(|c| c == Component::ParentDir)
            {
                self.problem(
                    &key("path"),
                    format!("output path `{}` must name a file, without `..`", path_text),
                );
                ok = false;
            }
            let format = o.format.unwrap_or_default();
            if o.newline.is_some() && format != Format::Raw {
                self.problem(&key("newline"), "`newline` applies only to `format: raw`");
                ok = false;
            }
            let variable = match o.variable {
                Some(_) if format != Format::Env => {
                    self.problem(&key("variable"), "`variable` applies only to `format: env`");
                    ok = false;
                    String::new()
                }
                Some(v) if !is_env_name(&v) => {
                    self.problem(
                        &key("variable"),
                        format!("`{v}` is not a valid environment variable name ([A-Za-z_][A-Za-z0-9_]*)"),
                    );
                    ok = false;
                    String::new()
                }
                Some(v) => v,
                None => DEFAULT_ENV_VARIABLE.to_owned(),
            };
            let owner = o.owner.map(|spec| self.owner(&key("owner"), spec, Kind::User));
            let group = o.group.map(|spec| self.owner(&key("group"), spec, Kind::Group));
            if owner.as_ref().is_some_and(Option::is_none) || group.as_ref().is_some_and(Option::is_none) {
                ok = false;
            }
            let (owner, group) = (owner.flatten(), group.flatten());
            let mode = o.mode.unwrap_or(DEFAULT_MODE);
            if mode.bits() & 0o022 != 0 {
                self.problem(
                    &key("mode"),
                    format!(
                        "mode \"{mode}\" lets other users write the token file, and so replace the token between refreshes; group and others may read (such as \"0640\"), never write"
                    ),
                );
                ok = false;
            }
            let template = self.template(n, &key, format, o.template, o.template_file);
            if format == Format::Template && template.is_none() {
                ok = false;
            }
            outputs.push(Output {
                path,
                format,
                mode,
                owner,
                group,
                newline: o.newline.unwrap_or(false),
                variable,
                template,
            });
        }
        // Kept for the daemon's lifetime, once per client: no spare capacity (a push leaves
        // room for four outputs, 512 bytes for a client that has one).
        outputs.shrink_to_fit();
        ok.then_some(outputs)
    }

    /// A `template` output's template: exactly one of `template` and `template_file`, which
    /// compiles and renders; neither on another format.
    fn template<'k>(
        &mut self,
        client: &str,
        key: &impl Fn(&'static str) -> Vec<&'k str>,
        format: Format,
        inline: Option<String>,
        file: Option<String>,
    ) -> Option<Arc<OutputTemplate>> {
        if format != Format::Template {
            for (given, k) in [(inline.is_some(), "template"), (file.is_some(), "template_file")] {
                if given {
                    self.problem(&key(k), format!("`{k}` applies only to `format: template`"));
                }
            }
            return None;
        }
        let (source, file, at) = match (inline, file) {
            (Some(_), Some(_)) => {
                self.problem(&key("template_file"), "give `template` or `template_file`, not both");
                return None;
            }
            (None, None) => {
                self.problem(
                    &key(""),
                    "`format: template` needs `template: |` (the template itself) or `template_file: /abs/path`",
                );
                return None;
            }
            (Some(source), None) => (source, None, "template"),
            (None, Some(path)) if !Path::new(&path).is_absolute() => {
                self.problem(&key("template_file"), format!("`{path}` must be an absolute path"));
                return None;
            }
            (None, Some(path)) => match read_template(Path::new(&path)) {
                Ok(source) => (source, Some(PathBuf::from(path)), "template_file"),
                Err(e) => {
                    self.problem(&key("template_file"), format!("cannot read template file {path}: {e}"));
                    return None;
                }
            },
        };
        match OutputTemplate::new(source, file, client) {
            Ok(t) => Some(Arc::new(t)),
            Err(e) => {
                let line = e
                    .strip_prefix("line ")
                    .and_then(|rest| rest.split_once(' '))
                    .and_then(|(n, _)| n.parse::<usize>().ok());
                self.problem(&key(at), e);
                // A `template: |` block: point at the template's line in the file itself.
                if at == "template"
                    && let (Some(line), Some(problem)) = (line, self.problems.last_mut())
                    && let Some((key_line, _)) = problem.position
                    && let Some(text) = self.source.lines().nth(key_line - 1)
                    && text.trim_end().ends_with(['|', '-', '+'])
                    && text.trim_end().trim_end_matches(['-', '+']).ends_with('|')
                    && let Some(target) = self.source.lines().nth(key_line - 1 + line)
                {
                    let column = target.len() - target.trim_start().len() + 1;
                    problem.position = Some((key_line + line, column));
                }
                None
            }
        }
    }
}

/// Reads a template file, refusing one too large to be a template.
fn read_template(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut text = String::new();
    file.take(MAX_TEMPLATE_BYTES as u64 + 1)
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    if text.len() > MAX_TEMPLATE_BYTES {
        return Err(format!("it is larger than {MAX_TEMPLATE_BYTES} bytes"));
    }
    Ok(text)
}

pub(super) fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
