//! The files a client's token is written to.

use std::path::{Component, PathBuf};

use super::{Kind, Validator};
use crate::config::model::{DEFAULT_ENV_VARIABLE, DEFAULT_MODE, Output};
use crate::config::raw::{Format, RawOutput};

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
            outputs.push(Output {
                path,
                format,
                mode: o.mode.unwrap_or(DEFAULT_MODE),
                owner,
                group,
                newline: o.newline.unwrap_or(false),
                variable,
            });
        }
        ok.then_some(outputs)
    }
}

fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
