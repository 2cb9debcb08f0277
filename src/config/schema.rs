//! The JSON Schema of the configuration file (`tokend schema`), for editors: derived from the
//! serde types the parser reads (`raw`, `values`), so a key added there is in the schema too.
//! The types whose `Deserialize` is written by hand get their `JsonSchema` here, saying in
//! JSON Schema what their visitors accept. What needs more than one value, the file system or
//! the host to judge (the `Validator`'s work) is not in it: `tokend check` stays the authority.

use std::borrow::Cow;

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};

use super::raw::{
    ClientMap, RawAssertionAudience, RawConfig, RawPem, RawProxy, RawRequireScope, RawSecret, RawValidate,
};
use super::values::{JwsAlg, Mode, OneOrMany, Percent, Principal, Span};

/// A client's name (`ClientName::new`): letters, digits, `.`, `_`, `-`; not `.` or `..`.
const CLIENT_NAME: &str = r"^(?!\.\.?$)[A-Za-z0-9._-]+$";

/// What `humantime::parse_duration` reads: numbers, each with a unit, optionally spaced. (It
/// reads a few odder spellings too, such as digits split by spaces; the schema does not.)
const DURATION: &str = r"^\s*([0-9]+(\.[0-9]+)?\s*(nanos|nsec|ns|usec|us|µs|millis|msec|ms|seconds|second|secs|sec|s|minutes|minute|mins|min|m|hours|hour|hrs|hr|h|days|day|d|weeks|week|wks|wk|w|months|month|M|years|year|yrs|yr|y)\s*)+$";

/// `Percent::parse`: a number from 0 to 100 and a `%` sign.
const PERCENT: &str = r"^\s*\+?0*(100(\.0*)?|[0-9]{1,2}(\.[0-9]*)?|\.[0-9]+)\s*%\s*$";

/// `Mode::parse`: up to four octal digits, at most `0777`, optionally after `0o`.
const MODE: &str = r"^(0o)?0?[0-7]{1,3}$";

/// The schema of the configuration file, as pretty-printed JSON with a final newline.
pub fn to_json() -> String {
    let mut schema = SchemaSettings::draft07()
        .into_generator()
        .into_root_schema_for::<RawConfig>();
    schema.insert("title".into(), "tokend configuration".into());
    let mut text = serde_json::to_string_pretty(&schema).expect("a schema is plain JSON");
    text.push('\n');
    text
}

/// `{ file: PATH }`, with `group_readable` (`raw::source_map`).
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code, reason = "only its schema is used")]
struct FileSource {
    /// The absolute path of a file holding it (one trailing newline is ignored). Refused if
    /// others may read it, or its group unless `group_readable: true`.
    file: String,
    /// Let the file's group read it too.
    group_readable: Option<bool>,
}

/// `{ env: VAR }`.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code, reason = "only its schema is used")]
struct EnvSource {
    /// The environment variable that holds it.
    env: String,
}

/// `{ credential: NAME }`.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code, reason = "only its schema is used")]
struct CredentialSource {
    /// A systemd credential (`LoadCredential=`): `$CREDENTIALS_DIRECTORY/NAME`.
    credential: String,
}

fn sources(g: &mut SchemaGenerator) -> [Schema; 3] {
    [
        g.subschema_for::<FileSource>(),
        g.subschema_for::<EnvSource>(),
        g.subschema_for::<CredentialSource>(),
    ]
}

impl JsonSchema for RawSecret {
    fn schema_name() -> Cow<'static, str> {
        "Secret".into()
    }
    fn json_schema(g: &mut SchemaGenerator) -> Schema {
        let [file, env, credential] = sources(g);
        json_schema!({
            "description": "A secret: a quoted string written inline (better kept out of the file), or one of `{ file: PATH }`, `{ env: VAR }`, `{ credential: NAME }`.",
            "oneOf": [
                { "type": "string", "description": "The secret itself, quoted." },
                file, env, credential
            ]
        })
    }
}

impl JsonSchema for RawPem {
    fn schema_name() -> Cow<'static, str> {
        "Pem".into()
    }
    fn json_schema(g: &mut SchemaGenerator) -> Schema {
        let [file, env, credential] = sources(g);
        json_schema!({
            "description": "A PEM file: its absolute path, or one of `{ file: PATH }`, `{ env: VAR }`, `{ credential: NAME }`. Never the PEM itself.",
            "oneOf": [
                { "type": "string", "description": "The absolute path of the PEM file." },
                file, env, credential
            ]
        })
    }
}

impl JsonSchema for ClientMap {
    fn schema_name() -> Cow<'static, str> {
        "Clients".into()
    }
    fn json_schema(g: &mut SchemaGenerator) -> Schema {
        let client = g.subschema_for::<super::raw::RawClient>();
        json_schema!({
            "description": "The clients, by name: letters, digits, `.`, `_` and `-`.",
            "type": ["object", "null"],
            "propertyNames": { "pattern": CLIENT_NAME },
            "additionalProperties": client
        })
    }
}

impl JsonSchema for RawValidate {
    fn schema_name() -> Cow<'static, str> {
        "Validate".into()
    }
    fn json_schema(g: &mut SchemaGenerator) -> Schema {
        let settings = g.subschema_for::<super::raw::RawValidateSettings>();
        json_schema!({
            "description": "Check each token before publishing it: `true`, or `{ issuer, jwks_uri, audience, algorithms, leeway }`.",
            "anyOf": [{ "type": "boolean" }, settings]
        })
    }
}

impl JsonSchema for RawRequireScope {
    fn schema_name() -> Cow<'static, str> {
        "RequireScope".into()
    }
    fn json_schema(g: &mut SchemaGenerator) -> Schema {
        let scopes = g.subschema_for::<OneOrMany>();
        json_schema!({
            "description": "`true` (every scope in `scope`), `false`, or the scopes a token must have (`a b` or `[a, b]`).",
            "anyOf": [{ "type": "boolean" }, scopes]
        })
    }
}

impl JsonSchema for RawAssertionAudience {
    fn schema_name() -> Cow<'static, str> {
        "AssertionAudience".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "The assertion's `aud`: `token_endpoint` (the default), `issuer`, or a URL.",
            "anyOf": [
                { "type": "string", "enum": ["token_endpoint", "issuer"] },
                { "type": "string" }
            ]
        })
    }
}

impl JsonSchema for RawProxy {
    fn schema_name() -> Cow<'static, str> {
        "Proxy".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "`none`, or an `http://` or `https://` proxy URL.",
            "anyOf": [
                { "type": "string", "enum": ["none"] },
                { "type": "string" }
            ]
        })
    }
}

impl JsonSchema for OneOrMany {
    fn schema_name() -> Cow<'static, str> {
        "OneOrMany".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A string, or a list of strings.",
            "anyOf": [
                { "type": "string" },
                { "type": "array", "items": { "type": "string" } }
            ]
        })
    }
}

impl JsonSchema for Span {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A duration with its unit, such as `30s`, `5m`, `1h 30m`; at most 366 days.",
            "type": "string",
            "pattern": DURATION,
            "examples": ["30s", "5m", "1h"]
        })
    }
}

impl JsonSchema for Percent {
    fn schema_name() -> Cow<'static, str> {
        "Percent".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A percentage from 0% to 100%, with its sign, such as `80%`.",
            "type": "string",
            "pattern": PERCENT,
            "examples": ["80%", "10%"]
        })
    }
}

impl JsonSchema for Mode {
    fn schema_name() -> Cow<'static, str> {
        "Mode".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "File permission bits as a quoted octal string, such as \"0640\" (a bare 640 is read as decimal, and refused).",
            "type": "string",
            "pattern": MODE,
            "examples": ["0600", "0640"]
        })
    }
}

impl JsonSchema for Principal {
    fn schema_name() -> Cow<'static, str> {
        "Principal".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A user or group: its name, or its numeric id.",
            "anyOf": [
                { "type": "string", "minLength": 1 },
                { "type": "integer", "minimum": 0, "maximum": u32::MAX }
            ]
        })
    }
}

impl JsonSchema for JwsAlg {
    fn schema_name() -> Cow<'static, str> {
        "JwsAlgorithm".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let names: Vec<&str> = JwsAlg::ALL.iter().map(|a| a.as_str()).collect();
        json_schema!({
            "description": "A JWS signature algorithm with a public key (RFC 7518 §3); never `none` or HMAC.",
            "type": "string",
            "enum": names
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn schema() -> Value {
        serde_json::from_str(&to_json()).unwrap()
    }

    #[test]
    fn schema_is_draft_07_which_the_yaml_language_server_reads() {
        assert_eq!(schema()["$schema"], "http://json-schema.org/draft-07/schema#");
    }

    /// Every raw mapping type is `deny_unknown_fields`: a typo is an error in the editor too.
    #[test]
    fn schema_refuses_unknown_keys_in_every_mapping() {
        let schema = schema();
        assert_eq!(schema["additionalProperties"], false);
        let defs = schema["definitions"].as_object().unwrap();
        for (name, def) in defs {
            if def.get("properties").is_some() {
                assert_eq!(def["additionalProperties"], false, "{name}");
            }
        }
        assert!(defs.contains_key("RawClient") && defs.contains_key("Secret"));
    }

    #[test]
    fn schema_carries_doc_comments_and_required_keys() {
        let schema = schema();
        let fleet = schema["properties"]["fleet"]["description"].as_str().unwrap();
        assert!(fleet.starts_with("Fleet mode"), "{fleet}");
        assert_eq!(schema["definitions"]["RawOutput"]["required"], json!(["path"]));
    }
}
