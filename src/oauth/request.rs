//! Encoding the token request: the form body and, for `client_secret_basic`, the Authorization
//! header. The result holds the secret, so it lives in `secrecy` types with a redacted `Debug`.

use base64::Engine;
use secrecy::{ExposeSecret, SecretString};
use url::form_urlencoded;

use crate::config::{BasicEncoding, Grant};

/// A fully encoded token request.
pub struct TokenRequest {
    /// `Authorization` header value for `client_secret_basic`.
    pub authorization: Option<SecretString>,
    /// `application/x-www-form-urlencoded` body; holds the secret for `client_secret_post`.
    pub body: SecretString,
}

impl std::fmt::Debug for TokenRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenRequest([REDACTED])")
    }
}

/// How the client authenticates in one request.
pub enum Credential<'a> {
    /// `client_secret_post`: id and secret as body parameters (RFC 6749 §2.3.1).
    Post(&'a SecretString),
    /// `client_secret_basic`: HTTP Basic with id and secret encoded as `BasicEncoding` says.
    Basic(&'a SecretString, BasicEncoding),
    /// `private_key_jwt`: a signed assertion (RFC 7523 §2.2).
    Assertion(&'a SecretString),
    /// `tls_client_auth`: the certificate is on the connection; the body names the client
    /// (RFC 8705 §2.1).
    Certificate,
}

/// Builds the RFC 6749 §4.4.2 request for `grant`.
pub fn build(grant: &Grant, credential: Credential<'_>) -> TokenRequest {
    let mut form = form_urlencoded::Serializer::new(String::with_capacity(256));
    form.append_pair("grant_type", "client_credentials");
    let authorization = match credential {
        Credential::Post(secret) => {
            form.append_pair("client_id", &grant.client_id);
            form.append_pair("client_secret", secret.expose_secret());
            None
        }
        Credential::Basic(secret, encoding) => Some(basic_authorization(&grant.client_id, secret, encoding)),
        Credential::Assertion(assertion) => {
            form.append_pair("client_id", &grant.client_id);
            form.append_pair("client_assertion_type", super::assertion::ASSERTION_TYPE);
            form.append_pair("client_assertion", assertion.expose_secret());
            None
        }
        Credential::Certificate => {
            form.append_pair("client_id", &grant.client_id);
            None
        }
    };
    if let Some(audience) = &grant.audience {
        form.append_pair("audience", audience);
    }
    if let Some(scope) = &grant.scope {
        form.append_pair("scope", scope);
    }
    for resource in &grant.resources {
        form.append_pair("resource", resource);
    }
    if let Some(organization) = &grant.organization {
        form.append_pair("organization", organization);
    }
    for (name, value) in &grant.params {
        form.append_pair(name, value);
    }
    TokenRequest {
        authorization,
        body: SecretString::from(form.finish()),
    }
}

/// Whether `BasicEncoding::Form` changes `text`: if it does, an IdP that does not decode Basic
/// credentials sees another id or secret than the one it holds.
pub fn form_encoding_changes(text: &str) -> bool {
    form_urlencoded::byte_serialize(text.as_bytes()).ne(std::iter::once(text))
}

/// RFC 6749 §2.3.1: the id and secret are each encoded with the
/// `application/x-www-form-urlencoded` algorithm *before* being joined with `:` and base64-encoded
/// for HTTP Basic (RFC 7617). Servers decode them the same way, so `:` in an id survives. Some
/// do not decode them: `BasicEncoding::Raw` sends them as they are.
pub fn basic_authorization(client_id: &str, secret: &SecretString, encoding: BasicEncoding) -> SecretString {
    let mut pair = zeroize::Zeroizing::new(String::with_capacity(client_id.len() + 64));
    match encoding {
        BasicEncoding::Form => {
            pair.extend(form_urlencoded::byte_serialize(client_id.as_bytes()));
            pair.push(':');
            pair.extend(form_urlencoded::byte_serialize(secret.expose_secret().as_bytes()));
        }
        BasicEncoding::Raw => {
            pair.push_str(client_id);
            pair.push(':');
            pair.push_str(secret.expose_secret());
        }
    }
    let encoded = zeroize::Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(pair.as_bytes()));
    SecretString::from(format!("Basic {}", encoded.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> Grant {
        Grant {
            endpoint: crate::config::Endpoint::TokenUrl("https://idp.example/oauth/token".parse().unwrap()),
            client_id: "my id".into(),
            audience: Some("https://api.example/".into()),
            scope: Some("read:a write:b".into()),
            resources: vec!["https://r1.example/".into(), "https://r2.example/".into()],
            organization: Some("org_123".into()),
            params: vec![("tenant".into(), "a&b".into())],
        }
    }

    /// A grant with no optional parameter.
    fn bare_grant() -> Grant {
        Grant {
            audience: None,
            scope: None,
            resources: vec![],
            organization: None,
            params: vec![],
            ..grant()
        }
    }

    fn decode_basic(header: &str) -> String {
        let b64 = header.strip_prefix("Basic ").unwrap();
        String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b64).unwrap()).unwrap()
    }

    #[test]
    fn post_puts_every_parameter_in_the_body_in_a_fixed_order() {
        let req = build(&grant(), Credential::Post(&SecretString::from("s3cr=t&x")));
        assert!(req.authorization.is_none());
        assert_eq!(
            req.body.expose_secret(),
            "grant_type=client_credentials&client_id=my+id&client_secret=s3cr%3Dt%26x\
             &audience=https%3A%2F%2Fapi.example%2F&scope=read%3Aa+write%3Ab\
             &resource=https%3A%2F%2Fr1.example%2F&resource=https%3A%2F%2Fr2.example%2F\
             &organization=org_123&tenant=a%26b"
        );
    }

    #[test]
    fn basic_keeps_the_secret_out_of_the_body() {
        let req = build(
            &grant(),
            Credential::Basic(&SecretString::from("pw"), BasicEncoding::Form),
        );
        assert!(!req.body.expose_secret().contains("client_secret"));
        assert!(!req.body.expose_secret().contains("client_id"));
        assert_eq!(decode_basic(req.authorization.unwrap().expose_secret()), "my+id:pw");
    }

    #[test]
    fn basic_form_urlencodes_id_and_secret_before_base64() {
        // Table of (client_id, secret, the user:password pair that goes into base64).
        let cases = [
            ("plain", "secret", "plain:secret"),
            ("a:b", "c:d", "a%3Ab:c%3Ad"),
            ("a+b", "c+d", "a%2Bb:c%2Bd"),
            ("50%", "100%", "50%25:100%25"),
            ("with space", "two  spaces", "with+space:two++spaces"),
            ("ümlaut", "é", "%C3%BCmlaut:%C3%A9"),
            ("x/y?z", "=&", "x%2Fy%3Fz:%3D%26"),
        ];
        for (id, secret, pair) in cases {
            let header = basic_authorization(id, &SecretString::from(secret), BasicEncoding::Form);
            assert_eq!(
                decode_basic(header.expose_secret()),
                pair,
                "id={id:?} secret={secret:?}"
            );
            assert_eq!(form_encoding_changes(secret), secret != pair.split_once(':').unwrap().1);
        }
    }

    #[test]
    fn raw_basic_sends_id_and_secret_as_they_are() {
        let secret = "p+q/r=s%t&u v~w:x";
        let header = basic_authorization("app", &SecretString::from(secret), BasicEncoding::Raw);
        assert_eq!(decode_basic(header.expose_secret()), format!("app:{secret}"));
        assert!(form_encoding_changes(secret));
        assert!(!form_encoding_changes("Abc-123_x.y*z"));
    }

    #[test]
    fn optional_parameters_are_left_out_when_unset() {
        let g = bare_grant();
        let req = build(&g, Credential::Post(&SecretString::from("pw")));
        assert_eq!(
            req.body.expose_secret(),
            "grant_type=client_credentials&client_id=my+id&client_secret=pw"
        );
    }

    #[test]
    fn assertions_and_certificates_name_the_client_in_the_body() {
        let g = bare_grant();
        let req = build(&g, Credential::Assertion(&SecretString::from("eyJ.a.b")));
        assert!(req.authorization.is_none());
        assert_eq!(
            req.body.expose_secret(),
            "grant_type=client_credentials&client_id=my+id\
             &client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer\
             &client_assertion=eyJ.a.b"
        );
        let req = build(&g, Credential::Certificate);
        assert_eq!(
            req.body.expose_secret(),
            "grant_type=client_credentials&client_id=my+id"
        );
    }

    #[test]
    fn debug_is_redacted() {
        let req = build(&grant(), Credential::Post(&SecretString::from("hunter2")));
        assert!(!format!("{req:?}").contains("hunter2"));
    }
}
