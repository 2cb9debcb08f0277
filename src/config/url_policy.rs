//! Which URLs tokend sends credentials to: the rule a configured `token_url`, `issuer` or
//! `jwks_uri` must pass, and that endpoints learned by discovery must pass too.

use url::Url;

/// `https://` always; `http://` only to a loopback host or with `allow_insecure_http: true`,
/// because the client secret travels in the request. `what` names the URL in messages.
pub fn check_idp_url(text: &str, allow_http: bool, what: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("`{text}` is not a valid URL: {e}"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "the {what} must not contain credentials; use `client_id` and `client_secret`"
        ));
    }
    if url.fragment().is_some() {
        return Err(format!("the {what} must not have a #fragment (RFC 6749 §3.2)"));
    }
    match url.scheme() {
        "https" => Ok(url),
        "http" if allow_http || is_loopback(&url) => Ok(url),
        "http" => Err(format!(
            "`{text}` uses plain http, which would send the client secret unencrypted; use https, or set `allow_insecure_http: true` on the client if you really mean it"
        )),
        other => Err(format!("unsupported URL scheme `{other}`; the {what} must be https")),
    }
}

/// Whether the URL's host is this host: `localhost` or a loopback address (also in URLs of
/// schemes such as `redis://`, whose hosts the `url` crate leaves unparsed).
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => {
            d.eq_ignore_ascii_case("localhost") || d.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
        }
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_to_loopback_or_when_allowed() {
        for ok in [
            "https://idp.example/t",
            "http://127.0.0.1:8080/t",
            "http://[::1]/t",
            "http://LOCALHOST/t",
        ] {
            assert!(check_idp_url(ok, false, "token URL").is_ok(), "{ok}");
        }
        assert!(check_idp_url("http://idp.example/t", true, "token URL").is_ok());
        let cases = [
            ("http://idp.example/t", "uses plain http"),
            ("https://u:p@idp.example/t", "must not contain credentials"),
            ("https://idp.example/t#x", "#fragment"),
            ("ftp://idp.example/t", "unsupported URL scheme `ftp`"),
            ("idp.example/t", "is not a valid URL"),
        ];
        for (text, expected) in cases {
            let err = check_idp_url(text, false, "token URL").unwrap_err();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }
}
