//! `format: template`: a file rendered from a MiniJinja template, for consumers that want their
//! own shape (`.netrc`, a `.properties` file, a `credentials.json`, a Docker `config.json`).
//!
//! The variables are the token's JSON document (`Token::document`: `access_token`, `token_type`,
//! `expires_in`, `scope`, `expires_at`, `expires_at_unix`, `issued_at`) and `client`. `scope` is
//! an empty string when the IdP named none. Nothing is escaped unless the template says so
//! (`| tojson`); `| base64` encodes (standard alphabet, padded), as Docker's `auth` needs. There
//! is no loader: a template cannot read other files. Undefined variables are errors, found by
//! `check` (the template is compiled and rendered with a sample token when the config loads).

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use minijinja::{Environment, UndefinedBehavior};
use zeroize::Zeroizing;

use crate::token::{LifetimeSource, Token};

/// Templates (and the files they make) larger than this are refused.
pub const MAX_TEMPLATE_BYTES: usize = 64 * 1024;

/// The work one rendering may do, in MiniJinja's fuel: an instruction costs 1, every 64 bytes
/// of text it builds 1. An output file needs a few hundred; this allows 50,000 steps or about
/// 3 MiB of text in all, and refuses `{{ "x" * 100000000 }}` before it is allocated.
const MAX_FUEL: u64 = 50_000;

/// The variables a template may use.
pub const VARIABLES: &[&str] = &[
    "access_token",
    "token_type",
    "expires_in",
    "scope",
    "expires_at",
    "expires_at_unix",
    "issued_at",
    "client",
];

/// A template output's source, checked when the configuration was loaded.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct OutputTemplate {
    source: String,
    /// Where it came from, for messages: `inline` or `file /etc/tokend/netrc.j2`.
    pub origin: String,
    /// The `template_file` it was read from, if any.
    pub file: Option<PathBuf>,
    /// The client whose token it renders (the `client` variable).
    client: String,
}

/// Not the source: it may hold a static password next to the token's place.
impl fmt::Debug for OutputTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OutputTemplate({}, {} bytes)", self.origin, self.source.len())
    }
}

impl OutputTemplate {
    /// Compiles `source` and renders it once with a sample token: a syntax error, an unknown
    /// variable or filter is reported now, with its line in the template.
    pub fn new(source: String, file: Option<PathBuf>, client: &str) -> Result<OutputTemplate, String> {
        if source.len() > MAX_TEMPLATE_BYTES {
            return Err(format!("the template is larger than {MAX_TEMPLATE_BYTES} bytes"));
        }
        let template = OutputTemplate {
            source,
            origin: file
                .as_ref()
                .map_or_else(|| "inline".to_owned(), |f| format!("file {}", f.display())),
            file,
            client: client.to_owned(),
        };
        let env = environment();
        let compiled = env.template_from_str(&template.source).map_err(describe)?;
        let mut unknown: Vec<String> = compiled
            .undeclared_variables(false)
            .into_iter()
            .filter(|v| !VARIABLES.contains(&v.as_str()))
            .collect();
        unknown.sort();
        if let Some(name) = unknown.first() {
            let line = line_of(&template.source, name).map_or(String::new(), |l| format!("line {l} of the template: "));
            let hint = crate::config::suggest::closest(name, VARIABLES)
                .map_or(String::new(), |c| format!("; did you mean `{c}`?"));
            return Err(format!(
                "{line}unknown variable `{name}`{hint} (the variables are {})",
                VARIABLES.join(", ")
            ));
        }
        let sample = Token {
            access_token: "eyJhbGciOiJSUzI1NiJ9.sample.signature".into(),
            token_type: "Bearer".into(),
            scope: Some("read".into()),
            issued_at: UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            expires_at: UNIX_EPOCH + Duration::from_secs(1_800_003_600),
            lifetime_source: LifetimeSource::ExpiresIn,
            origin: crate::token::Origin::Here,
        };
        template.render(&sample, sample.issued_at)?;
        Ok(template)
    }

    /// The file's content for `token`, at `now` (for `expires_in`).
    pub fn render(&self, token: &Token, now: SystemTime) -> Result<Zeroizing<String>, String> {
        let mut vars = token.document(now);
        vars["client"] = self.client.clone().into();
        if vars["scope"].is_null() {
            vars["scope"] = "".into();
        }
        let env = environment();
        let compiled = env.template_from_str(&self.source).map_err(describe)?;
        let text = Zeroizing::new(
            compiled
                .render(minijinja::Value::from(minijinja::value::Serde(&vars)))
                .map_err(describe)?,
        );
        if text.len() > MAX_TEMPLATE_BYTES {
            return Err(format!("the rendered file is larger than {MAX_TEMPLATE_BYTES} bytes"));
        }
        Ok(text)
    }
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(MAX_FUEL));
    // A file's last newline is the template author's to keep.
    let syntax = minijinja::syntax::SyntaxConfig::builder()
        .keep_trailing_newline(true)
        .build()
        .expect("the default delimiters are valid");
    env.set_syntax(syntax);
    env.add_filter("base64", |text: String| {
        base64::engine::general_purpose::STANDARD.encode(text)
    });
    env
}

/// `line 3 of the template: syntax error: unexpected end of input`, without MiniJinja's own
/// `(in <string>:3)` suffix.
fn describe(e: minijinja::Error) -> String {
    let what = match e.detail() {
        _ if e.kind() == minijinja::ErrorKind::OutOfFuel => format!(
            "the template does more work than a file of at most {} KiB needs (it would take over {MAX_FUEL} steps or build megabytes of text)",
            MAX_TEMPLATE_BYTES / 1024
        ),
        Some(detail) => format!("{}: {detail}", e.kind()),
        None => e.kind().to_string(),
    };
    match e.line() {
        Some(line) => format!("line {line} of the template: {what}"),
        None => what,
    }
}

/// The first line on which `name` appears as a whole word.
fn line_of(source: &str, name: &str) -> Option<usize> {
    source
        .lines()
        .position(|line| {
            line.match_indices(name).any(|(i, _)| {
                let before = line[..i].chars().next_back();
                let after = line[i + name.len()..].chars().next();
                let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
                !word(before) && !word(after)
            })
        })
        .map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(source: &str) -> Result<OutputTemplate, String> {
        OutputTemplate::new(source.into(), None, "billing")
    }

    fn token() -> Token {
        let issued = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        Token {
            scope: None,
            ..Token::for_test("eyJ.a.b", issued, Duration::from_secs(3600))
        }
    }

    #[test]
    fn every_variable_and_the_base64_filter_render() {
        let t = template(
            "{{ client }} {{ token_type }} {{ access_token }} {{ expires_in }} {{ expires_at }} \
             {{ expires_at_unix }} {{ issued_at }} [{{ scope }}] {{ ('x:' ~ access_token) | base64 }} \
             {{ access_token | tojson }}\n",
        )
        .unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_600);
        assert_eq!(
            *t.render(&token(), now).unwrap(),
            "billing Bearer eyJ.a.b 3000 2023-11-14T23:13:20Z 1700003600 2023-11-14T22:13:20Z [] \
             eDpleUouYS5i \"eyJ.a.b\"\n"
        );
    }

    #[test]
    fn mistakes_are_found_when_the_config_loads_with_their_line() {
        let err = |s: &str| template(s).unwrap_err();
        assert_eq!(
            err("machine x\n  password {{ acess_token }}\n"),
            "line 2 of the template: unknown variable `acess_token`; did you mean `access_token`? (the variables are \
             access_token, token_type, expires_in, scope, expires_at, expires_at_unix, issued_at, client)"
        );
        let syntax = err("a\nb {{ access_token \n");
        assert!(syntax.starts_with("line 2 of the template: syntax error"), "{syntax}");
        let filter = err("{{ access_token | base46 }}");
        assert!(
            filter.contains("line 1 of the template") && filter.contains("base46"),
            "{filter}"
        );
        let attribute = err("{{ access_token.secret }}");
        assert!(
            attribute.contains("line 1 of the template: undefined value"),
            "{attribute}"
        );
        assert!(err(&"x".repeat(MAX_TEMPLATE_BYTES + 1)).contains("larger than"));
    }

    /// Only the config's author writes a template, but a slip must not take a check's memory.
    #[test]
    fn a_template_that_would_build_megabytes_is_refused_before_it_does() {
        for source in [
            "{{ \"x\" * 100000000 }}",
            "{{ access_token * 1000000 }}",
            "{% for c in \"x\" * 60000 %}{% endfor %}",
        ] {
            let e = template(source).unwrap_err();
            assert!(e.contains("does more work than a file"), "{source}: {e}");
        }
        // A template as large as a file may be still renders.
        let big = format!("{{{{ \"x\" * {} }}}}", MAX_TEMPLATE_BYTES - 8);
        assert!(template(&big).is_ok());
    }

    #[test]
    fn debug_shows_where_not_what() {
        let t = template("login me password hunter2 token {{ access_token }}").unwrap();
        let shown = format!("{t:?}");
        assert!(!shown.contains("hunter2") && shown.contains("inline"), "{shown}");
    }
}
