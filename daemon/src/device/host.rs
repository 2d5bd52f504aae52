//! Which hosts the kiosk server answers to, and who may change its state.
//!
//! The server listens on loopback by default, but a page on any web site
//! the kiosk browser visits could still reach it through a name that
//! resolves to 127.0.0.1 (DNS rebinding), and any page can send it a
//! cross-site `POST`. So:
//!
//! - every request must name an allowed host (`Host`, or the authority of
//!   an absolute-form request target): `localhost`, an address in
//!   127.0.0.0/8, `[::1]`, a name or address given with `--serve-name`,
//!   or the address the server is bound to when that is a specific
//!   non-loopback one; any port. Anything else gets 403 naming the flag
//!   that would allow it.
//! - a request that may change state (any method but `GET`, `HEAD` and
//!   `OPTIONS`) is refused with 403 when it comes from another site: an
//!   `Origin` whose host is not allowed (or the opaque `null`), or
//!   `Sec-Fetch-Site: cross-site`. Clients that send neither (curl, the
//!   CLI) are not browsers, and pass.
//!
//! The decisions are pure ([`Hosts::check`]); [`guard`] applies them as
//! axum middleware.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The hosts a server answers to.
#[derive(Clone, Debug, Default)]
pub struct Hosts {
    names: Vec<String>,
    addrs: Vec<IpAddr>,
}

/// What to do with a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Answer it.
    Allow,
    /// It names a host that is not served (the host, or `None` when it
    /// names none).
    UnknownHost(Option<String>),
    /// It would change state on behalf of another site.
    CrossOrigin,
}

/// A host name or address with its port removed, in lower case, without a
/// trailing dot; IPv6 addresses without their brackets.
fn bare_host(authority: &str) -> String {
    let authority = authority.trim();
    let host = if let Some(rest) = authority.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        match authority.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => authority,
        }
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

impl Hosts {
    /// Loopback names, plus `serve_names` (names or addresses, a port is
    /// ignored), plus `bound` when it is a specific non-loopback address.
    pub fn new(serve_names: &[String], bound: IpAddr) -> Hosts {
        let mut hosts = Hosts::default();
        for name in serve_names {
            let bare = bare_host(name);
            match bare.parse::<IpAddr>() {
                Ok(ip) => hosts.addrs.push(ip),
                Err(_) if !bare.is_empty() => hosts.names.push(bare),
                Err(_) => {}
            }
        }
        if !bound.is_unspecified() && !bound.is_loopback() {
            hosts.addrs.push(bound);
        }
        hosts
    }

    /// Whether `authority` (`host[:port]`, as in a `Host` header) names a
    /// served host.
    pub fn allows(&self, authority: &str) -> bool {
        let host = bare_host(authority);
        match host.parse::<IpAddr>() {
            Ok(ip) => ip.is_loopback() || self.addrs.contains(&ip),
            Err(_) => host == "localhost" || self.names.contains(&host),
        }
    }

    /// Whether the serialized origin `origin` (`scheme://host[:port]`) is
    /// one of ours.
    fn allows_origin(&self, origin: &str) -> bool {
        match origin.trim().split_once("://") {
            Some((_, authority)) if !authority.is_empty() && !authority.contains('/') => {
                self.allows(authority)
            }
            _ => false,
        }
    }

    /// The verdict on a request with `method`, naming `host`, with the
    /// `Origin` and `Sec-Fetch-Site` headers it has.
    pub fn check(
        &self,
        method: &Method,
        host: Option<&str>,
        origin: Option<&str>,
        fetch_site: Option<&str>,
    ) -> Verdict {
        match host {
            Some(h) if self.allows(h) => {}
            Some(h) => return Verdict::UnknownHost(Some(bare_host(h))),
            None => return Verdict::UnknownHost(None),
        }
        let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
        if safe {
            return Verdict::Allow;
        }
        let cross_site = fetch_site.is_some_and(|s| s.trim().eq_ignore_ascii_case("cross-site"));
        let foreign_origin = origin.is_some_and(|o| !self.allows_origin(o));
        if cross_site || foreign_origin {
            Verdict::CrossOrigin
        } else {
            Verdict::Allow
        }
    }
}

/// Middleware: answers 403 to requests [`Hosts::check`] refuses.
pub async fn guard(State(hosts): State<Arc<Hosts>>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let host = match req.uri().authority() {
        Some(a) => Some(a.as_str()),
        None => text(header::HOST),
    };
    let verdict = hosts.check(
        req.method(),
        host,
        text(header::ORIGIN),
        text(header::HeaderName::from_static("sec-fetch-site")),
    );
    match verdict {
        Verdict::Allow => next.run(req).await,
        Verdict::UnknownHost(Some(h)) => {
            tracing::warn!(host = %h, "request for a host not served refused");
            let body = format!(
                "this kiosk server does not answer to host `{h}`; \
                 start `lanseed device` with `--serve-name {h}` to allow it\n"
            );
            (StatusCode::FORBIDDEN, body).into_response()
        }
        Verdict::UnknownHost(None) => (
            StatusCode::FORBIDDEN,
            "the request names no host; send a Host header\n",
        )
            .into_response(),
        Verdict::CrossOrigin => {
            tracing::warn!(method = %req.method(), path = %req.uri().path(), "cross-origin request refused");
            (
                StatusCode::FORBIDDEN,
                "cross-origin requests may not change this kiosk server's state\n",
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(names: &[&str], bound: &str) -> Hosts {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        Hosts::new(&names, bound.parse().unwrap())
    }

    #[test]
    fn loopback_names_are_allowed_on_any_port() {
        let h = hosts(&[], "127.0.0.1");
        for ok in [
            "localhost",
            "LOCALHOST:8787",
            "localhost.",
            "127.0.0.1",
            "127.0.0.1:8787",
            "127.3.2.1:1",
            "[::1]",
            "[::1]:8787",
        ] {
            assert!(h.allows(ok), "{ok}");
        }
        for refused in [
            "evil.example",
            "evil.example:8787",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
            "128.0.0.1",
            "0.0.0.0",
            "10.0.0.1:8787",
            "[::2]",
            "",
            "kiosk.local",
        ] {
            assert!(!h.allows(refused), "{refused}");
        }
    }

    #[test]
    fn serve_names_and_a_specific_bound_address_are_allowed() {
        let h = hosts(&["Kiosk.Local", "192.168.1.9", "[fe80::1]:80"], "10.0.0.5");
        for ok in [
            "kiosk.local:8787",
            "KIOSK.local",
            "192.168.1.9:8787",
            "[fe80::1]",
            "10.0.0.5:8787",
        ] {
            assert!(h.allows(ok), "{ok}");
        }
        assert!(!h.allows("other.local"));
        assert!(!h.allows("10.0.0.6"));
        // Bound to every address: none of them is allowed by that alone.
        let any = hosts(&[], "0.0.0.0");
        assert!(!any.allows("10.0.0.5"));
        assert!(any.allows("127.0.0.1"));
    }

    #[test]
    fn a_request_must_name_an_allowed_host() {
        let h = hosts(&[], "127.0.0.1");
        assert_eq!(
            h.check(&Method::GET, Some("127.0.0.1:8787"), None, None),
            Verdict::Allow
        );
        assert_eq!(
            h.check(&Method::GET, Some("Evil.Example:8787"), None, None),
            Verdict::UnknownHost(Some("evil.example".into()))
        );
        assert_eq!(
            h.check(&Method::GET, None, None, None),
            Verdict::UnknownHost(None)
        );
        // The host is checked before the origin.
        assert_eq!(
            h.check(
                &Method::POST,
                Some("evil.example"),
                Some("http://evil.example"),
                None
            ),
            Verdict::UnknownHost(Some("evil.example".into()))
        );
    }

    #[test]
    fn state_changes_from_other_sites_are_refused() {
        let h = hosts(&["kiosk.local"], "127.0.0.1");
        let post = |origin, site| h.check(&Method::POST, Some("127.0.0.1:8787"), origin, site);
        assert_eq!(post(None, None), Verdict::Allow);
        assert_eq!(post(Some("http://127.0.0.1:8787"), None), Verdict::Allow);
        assert_eq!(
            post(Some("http://localhost:8787"), Some("same-origin")),
            Verdict::Allow
        );
        assert_eq!(post(Some("http://kiosk.local:8787"), None), Verdict::Allow);
        assert_eq!(post(None, Some("none")), Verdict::Allow);
        assert_eq!(
            post(Some("http://evil.example"), None),
            Verdict::CrossOrigin
        );
        assert_eq!(post(Some("null"), None), Verdict::CrossOrigin);
        assert_eq!(post(Some("garbage"), None), Verdict::CrossOrigin);
        assert_eq!(post(None, Some("cross-site")), Verdict::CrossOrigin);
        assert_eq!(
            post(Some("http://127.0.0.1:8787"), Some("Cross-Site")),
            Verdict::CrossOrigin
        );
        for method in [Method::PUT, Method::DELETE, Method::PATCH] {
            assert_eq!(
                h.check(
                    &method,
                    Some("localhost"),
                    Some("https://evil.example"),
                    None
                ),
                Verdict::CrossOrigin
            );
        }
        // Reading is allowed from anywhere the host check lets through.
        assert_eq!(
            h.check(
                &Method::GET,
                Some("localhost"),
                Some("http://evil.example"),
                Some("cross-site")
            ),
            Verdict::Allow
        );
    }
}
