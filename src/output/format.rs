//! The file formats: `raw`, `json`, `env`, `header` and `template`.

use secrecy::ExposeSecret;
use zeroize::Zeroizing;

use crate::config::{Format, Output};
use std::time::SystemTime;

use crate::token::Token;

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("the token contains a single quote, which the env format cannot represent")]
    UnquotableForEnv,
    #[error("template ({origin}): {reason}")]
    Template { origin: String, reason: String },
}

/// The bytes of `output`'s file for `token`. They hold the token, so they are wiped when dropped.
pub fn render(output: &Output, token: &Token, now: SystemTime) -> Result<Zeroizing<Vec<u8>>, RenderError> {
    let secret = token.access_token.expose_secret();
    let mut out = Zeroizing::new(Vec::with_capacity(secret.len() + 256));
    match output.format {
        Format::Raw => {
            out.extend_from_slice(secret.as_bytes());
            if output.newline {
                out.push(b'\n');
            }
        }
        Format::Header => {
            out.extend_from_slice(format!("Authorization: {} ", token.token_type).as_bytes());
            out.extend_from_slice(secret.as_bytes());
            out.push(b'\n');
        }
        Format::Env => {
            out.extend_from_slice(output.variable.as_bytes());
            out.push(b'=');
            // Tokens are printable ASCII without spaces (checked when received). Those made only
            // of base64url/JWT characters need no quoting in sh or systemd; others are single-
            // quoted, which both read literally. (`~` is quoted: a leading one is expanded.)
            if secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._+/=".contains(&b))
            {
                out.extend_from_slice(secret.as_bytes());
            } else if secret.contains('\'') {
                return Err(RenderError::UnquotableForEnv);
            } else {
                out.push(b'\'');
                out.extend_from_slice(secret.as_bytes());
                out.push(b'\'');
            }
            out.push(b'\n');
        }
        Format::Json => {
            let value = token.document(now);
            serde_json::to_writer(&mut *out, &value).expect("writing JSON to memory cannot fail");
            out.push(b'\n');
        }
        Format::Template => {
            let Some(template) = &output.template else {
                return Err(RenderError::Template {
                    origin: "none".into(),
                    reason: "no template configured".into(),
                });
            };
            let text = template.render(token, now).map_err(|reason| RenderError::Template {
                origin: template.origin.clone(),
                reason,
            })?;
            out.extend_from_slice(text.as_bytes());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DEFAULT_ENV_VARIABLE, Mode};
    use std::time::{Duration, UNIX_EPOCH};

    /// Ten minutes after `token`'s issue.
    fn at() -> std::time::SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_600)
    }

    fn token(value: &str) -> Token {
        let issued = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        Token {
            scope: Some("read:a".into()),
            ..Token::for_test(value, issued, Duration::from_secs(3600))
        }
    }

    fn output(format: Format) -> Output {
        Output {
            path: "/x".into(),
            format,
            mode: Mode::new(0o600),
            owner: None,
            group: None,
            newline: false,
            variable: DEFAULT_ENV_VARIABLE.into(),
            template: None,
        }
    }

    fn text(format: Format, value: &str) -> String {
        String::from_utf8(render(&output(format), &token(value), at()).unwrap().to_vec()).unwrap()
    }

    #[test]
    fn every_format_renders_as_documented() {
        assert_eq!(text(Format::Raw, "eyJ.a-b_c.d"), "eyJ.a-b_c.d");
        let with_newline = Output {
            newline: true,
            ..output(Format::Raw)
        };
        assert_eq!(&render(&with_newline, &token("t"), at()).unwrap()[..], b"t\n");
        assert_eq!(text(Format::Header, "eyJ.a.b"), "Authorization: Bearer eyJ.a.b\n");
        assert_eq!(text(Format::Env, "eyJ.a.b"), "ACCESS_TOKEN=eyJ.a.b\n");
        let renamed = Output {
            variable: "BILLING_TOKEN".into(),
            ..output(Format::Env)
        };
        assert_eq!(&render(&renamed, &token("t"), at()).unwrap()[..], b"BILLING_TOKEN=t\n");
        assert_eq!(
            text(Format::Json, "eyJ.a.b"),
            "{\"access_token\":\"eyJ.a.b\",\"expires_at\":\"2023-11-14T23:13:20Z\",\"expires_at_unix\":1700003600,\
             \"expires_in\":3000,\"issued_at\":\"2023-11-14T22:13:20Z\",\"scope\":\"read:a\",\"token_type\":\"Bearer\"}\n"
        );
    }

    #[test]
    fn env_quotes_tokens_with_shell_characters() {
        assert_eq!(text(Format::Env, "a$b;c"), "ACCESS_TOKEN='a$b;c'\n");
        assert_eq!(text(Format::Env, "~root"), "ACCESS_TOKEN='~root'\n");
        assert!(render(&output(Format::Env), &token("it's"), at()).is_err());
    }
}
