//! `proxies:`: listeners that forward requests to one upstream with one client's token added.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use url::Url;

use super::socket::MAX_SOCKET_PATH;
use super::{Kind, Validator};
use crate::config::model::{
    Access, Client, DEFAULT_PROXY_CONNECTIONS, DEFAULT_PROXY_SOCKET_MODE, ProxyBind, SocketConfig, TokenProxy,
};
use crate::config::raw::RawTokenProxy;

impl Validator<'_> {
    pub(super) fn proxies(
        &mut self,
        raw: Vec<RawTokenProxy>,
        clients: &[Arc<Client>],
        access: &Access,
        socket: Option<&SocketConfig>,
    ) -> Vec<TokenProxy> {
        let mut proxies: Vec<TokenProxy> = Vec::new();
        for (i, p) in raw.into_iter().enumerate() {
            let index = i.to_string();
            let key = |k: &'static str| -> Vec<&str> {
                let mut v = vec!["proxies", index.as_str()];
                if !k.is_empty() {
                    v.push(k);
                }
                v
            };
            let Some(proxy) = self.proxy(&key, p, clients, access) else {
                continue;
            };
            let clash = match &proxy.bind {
                ProxyBind::Unix { path, .. } if socket.is_some_and(|s| s.path == *path) => {
                    Some("this is the API socket's path; choose another".to_owned())
                }
                bind => proxies
                    .iter()
                    .position(|other| other.bind == *bind)
                    .map(|j| format!("proxies[{j}] listens here already")),
            };
            match clash {
                Some(why) => {
                    let k = if matches!(proxy.bind, ProxyBind::Tcp(_)) {
                        "listen"
                    } else {
                        "socket"
                    };
                    self.problem(&key(k), why);
                }
                None => proxies.push(proxy),
            }
        }
        proxies
    }

    fn proxy<'k>(
        &mut self,
        key: &impl Fn(&'static str) -> Vec<&'k str>,
        p: RawTokenProxy,
        clients: &[Arc<Client>],
        access: &Access,
    ) -> Option<TokenProxy> {
        let client = match &p.client {
            None => {
                self.problem(&key(""), "a proxy needs `client`, the client whose token it adds");
                None
            }
            Some(name) => match clients.iter().find(|c| c.name.as_str() == name) {
                Some(c) => Some(c.clone()),
                None => {
                    let names: Vec<&str> = clients.iter().map(|c| c.name.as_str()).collect();
                    let hint = crate::config::suggest::closest(name, &names)
                        .map_or(String::new(), |c| format!("; did you mean `{c}`?"));
                    self.problem(&key("client"), format!("there is no client `{name}`{hint}"));
                    None
                }
            },
        };
        let upstream = match &p.upstream {
            None => {
                self.problem(&key(""), "a proxy needs `upstream`, the base URL requests go to");
                None
            }
            Some(text) => match upstream(text, p.allow_insecure_http.unwrap_or(false)) {
                Ok(url) => Some(url),
                Err(e) => {
                    self.problem(&key("upstream"), e);
                    None
                }
            },
        };
        let remote = p.allow_remote.unwrap_or(false);
        let bind = match (p.listen, p.socket) {
            (Some(_), Some(_)) => {
                self.problem(
                    &key("socket"),
                    "a proxy listens on `listen` (TCP) or `socket` (Unix), not both",
                );
                None
            }
            (None, None) => {
                self.problem(
                    &key(""),
                    "a proxy needs `listen: 127.0.0.1:PORT` or `socket: /run/tokend/NAME.sock`",
                );
                None
            }
            (Some(text), None) => {
                for (given, k) in [
                    (p.mode.is_some(), "mode"),
                    (p.group.is_some(), "group"),
                    (p.readers.is_some(), "readers"),
                ] {
                    if given {
                        self.problem(
                            &key(k),
                            format!("`{k}` applies to a `socket` proxy; a TCP one cannot tell its callers apart"),
                        );
                    }
                }
                match text.parse::<SocketAddr>() {
                    Err(_) => {
                        self.problem(
                            &key("listen"),
                            format!("`{text}` is not an IP address and port, such as 127.0.0.1:8081 or [::1]:8081"),
                        );
                        None
                    }
                    Ok(addr) if !addr.ip().is_loopback() && !remote => {
                        self.problem(
                            &key("listen"),
                            format!(
                                "`{text}` is not a loopback address: whoever reaches it makes requests with the token; use 127.0.0.1, or set `allow_remote: true` if you mean it"
                            ),
                        );
                        None
                    }
                    Ok(addr) => Some(ProxyBind::Tcp(addr)),
                }
            }
            (None, Some(path)) if !Path::new(&path).is_absolute() => {
                self.problem(&key("socket"), format!("`{path}` must be an absolute path"));
                None
            }
            (None, Some(path)) if path.len() > MAX_SOCKET_PATH => {
                self.problem(
                    &key("socket"),
                    format!("a socket path must be at most {MAX_SOCKET_PATH} bytes long"),
                );
                None
            }
            (None, Some(path)) => {
                let group = p.group.and_then(|g| self.owner(&key("group"), g, Kind::Group));
                Some(ProxyBind::Unix {
                    path: PathBuf::from(path),
                    mode: p.mode.unwrap_or(DEFAULT_PROXY_SOCKET_MODE),
                    group,
                })
            }
        };
        let client = client?;
        let readers = match &p.readers {
            Some(raw) => {
                let at = key("readers");
                self.readers(&at, raw)
            }
            None => access.readers.get(&client.name).cloned().unwrap_or_default(),
        };
        let max_connections = p.max_connections.unwrap_or(DEFAULT_PROXY_CONNECTIONS);
        if max_connections == 0 {
            self.problem(&key("max_connections"), "`max_connections` must be at least 1");
            return None;
        }
        Some(TokenProxy {
            client: client.name.clone(),
            upstream: upstream?,
            bind: bind?,
            readers,
            max_connections,
            transport: client.spec.transport.clone(),
            connect_timeout: client.timeouts.connect,
        })
    }
}

/// The upstream base URL: https, or http to loopback (or when allowed); no credentials, query
/// or fragment; a path that ends with `/` (added if missing) so that request paths go under it.
fn upstream(text: &str, allow_http: bool) -> Result<Url, String> {
    let mut url = Url::parse(text).map_err(|e| format!("`{text}` is not a valid URL: {e}"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("the upstream must not contain credentials: the proxy adds the token".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("the upstream is a base URL: no ?query or #fragment".into());
    }
    match url.scheme() {
        "https" => {}
        "http" if allow_http || crate::config::url_policy::is_loopback(&url) => {}
        "http" => {
            return Err(format!(
                "`{text}` uses plain http, which would send the token unencrypted; use https, or set `allow_insecure_http: true` on the proxy if you really mean it"
            ));
        }
        other => return Err(format!("unsupported URL scheme `{other}`; the upstream must be https")),
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}
