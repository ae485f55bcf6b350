//! What a request must pass before any handler sees it (docs/api.md,
//! "Security"): the `Host` it names, the `Origin` it comes from, the bearer
//! token, and the content type of its body.
//!
//! `weir serve` usually runs on a person's own machine, where every web page
//! they open can send requests to 127.0.0.1. A page may send a `text/plain`
//! POST without a CORS preflight, and a name the attacker rebinds to
//! 127.0.0.1 lets it read the answers. A browser cannot forge `Host` or
//! `Origin`, and cannot send `application/json` or `application/wasm`
//! cross-site without a preflight this server never grants, so checking the
//! three closes both holes; the token closes them for every other client.

use std::net::IpAddr;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::error::ApiError;
use super::routes::Shared;

/// The checks' settings, fixed at start.
#[derive(Debug, Clone)]
pub struct Guard {
    /// Host names (lower case, no port) accepted besides the loopback ones
    /// and the bound address: `--allow-host`.
    allowed_hosts: Vec<String>,
    /// The address the server is bound to.
    bound: IpAddr,
    /// `https` with TLS, else `http`: what a same-origin `Origin` starts with.
    scheme: &'static str,
    /// SHA-256 of the token. Comparing digests takes the same time whatever
    /// the token's length, so timing reveals neither its length nor a prefix.
    token_digest: Option<[u8; 32]>,
}

/// Why a request is refused before its handler.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    Host(String),
    Origin(String),
    Token(&'static str),
    ContentType(String),
}

impl Guard {
    pub fn new(bound: IpAddr, allowed_hosts: &[String], tls: bool, token: Option<&str>) -> Self {
        Guard {
            allowed_hosts: allowed_hosts.iter().map(|h| normalize_host(h)).collect(),
            bound,
            scheme: if tls { "https" } else { "http" },
            token_digest: token.map(digest),
        }
    }

    /// `Host`: a loopback name or address, the bound address, any address
    /// literal when bound to all interfaces (an address literal cannot be
    /// rebound: only a name can), or a name given with `--allow-host`. A
    /// request without `Host` (HTTP/1.0, a hand-made request) passes: every
    /// browser sends one.
    fn check_host(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        let Some(value) = headers.get(header::HOST) else {
            return Ok(());
        };
        let refuse = |why: &str| {
            Refusal::Host(format!(
                "Host {:?} {why}; this server answers to loopback names, its own address{} (start it with --allow-host NAME to add one)",
                String::from_utf8_lossy(value.as_bytes()),
                if self.allowed_hosts.is_empty() {
                    String::new()
                } else {
                    format!(" and {}", self.allowed_hosts.join(", "))
                }
            ))
        };
        let host = value
            .to_str()
            .ok()
            .and_then(|v| v.parse::<axum::http::uri::Authority>().ok())
            .ok_or_else(|| refuse("is not a valid host"))?;
        let name = normalize_host(host.host());
        let allowed = match name.parse::<IpAddr>() {
            Ok(ip) => ip.is_loopback() || ip == self.bound || self.bound.is_unspecified(),
            Err(_) => name == "localhost" || self.allowed_hosts.contains(&name),
        };
        if allowed {
            Ok(())
        } else {
            Err(refuse("is not a name of this server"))
        }
    }

    /// `Origin` (and `Sec-Fetch-Site`, which browsers send even on simple
    /// GETs): absent, as from curl and the CLI, or this very server. A page
    /// of any other origin, `localhost` on another port included, is
    /// refused.
    fn check_origin(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        if let Some(site) = headers.get("sec-fetch-site")
            && !matches!(site.as_bytes(), b"same-origin" | b"none")
        {
            return Err(Refusal::Origin(format!(
                "a {} request from a web page is refused: this API takes no requests from other sites",
                String::from_utf8_lossy(site.as_bytes())
            )));
        }
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Ok(());
        };
        let same = headers.get(header::HOST).is_some_and(|host| {
            let expected = format!(
                "{}://{}",
                self.scheme,
                String::from_utf8_lossy(host.as_bytes())
            );
            origin.as_bytes().eq_ignore_ascii_case(expected.as_bytes())
        });
        if same {
            Ok(())
        } else {
            Err(Refusal::Origin(format!(
                "requests from origin {:?} are refused: this API takes requests only from clients that send no Origin (the CLI, curl) or from its own origin",
                String::from_utf8_lossy(origin.as_bytes())
            )))
        }
    }

    fn check_token(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        let Some(expected) = &self.token_digest else {
            return Ok(());
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(Refusal::Token(
                "this server needs `Authorization: Bearer <token>`",
            ))?;
        if digests_equal(&digest(given), expected) {
            Ok(())
        } else {
            Err(Refusal::Token("wrong token"))
        }
    }
}

impl Refusal {
    fn into_error(self) -> ApiError {
        match self {
            Refusal::Host(detail) => ApiError::MisdirectedRequest(detail),
            Refusal::Origin(detail) => ApiError::Forbidden(detail),
            Refusal::Token(detail) => ApiError::Unauthorized(detail.into()),
            Refusal::ContentType(detail) => ApiError::UnsupportedMediaType(detail),
        }
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Compares every byte whatever the first difference, so timing does not
/// reveal how much of a guess was right.
fn digests_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A host name as compared: lower case, without the brackets of an IPv6
/// literal or a trailing dot.
fn normalize_host(host: &str) -> String {
    let host = host.strip_suffix('.').unwrap_or(host);
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
        .to_ascii_lowercase()
}

const WASM_TYPES: &[&str] = &["application/wasm", "application/octet-stream"];
const EVENT_TYPES: &[&str] = &["application/x-ndjson", "application/json"];
const JSON_TYPES: &[&str] = &["application/json"];

/// The content types a route takes for its body, or `None` for a route
/// whose body is not read.
fn accepted_types(method: &Method, path: &str) -> Option<&'static [&'static str]> {
    if *method == Method::POST && path == "/v1/plugins" {
        Some(WASM_TYPES)
    } else if *method == Method::POST
        && path.starts_with("/v1/pipelines/")
        && path.ends_with("/events")
    {
        Some(EVENT_TYPES)
    } else if matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
        Some(JSON_TYPES)
    } else {
        None
    }
}

/// Whether the request carries a body: an empty one needs no type.
fn has_body(headers: &HeaderMap) -> bool {
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match length {
        Some(length) => length > 0,
        None => headers.contains_key(header::TRANSFER_ENCODING),
    }
}

fn check_content_type(method: &Method, path: &str, headers: &HeaderMap) -> Result<(), Refusal> {
    let Some(accepted) = accepted_types(method, path) else {
        return Ok(());
    };
    if !has_body(headers) {
        return Ok(());
    }
    let given = headers.get(header::CONTENT_TYPE);
    // The media type without its parameters (`; charset=utf-8`).
    let essence = given
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    if essence.is_some_and(|e| accepted.contains(&e.as_str())) {
        return Ok(());
    }
    let given = match given {
        Some(v) => format!("Content-Type {:?}", String::from_utf8_lossy(v.as_bytes())),
        None => "no Content-Type".to_owned(),
    };
    Err(Refusal::ContentType(format!(
        "{method} {path} takes a body of type {}; the request has {given}",
        accepted.join(" or ")
    )))
}

/// `Host` and `Origin`, on every route (`/healthz` and unknown paths too).
pub async fn check_site(State(state): Shared, request: Request, next: Next) -> Response {
    let headers = request.headers();
    if let Err(refusal) = state
        .guard
        .check_host(headers)
        .and_then(|()| state.guard.check_origin(headers))
    {
        return refuse(refusal);
    }
    next.run(request).await
}

/// The token, on every API route.
pub async fn authorize(State(state): Shared, request: Request, next: Next) -> Response {
    if let Err(refusal) = state.guard.check_token(request.headers()) {
        return refuse(refusal);
    }
    next.run(request).await
}

/// The content type of a body, on every API route.
pub async fn require_content_type(request: Request, next: Next) -> Response {
    let checked = check_content_type(request.method(), request.uri().path(), request.headers());
    if let Err(refusal) = checked {
        return refuse(refusal);
    }
    next.run(request).await
}

/// A refusal that leaves the request body unread. The server then closes
/// the connection; saying so keeps a client from sending its next request
/// down a connection that is going away (seen as "peer disconnected").
fn refuse(refusal: Refusal) -> Response {
    let mut response = refusal.into_error().into_response();
    let close = HeaderValue::from_static("close");
    response.headers_mut().insert(header::CONNECTION, close);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    fn loopback_guard() -> Guard {
        Guard::new("127.0.0.1".parse().unwrap(), &[], false, Some("secret"))
    }

    #[test]
    fn loopback_names_and_the_bound_address_are_accepted_hosts() {
        let guard = loopback_guard();
        for host in [
            "127.0.0.1:7070",
            "localhost:7070",
            "LOCALHOST",
            "[::1]:7070",
            "localhost.",
        ] {
            assert_eq!(
                guard.check_host(&headers(&[("host", host)])),
                Ok(()),
                "{host}"
            );
        }
        assert_eq!(guard.check_host(&HeaderMap::new()), Ok(()));
    }

    #[test]
    fn a_rebound_name_is_not_an_accepted_host_unless_allowed() {
        let guard = loopback_guard();
        let rebound = headers(&[("host", "attacker.example:7070")]);
        assert!(
            matches!(guard.check_host(&rebound), Err(Refusal::Host(d)) if d.contains("--allow-host"))
        );
        let allowed = Guard::new(
            "127.0.0.1".parse().unwrap(),
            &["Weir.Internal".into()],
            false,
            None,
        );
        assert_eq!(
            allowed.check_host(&headers(&[("host", "weir.internal:7070")])),
            Ok(())
        );
        assert!(allowed.check_host(&rebound).is_err());
    }

    #[test]
    fn any_address_literal_is_an_accepted_host_when_bound_to_all_interfaces() {
        let guard = Guard::new("0.0.0.0".parse().unwrap(), &[], false, Some("t"));
        assert_eq!(
            guard.check_host(&headers(&[("host", "10.1.2.3:7070")])),
            Ok(())
        );
        assert!(
            guard
                .check_host(&headers(&[("host", "evil.example")]))
                .is_err()
        );
        let bound = Guard::new("10.1.2.3".parse().unwrap(), &[], false, Some("t"));
        assert_eq!(
            bound.check_host(&headers(&[("host", "10.1.2.3:7070")])),
            Ok(())
        );
        assert!(
            bound
                .check_host(&headers(&[("host", "10.9.9.9:7070")]))
                .is_err()
        );
    }

    #[test]
    fn only_a_missing_or_same_origin_is_accepted() {
        let guard = loopback_guard();
        assert_eq!(
            guard.check_origin(&headers(&[("host", "127.0.0.1:7070")])),
            Ok(())
        );
        let same = headers(&[
            ("host", "127.0.0.1:7070"),
            ("origin", "http://127.0.0.1:7070"),
        ]);
        assert_eq!(guard.check_origin(&same), Ok(()));
        for origin in [
            "http://localhost:3000",
            "https://127.0.0.1:7070",
            "null",
            "http://evil.example",
        ] {
            let foreign = headers(&[("host", "127.0.0.1:7070"), ("origin", origin)]);
            assert!(
                matches!(guard.check_origin(&foreign), Err(Refusal::Origin(_))),
                "{origin}"
            );
        }
        let cross = headers(&[("host", "127.0.0.1:7070"), ("sec-fetch-site", "cross-site")]);
        assert!(guard.check_origin(&cross).is_err());
        let typed = headers(&[("sec-fetch-site", "none")]);
        assert_eq!(guard.check_origin(&typed), Ok(()));
    }

    #[test]
    fn the_token_must_match_whole() {
        let guard = loopback_guard();
        let with = |t: &str| headers(&[("authorization", format!("Bearer {t}").as_str())]);
        assert_eq!(guard.check_token(&with("secret")), Ok(()));
        for wrong in ["secreT", "secret2", "secre", ""] {
            assert_eq!(
                guard.check_token(&with(wrong)),
                Err(Refusal::Token("wrong token"))
            );
        }
        assert!(guard.check_token(&HeaderMap::new()).is_err());
        let open = Guard::new("127.0.0.1".parse().unwrap(), &[], false, None);
        assert_eq!(open.check_token(&HeaderMap::new()), Ok(()));
    }

    #[test]
    fn a_body_must_carry_a_content_type_its_route_takes() {
        let json = headers(&[
            ("content-length", "2"),
            ("content-type", "application/json; charset=utf-8"),
        ]);
        let plain = headers(&[("content-length", "2"), ("content-type", "text/plain")]);
        let untyped = headers(&[("content-length", "2")]);
        let empty = headers(&[("content-length", "0")]);
        let post = Method::POST;
        assert_eq!(check_content_type(&post, "/v1/pipelines", &json), Ok(()));
        assert_eq!(
            check_content_type(&post, "/v1/pipelines/p/stop", &empty),
            Ok(())
        );
        let refused = check_content_type(&post, "/v1/pipelines", &plain).unwrap_err();
        assert_eq!(
            refused,
            Refusal::ContentType(
                "POST /v1/pipelines takes a body of type application/json; the request has Content-Type \"text/plain\"".into()
            )
        );
        assert!(check_content_type(&post, "/v1/pipelines", &untyped).is_err());
        assert!(check_content_type(&post, "/v1/plugins", &json).is_err());
        let wasm = headers(&[
            ("content-length", "2"),
            ("content-type", "application/wasm"),
        ]);
        assert_eq!(check_content_type(&post, "/v1/plugins", &wasm), Ok(()));
        let ndjson = headers(&[
            ("transfer-encoding", "chunked"),
            ("content-type", "application/x-ndjson"),
        ]);
        assert_eq!(
            check_content_type(&post, "/v1/pipelines/p/events", &ndjson),
            Ok(())
        );
        assert!(check_content_type(&Method::PUT, "/v1/pipelines/p/plugin", &ndjson).is_err());
        assert_eq!(
            check_content_type(&Method::GET, "/v1/plugins", &plain),
            Ok(())
        );
    }
}
