//! The `Host` check (`LEVIATHAN_ALLOWED_HOSTS`): answers only requests whose
//! `Host` names this server, so that a web page cannot reach it by DNS
//! rebinding (a name of the attacker's that resolves to the server's address,
//! which the browser then treats as the page's own origin). `/v1` needs a
//! bearer token a page does not have, but `/metrics` without
//! `LEVIATHAN_METRICS_TOKEN`, the probes and the console's files do not.
//!
//! An IP address is always accepted: rebinding needs a name, and a page that
//! names the address itself is cross-origin to it. A request without `Host`
//! (HTTP/1.0) is accepted: browsers always send one. This module owns the
//! setting's parsing and the check; it never reads anything else of the
//! request.

use super::error::ApiError;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::IpAddr;
use std::sync::Arc;

/// The host names the server answers to.
#[derive(Debug, Clone)]
pub struct AllowedHosts(Option<Arc<Allowed>>);

#[derive(Debug)]
struct Allowed {
    /// Exact names, lowercase, without a trailing dot.
    names: Vec<String>,
    /// `*.example.com` as `.example.com`: any name that ends with it.
    suffixes: Vec<String>,
    /// What the refusal says the list is.
    described: String,
}

/// The names a server listening on a loopback address answers to when
/// `LEVIATHAN_ALLOWED_HOSTS` is unset.
const LOOPBACK_DEFAULT: &str = "localhost,*.localhost";

impl Default for AllowedHosts {
    /// Any host (a server built in a test, or one listening on every address).
    fn default() -> Self {
        AllowedHosts(None)
    }
}

impl AllowedHosts {
    /// Reads `LEVIATHAN_ALLOWED_HOSTS` (`setting`), given the address the
    /// server listens on (`bind`). Unset: `localhost` and its subdomains when
    /// `bind` is a loopback address (a server on a developer's machine, the
    /// one a browser can be turned against), any host otherwise. `*` is any
    /// host; otherwise a comma-separated list of names, each exact or
    /// `*.domain` for every name under `domain` (and `domain` itself).
    pub fn parse(setting: Option<&str>, bind: &str) -> Result<AllowedHosts, String> {
        let setting = setting.map(str::trim).filter(|s| !s.is_empty());
        let (list, described) = match setting {
            None if is_loopback(bind) => (
                LOOPBACK_DEFAULT,
                format!(
                    "unset, so {LOOPBACK_DEFAULT} because the server listens on the loopback \
                     address {bind}"
                ),
            ),
            None => return Ok(AllowedHosts(None)),
            Some(s) => (s, s.to_string()),
        };
        let mut allowed = Allowed {
            names: Vec::new(),
            suffixes: Vec::new(),
            described,
        };
        for entry in list.split(',').map(str::trim) {
            if entry == "*" {
                if list.split(',').any(|e| e.trim() != "*") {
                    return Err("`*` (any host) cannot be combined with names".into());
                }
                return Ok(AllowedHosts(None));
            }
            let (wildcard, name) = match entry.strip_prefix("*.") {
                Some(rest) => (true, rest),
                None => (false, entry),
            };
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if name.is_empty() {
                return Err(format!(
                    "{entry:?} is not a host name (an empty entry, or a lone `*.`)"
                ));
            }
            if name.contains(':') || name.contains('/') {
                return Err(format!(
                    "{entry:?} is not a host name: give names without a scheme or port \
                     (IP addresses are always accepted)"
                ));
            }
            if let Some(bad) = name
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '.' || *c == '_'))
            {
                return Err(format!(
                    "{entry:?} is not a host name: {bad:?} is not a letter, digit, `-`, `_` or `.` \
                     (`*` only as a whole entry or as `*.domain`)"
                ));
            }
            if wildcard {
                allowed.suffixes.push(format!(".{name}"));
            }
            allowed.names.push(name);
        }
        Ok(AllowedHosts(Some(Arc::new(allowed))))
    }

    /// Whether every host is accepted.
    pub fn any(&self) -> bool {
        self.0.is_none()
    }

    /// Whether a `Host` value (`name[:port]`, `[v6]:port`, `v4:port`) is
    /// accepted.
    pub fn allows(&self, host: &str) -> bool {
        let Some(allowed) = &self.0 else {
            return true;
        };
        let Some(name) = name_of(host) else {
            return false;
        };
        if name.parse::<IpAddr>().is_ok() {
            return true;
        }
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        allowed.names.contains(&name) || allowed.suffixes.iter().any(|s| name.ends_with(s))
    }
}

/// The host part of a `Host` value; `None` when it is malformed. An IPv6
/// literal is returned as `::1` etc.
fn name_of(host: &str) -> Option<&str> {
    if let Some(rest) = host.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        v6.parse::<std::net::Ipv6Addr>().ok()?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        return Some(v6);
    }
    let name = match host.rsplit_once(':') {
        Some((name, port)) if is_port(port) => name,
        Some(_) => return None,
        None => host,
    };
    (!name.is_empty()).then_some(name)
}

fn is_port(s: &str) -> bool {
    !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit())
}

fn is_loopback(bind: &str) -> bool {
    let bind = bind.trim_start_matches('[').trim_end_matches(']');
    bind.eq_ignore_ascii_case("localhost")
        || bind.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Refuses a request whose `Host` (or absolute URI) names a host the server
/// does not answer to: 421 `host_not_allowed`.
pub async fn check(State(hosts): State<AllowedHosts>, req: Request, next: Next) -> Response {
    if hosts.any() {
        return next.run(req).await;
    }
    let mut named = req
        .headers()
        .get_all(header::HOST)
        .iter()
        .map(|v| v.to_str().unwrap_or("\u{fffd}"))
        .chain(req.uri().authority().map(|a| a.as_str()));
    if let Some(host) = named.find(|h| !hosts.allows(h)) {
        return refused(&hosts, host);
    }
    next.run(req).await
}

fn refused(hosts: &AllowedHosts, host: &str) -> Response {
    let described = hosts.0.as_ref().map_or("", |a| a.described.as_str());
    ApiError::new(
        StatusCode::MISDIRECTED_REQUEST,
        "host_not_allowed",
        format!(
            "this server does not answer to the host {host:?}: LEVIATHAN_ALLOWED_HOSTS is \
             {described}. Add the name clients use to LEVIATHAN_ALLOWED_HOSTS (comma-separated, \
             `*.domain` for a domain's names, `*` for any), or use the server's IP address \
             (docs/SECURITY.md, \"DNS rebinding\")"
        ),
    )
    .with_details(serde_json::json!({"host": host, "setting": "LEVIATHAN_ALLOWED_HOSTS"}))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_on_a_loopback_address_allows_localhost_and_addresses_only() {
        for bind in ["127.0.0.1", "::1", "[::1]", "localhost", "127.0.0.2"] {
            let h = AllowedHosts::parse(None, bind).unwrap();
            assert!(!h.any(), "{bind}");
            for ok in [
                "localhost",
                "localhost:8000",
                "LOCALHOST.:8000",
                "app.localhost",
                "127.0.0.1:8000",
                "10.1.2.3",
                "[::1]:8000",
                "[fe80::1]",
            ] {
                assert!(h.allows(ok), "{bind} refused {ok}");
            }
            for bad in [
                "evil.example",
                "evil.example:8000",
                "localhost.evil.example",
                "notlocalhost",
                "127.0.0.1.nip.io",
                "[::1",
                "[::1]x",
                "localhost:80a",
                ":8000",
                "",
            ] {
                assert!(!h.allows(bad), "{bind} allowed {bad:?}");
            }
        }
    }

    #[test]
    fn unset_on_every_address_or_a_star_allows_any_host() {
        for bind in ["0.0.0.0", "::", "10.0.0.5"] {
            assert!(AllowedHosts::parse(None, bind).unwrap().any(), "{bind}");
            assert!(
                AllowedHosts::parse(Some("  "), bind).unwrap().any(),
                "{bind}"
            );
        }
        assert!(AllowedHosts::parse(Some("*"), "127.0.0.1").unwrap().any());
    }

    #[test]
    fn a_list_allows_its_names_their_wildcards_and_addresses() {
        let h = AllowedHosts::parse(
            Some("leviathan.example.com, *.svc.cluster.local,Console.Internal."),
            "0.0.0.0",
        )
        .unwrap();
        for ok in [
            "leviathan.example.com",
            "leviathan.example.com:443",
            "svc.cluster.local",
            "leviathan.prod.svc.cluster.local:8000",
            "console.internal",
            "192.168.1.1:8000",
            "[2001:db8::1]:8000",
        ] {
            assert!(h.allows(ok), "refused {ok}");
        }
        for bad in [
            "localhost",
            "example.com",
            "x.leviathan.example.com",
            "evilsvc.cluster.local",
        ] {
            assert!(!h.allows(bad), "allowed {bad}");
        }
    }

    #[test]
    fn bad_lists_are_refused_with_the_entry() {
        for (setting, says) in [
            ("*,example.com", "cannot be combined"),
            ("example.com,,b", "empty entry"),
            ("example.com:8000", "without a scheme or port"),
            ("https://example.com", "without a scheme or port"),
            ("ex ample.com", "' '"),
            ("*example.com", "'*'"),
            ("*.", "lone"),
        ] {
            let e = AllowedHosts::parse(Some(setting), "0.0.0.0").unwrap_err();
            assert!(e.contains(says), "{setting}: {e}");
        }
    }
}
