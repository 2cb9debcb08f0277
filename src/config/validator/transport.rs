//! How a client reaches its IdP: extra trust roots and the proxy.

use std::path::{Path, PathBuf};

use url::Url;

use super::{ClientCtx, Validator};
use crate::config::model::{Proxy, Transport};
use crate::config::raw::RawProxy;

impl Validator<'_> {
    pub(super) fn transport(&mut self, cx: &ClientCtx<'_>) -> Option<Transport> {
        let c = &cx.merged;
        let mut ok = true;
        let ca_file = match &c.ca_file {
            Some(p) if !Path::new(p).is_absolute() => {
                self.problem(&cx.at("ca_file"), format!("`{p}` must be an absolute path"));
                ok = false;
                None
            }
            other => other.as_ref().map(PathBuf::from),
        };
        let no_proxy: Vec<String> = c.no_proxy.clone().map(|l| l.0).unwrap_or_default();
        let proxy = match &c.proxy {
            None => Proxy::Environment,
            Some(RawProxy::None) => Proxy::Disabled,
            Some(RawProxy::Url(p)) => match Url::parse(p) {
                Ok(url) if matches!(url.scheme(), "http" | "https") => Proxy::Url { url, no_proxy },
                _ => {
                    self.problem(
                        &cx.at("proxy"),
                        format!("`{p}` is not `none` or an http(s):// proxy URL"),
                    );
                    ok = false;
                    Proxy::Environment
                }
            },
        };
        // Beside no proxy URL it would do nothing: say so where it is written. A client that
        // turns an inherited proxy off simply drops the inherited list.
        let defaults_have_url = matches!(cx.defaults.proxy, Some(RawProxy::Url(_)));
        for (written, key) in [
            (
                cx.own.no_proxy.is_some() && !matches!(proxy, Proxy::Url { .. }),
                &cx.at("no_proxy")[..],
            ),
            (
                cx.defaults.no_proxy.is_some() && !defaults_have_url,
                &["defaults", "no_proxy"][..],
            ),
        ] {
            if written {
                self.problem(
                    key,
                    "`no_proxy` applies only with a `proxy` URL (the environment has NO_PROXY)",
                );
                ok = false;
            }
        }
        ok.then_some(Transport {
            ca_file,
            proxy,
            allow_insecure_http: cx.allow_http,
        })
    }
}
