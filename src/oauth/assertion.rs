//! `private_key_jwt` (RFC 7523 §2.2, OIDC Core §9): a short-lived JWT, signed with the client's
//! private key, that authenticates the client at the token endpoint. The key file is read for
//! every assertion, so a rotated key is used from the next request on.
//!
//! Keys are PEM: PKCS#8 (`PRIVATE KEY`: RSA, P-256 or Ed25519) and the usual legacy forms,
//! PKCS#1 (`RSA PRIVATE KEY`) and SEC1 (`EC PRIVATE KEY`). Signing is done by aws-lc-rs, the
//! crypto provider rustls already uses.

use crate::secret::{SecretError, SecretSource};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::SecretString;
use zeroize::Zeroizing;

use crate::config::JwsAlg;

/// Assertions live this long: enough for clock differences, short enough to be useless if seen.
pub const ASSERTION_LIFETIME: Duration = Duration::from_secs(60);
/// `client_assertion_type` for a JWT (RFC 7523 §2.2).
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

#[derive(Debug, thiserror::Error)]
pub enum AssertionError {
    #[error(transparent)]
    Unreadable(#[from] SecretError),
    /// `from`: where the key was read (`file /etc/tokend/k.pem`), never the key.
    #[error("private key from {from}: {reason}")]
    Unusable { from: String, reason: String },
    #[error("private key from {from} is {kind}, which cannot sign {alg}")]
    WrongAlgorithm {
        from: String,
        kind: &'static str,
        alg: JwsAlg,
    },
}

/// A private key that can sign client assertions.
pub enum SigningKey {
    Rsa(RsaKeyPair),
    EcP256(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

impl SigningKey {
    /// Reads and parses a PEM private key.
    pub fn load(source: &SecretSource) -> Result<SigningKey, AssertionError> {
        let text = source.read_bytes("private key")?;
        Self::from_pem(&text).map_err(|reason| AssertionError::Unusable {
            from: source.describe(),
            reason,
        })
    }

    /// Parses a PEM private key (errors never contain key material).
    fn from_pem(text: &[u8]) -> Result<SigningKey, String> {
        let blocks = pem::parse_many(text).map_err(|_| "not a PEM file".to_owned())?;
        if blocks.is_empty() {
            return Err("not a PEM file".to_owned());
        }
        // `openssl ecparam -genkey` writes an `EC PARAMETERS` block before the key.
        let block = blocks
            .into_iter()
            .find(|b| b.tag().ends_with("PRIVATE KEY"))
            .ok_or_else(|| "no private key in this PEM file".to_owned())?;
        let tag = block.tag().to_owned();
        let der = Zeroizing::new(block.into_contents());
        match tag.as_str() {
            "PRIVATE KEY" => RsaKeyPair::from_pkcs8(&der)
                .map(SigningKey::Rsa)
                .or_else(|_| EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der).map(SigningKey::EcP256))
                .or_else(|_| Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).map(SigningKey::Ed25519))
                .map_err(|_| "a PKCS#8 key that is not RSA (2048 bits or more), P-256 or Ed25519".to_owned()),
            "RSA PRIVATE KEY" => RsaKeyPair::from_der(&der)
                .map(SigningKey::Rsa)
                .map_err(|e| format!("not a usable PKCS#1 RSA key ({e})")),
            "EC PRIVATE KEY" => EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_FIXED_SIGNING, &der)
                .map(SigningKey::EcP256)
                .map_err(|_| "not a P-256 SEC1 key (only P-256 signs ES256)".to_owned()),
            "ENCRYPTED PRIVATE KEY" => Err(
                "encrypted; decrypt it first (`openssl pkcs8 -topk8 -nocrypt`) and protect it with file permissions"
                    .into(),
            ),
            other => Err(format!("a PEM `{other}` block, not a supported private key")),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            SigningKey::Rsa(_) => "an RSA key",
            SigningKey::EcP256(_) => "a P-256 key",
            SigningKey::Ed25519(_) => "an Ed25519 key",
        }
    }

    /// The algorithm a key signs with unless told otherwise.
    pub fn default_alg(&self) -> JwsAlg {
        match self {
            SigningKey::Rsa(_) => JwsAlg::Rs256,
            SigningKey::EcP256(_) => JwsAlg::Es256,
            SigningKey::Ed25519(_) => JwsAlg::EdDsa,
        }
    }

    fn sign(&self, alg: JwsAlg, message: &[u8]) -> Option<Vec<u8>> {
        let rng = SystemRandom::new();
        match (self, alg) {
            (SigningKey::Rsa(key), JwsAlg::Rs256 | JwsAlg::Ps256) => {
                let padding: &'static dyn signature::RsaEncoding = if alg == JwsAlg::Rs256 {
                    &signature::RSA_PKCS1_SHA256
                } else {
                    &signature::RSA_PSS_SHA256
                };
                let mut sig = vec![0u8; key.public_modulus_len()];
                key.sign(padding, &rng, message, &mut sig).ok()?;
                Some(sig)
            }
            (SigningKey::EcP256(key), JwsAlg::Es256) => Some(key.sign(&rng, message).ok()?.as_ref().to_vec()),
            (SigningKey::Ed25519(key), JwsAlg::EdDsa) => Some(key.sign(message).as_ref().to_vec()),
            _ => None,
        }
    }
}

/// What goes into one assertion.
pub struct Claims<'a> {
    pub client_id: &'a str,
    pub audience: &'a str,
    pub key_id: Option<&'a str>,
    pub now: SystemTime,
}

/// Builds a signed assertion: `iss` = `sub` = the client id, `aud`, a unique `jti`, `iat`, and
/// `exp` a minute later (RFC 7523 §3). `alg` defaults to the key's own (`default_alg`).
pub fn sign(
    key: &SigningKey,
    alg: Option<JwsAlg>,
    claims: &Claims<'_>,
    from: &str,
) -> Result<SecretString, AssertionError> {
    let alg = alg.unwrap_or_else(|| key.default_alg());
    let mut header = serde_json::json!({ "alg": alg.as_str(), "typ": "JWT" });
    if let Some(kid) = claims.key_id {
        header["kid"] = kid.into();
    }
    let iat = claims.now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut jti = [0u8; 16];
    aws_lc_rs::rand::fill(&mut jti).expect("system randomness");
    let payload = serde_json::json!({
        "iss": claims.client_id,
        "sub": claims.client_id,
        "aud": claims.audience,
        "jti": URL_SAFE_NO_PAD.encode(jti),
        "iat": iat,
        "exp": iat + ASSERTION_LIFETIME.as_secs(),
    });
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(payload.to_string())
    );
    let signature = key
        .sign(alg, input.as_bytes())
        .ok_or_else(|| AssertionError::WrongAlgorithm {
            from: from.to_owned(),
            kind: key.kind(),
            alg,
        })?;
    Ok(SecretString::from(format!(
        "{input}.{}",
        URL_SAFE_NO_PAD.encode(signature)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_FIXED, ED25519, KeyPair, RSA_PKCS1_2048_8192_SHA256, RSA_PSS_2048_8192_SHA256,
        UnparsedPublicKey,
    };
    use secrecy::ExposeSecret;
    use std::path::Path;
    use std::process::Command;

    fn load(path: &Path) -> Result<SigningKey, AssertionError> {
        SigningKey::load(&SecretSource::File(path.to_owned()))
    }

    /// Generates a key with openssl in the given PEM form.
    fn openssl_key(dir: &Path, name: &str, args: &[&str]) -> std::path::PathBuf {
        let path = dir.join(name);
        let status = Command::new("openssl")
            .args(args)
            .arg("-out")
            .arg(&path)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl");
        assert!(status.success(), "openssl {args:?}");
        path
    }

    fn verify(key: &SigningKey, alg: JwsAlg, jwt: &str) {
        let (input, sig) = jwt.rsplit_once('.').unwrap();
        let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
        let ok = match (key, alg) {
            (SigningKey::Rsa(k), JwsAlg::Rs256) => {
                UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, k.public_key().as_ref())
                    .verify(input.as_bytes(), &sig)
            }
            (SigningKey::Rsa(k), JwsAlg::Ps256) => {
                UnparsedPublicKey::new(&RSA_PSS_2048_8192_SHA256, k.public_key().as_ref())
                    .verify(input.as_bytes(), &sig)
            }
            (SigningKey::EcP256(k), _) => {
                UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, k.public_key().as_ref()).verify(input.as_bytes(), &sig)
            }
            (SigningKey::Ed25519(k), _) => {
                UnparsedPublicKey::new(&ED25519, k.public_key().as_ref()).verify(input.as_bytes(), &sig)
            }
            _ => panic!("unexpected pair"),
        };
        assert!(ok.is_ok(), "{alg} signature does not verify");
    }

    #[test]
    fn every_key_form_signs_a_verifiable_assertion_with_the_rfc_7523_claims() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let rsa8 = openssl_key(
            d,
            "rsa8.pem",
            &["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        );
        let rsa1 = openssl_key(d, "rsa1.pem", &["rsa", "-traditional", "-in", rsa8.to_str().unwrap()]);
        let ec8 = openssl_key(
            d,
            "ec8.pem",
            &["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        );
        let sec1 = openssl_key(d, "sec1.pem", &["ec", "-in", ec8.to_str().unwrap()]);
        let ed = openssl_key(d, "ed.pem", &["genpkey", "-algorithm", "ED25519"]);
        // `openssl ecparam -genkey` (no -noout): an EC PARAMETERS block, then the SEC1 key.
        let with_params = openssl_key(d, "params.pem", &["ecparam", "-genkey", "-name", "prime256v1"]);
        assert!(
            std::fs::read_to_string(&with_params)
                .unwrap()
                .starts_with("-----BEGIN EC PARAMETERS-----")
        );
        assert!(
            std::fs::read_to_string(&rsa1)
                .unwrap()
                .contains("BEGIN RSA PRIVATE KEY")
        );
        assert!(std::fs::read_to_string(&sec1).unwrap().contains("BEGIN EC PRIVATE KEY"));
        let cases = [
            (&rsa8, JwsAlg::Rs256),
            (&rsa8, JwsAlg::Ps256),
            (&rsa1, JwsAlg::Rs256),
            (&ec8, JwsAlg::Es256),
            (&sec1, JwsAlg::Es256),
            (&with_params, JwsAlg::Es256),
            (&ed, JwsAlg::EdDsa),
        ];
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut jtis = std::collections::HashSet::new();
        for (path, alg) in cases {
            let key = load(path).unwrap();
            let claims = Claims {
                client_id: "my-client",
                audience: "https://idp/token",
                key_id: Some("k1"),
                now,
            };
            let jwt = sign(&key, Some(alg), &claims, "file k.pem").unwrap();
            let jwt = jwt.expose_secret();
            verify(&key, alg, jwt);
            let parts: Vec<&str> = jwt.split('.').collect();
            let header: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
            let body: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
            assert_eq!(
                (header["alg"].as_str(), header["kid"].as_str()),
                (Some(alg.as_str()), Some("k1"))
            );
            assert_eq!(
                (body["iss"].as_str(), body["sub"].as_str()),
                (Some("my-client"), Some("my-client"))
            );
            assert_eq!(body["aud"], "https://idp/token");
            assert_eq!(
                (body["iat"].as_u64(), body["exp"].as_u64()),
                (Some(1_700_000_000), Some(1_700_000_060))
            );
            assert!(jtis.insert(body["jti"].as_str().unwrap().to_owned()), "jti repeated");
        }
        assert_eq!(load(&rsa8).unwrap().default_alg(), JwsAlg::Rs256);
        assert_eq!(load(&sec1).unwrap().default_alg(), JwsAlg::Es256);
        assert_eq!(load(&ed).unwrap().default_alg(), JwsAlg::EdDsa);
        // A key that cannot make the asked-for signature is an error that says so.
        let ec = load(&ec8).unwrap();
        let claims = Claims {
            client_id: "c",
            audience: "a",
            key_id: None,
            now,
        };
        let err = sign(&ec, Some(JwsAlg::Rs256), &claims, "file ec8.pem").err().unwrap();
        assert!(
            err.to_string().contains("is a P-256 key, which cannot sign RS256"),
            "{err}"
        );
    }

    #[test]
    fn unusable_keys_are_explained_without_their_contents() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let p384 = openssl_key(
            d,
            "p384.pem",
            &["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
        );
        let enc = openssl_key(
            d,
            "enc.pem",
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-aes256",
                "-pass",
                "pass:x",
            ],
        );
        std::fs::write(
            d.join("cert.pem"),
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        std::fs::write(d.join("junk.pem"), "hello").unwrap();
        for file in ["cert.pem", "junk.pem"] {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(d.join(file), std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        for (file, expected) in [
            ("p384.pem", "not RSA (2048 bits or more), P-256 or Ed25519"),
            ("enc.pem", "encrypted"),
            ("cert.pem", "no private key in this PEM file"),
            ("junk.pem", "not a PEM file"),
            ("missing.pem", "cannot read private key"),
        ] {
            let err = load(&d.join(file)).err().unwrap().to_string();
            assert!(err.contains(expected), "{file}: {err}");
            assert!(!err.contains("MII"), "{err}");
        }
        let _ = p384;
        let _ = enc;
    }
}
