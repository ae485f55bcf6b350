//! The CLI's HTTP client of `weir serve` (docs/api.md): one request, one
//! JSON answer. It owns turning transport failures and the server's
//! `{"error", "detail"}` bodies into errors a person can act on; it knows no
//! routes beyond the path it is handed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

/// Where the server is and how to authenticate, shared by every client command.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct ServerArgs {
    /// The `weir serve` to talk to.
    #[arg(
        long,
        env = "WEIR_SERVER",
        default_value = "http://127.0.0.1:7070",
        value_name = "URL"
    )]
    server: String,
    /// Bearer token, when the server was started with one. Prefer
    /// WEIR_TOKEN or --token-file: a command line is visible to every user
    /// of the machine (ps).
    #[arg(long, env = "WEIR_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A file holding the bearer token (surrounding whitespace ignored);
    /// it wins over --token and WEIR_TOKEN.
    #[arg(long, env = "WEIR_TOKEN_FILE", value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// Trust this CA certificate (PEM) for an https:// server, e.g. the
    /// self-signed certificate the server was started with; without it, the
    /// usual public roots.
    #[arg(long, env = "WEIR_CA_CERT", value_name = "PATH")]
    ca_cert: Option<PathBuf>,
}

/// Why a request gave no usable answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    #[error("cannot reach the weir server at {base} (is `weir serve` running?)")]
    Unreachable {
        base: String,
        #[source]
        source: ureq::Error,
    },
    /// The server's own explanation: `detail` is written for the user.
    #[error("{detail} ({status})")]
    Api {
        status: u16,
        kind: String,
        detail: String,
    },
    #[error("{method} {url} failed")]
    Transport {
        method: &'static str,
        url: String,
        #[source]
        source: ureq::Error,
    },
    #[error("cannot read the {what} {path}: {detail}")]
    Setup {
        what: &'static str,
        path: PathBuf,
        detail: String,
    },
    #[error("{method} {url} answered {status} with a body that is not JSON")]
    NotJson {
        method: &'static str,
        url: String,
        status: u16,
        #[source]
        source: serde_json::Error,
    },
}

/// A request body.
pub(crate) enum Body<'a> {
    Empty,
    Json(&'a Value),
    Bytes {
        content_type: &'static str,
        bytes: &'a [u8],
    },
}

/// An answer of any status, before it is judged.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: u16,
    /// `Value::Null` for an empty body (`204`).
    pub body: Value,
    /// Seconds, from `Retry-After` (sent with `429`).
    pub retry_after: Option<u64>,
}

impl Reply {
    /// The body of a 2xx answer, or the server's error.
    pub fn into_result(self) -> Result<Value, ClientError> {
        if (200..300).contains(&self.status) {
            return Ok(self.body);
        }
        Err(api_error(self.status, &self.body))
    }
}

/// `{"error": kind, "detail": text}`, tolerating a body of another shape so
/// that a proxy's or an older server's answer still reads sensibly.
fn api_error(status: u16, body: &Value) -> ClientError {
    let text = |field: &str| body.get(field).and_then(Value::as_str).map(str::to_owned);
    let detail = text("detail")
        .or_else(|| body.as_str().map(str::to_owned))
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "the server gave no detail".to_owned());
    ClientError::Api {
        status,
        kind: text("error").unwrap_or_default(),
        detail,
    }
}

/// A client of one server.
pub(crate) struct Client {
    agent: ureq::Agent,
    base: String,
    token: Option<String>,
}

impl Client {
    pub fn new(args: &ServerArgs) -> Result<Self, ClientError> {
        let token = match &args.token_file {
            Some(path) => Some(read_token(path)?),
            None => args.token.clone(),
        };
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(path) = &args.ca_cert {
            tls = tls.root_certs(read_ca_certs(path)?);
        }
        let config = ureq::Agent::config_builder()
            .tls_config(tls.build())
            // 4xx/5xx carry the server's `detail`: read them, don't drop them.
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(5)))
            // No overall timeout: a swap, checkpoint or stop waits for the
            // stream for up to 10 min, and the server bounds every route.
            .timeout_global(None)
            .build();
        Ok(Client {
            agent: config.into(),
            base: args.server.trim_end_matches('/').to_owned(),
            token: token.filter(|t| !t.is_empty()),
        })
    }

    pub fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.send("GET", path, &[], Body::Empty)?.into_result()
    }

    pub fn post(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.send("POST", path, &[], Body::Json(body))?
            .into_result()
    }

    pub fn put(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.send("PUT", path, &[], Body::Json(body))?.into_result()
    }

    pub fn delete(&self, path: &str) -> Result<Value, ClientError> {
        self.send("DELETE", path, &[], Body::Empty)?.into_result()
    }

    /// Any request, answered with whatever status the server chose.
    pub fn send(
        &self,
        method: &'static str,
        path: &str,
        query: &[(&str, &str)],
        body: Body<'_>,
    ) -> Result<Reply, ClientError> {
        let url = format!("{}{path}", self.base);
        let result = match method {
            "GET" | "DELETE" => {
                let request = if method == "GET" {
                    self.agent.get(&url)
                } else {
                    self.agent.delete(&url)
                };
                self.authorize(request)
                    .query_pairs(query.iter().copied())
                    .call()
            }
            _ => {
                let request = match method {
                    "PUT" => self.agent.put(&url),
                    _ => self.agent.post(&url),
                };
                let request = self.authorize(request).query_pairs(query.iter().copied());
                match body {
                    Body::Empty => request.send_empty(),
                    Body::Json(value) => request.send_json(value),
                    Body::Bytes {
                        content_type,
                        bytes,
                    } => request.content_type(content_type).send(bytes),
                }
            }
        };
        let mut response = result.map_err(|source| self.transport_error(method, &url, source))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        let text = response
            .body_mut()
            .read_to_string()
            .map_err(|source| self.transport_error(method, &url, source))?;
        let body = if text.trim().is_empty() {
            Value::Null
        } else {
            match serde_json::from_str(&text) {
                Ok(body) => body,
                // A plain-text error (a proxy's, or `/healthz`'s `ok`) still
                // reaches the user as the detail.
                Err(_) if !(200..300).contains(&status) => Value::String(text.trim().to_owned()),
                Err(source) => {
                    return Err(ClientError::NotJson {
                        method,
                        url,
                        status,
                        source,
                    });
                }
            }
        };
        Ok(Reply {
            status,
            body,
            retry_after,
        })
    }

    fn authorize<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(token) => request.header("Authorization", format!("Bearer {token}")),
            None => request,
        }
    }

    fn transport_error(&self, method: &'static str, url: &str, source: ureq::Error) -> ClientError {
        if is_unreachable(&source) {
            return ClientError::Unreachable {
                base: self.base.clone(),
                source,
            };
        }
        ClientError::Transport {
            method,
            url: url.to_owned(),
            source,
        }
    }
}

fn read_token(path: &Path) -> Result<String, ClientError> {
    let text = std::fs::read_to_string(path).map_err(|e| ClientError::Setup {
        what: "token file",
        path: path.to_owned(),
        detail: e.to_string(),
    })?;
    Ok(text.trim().to_owned())
}

fn read_ca_certs(path: &Path) -> Result<ureq::tls::RootCerts, ClientError> {
    let setup = |detail: String| ClientError::Setup {
        what: "CA certificate",
        path: path.to_owned(),
        detail,
    };
    let pem = std::fs::read(path).map_err(|e| setup(e.to_string()))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        if let ureq::tls::PemItem::Certificate(cert) = item.map_err(|e| setup(e.to_string()))? {
            certs.push(cert);
        }
    }
    if certs.is_empty() {
        return Err(setup("no certificate in it".to_owned()));
    }
    Ok(ureq::tls::RootCerts::new_with_certs(&certs))
}

/// Nothing listens there (or the name does not resolve): the server is not
/// up, as opposed to a server that answered badly.
fn is_unreachable(error: &ureq::Error) -> bool {
    use std::io::ErrorKind;
    match error {
        ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => true,
        ureq::Error::Io(e) => matches!(
            e.kind(),
            ErrorKind::ConnectionRefused | ErrorKind::ConnectionReset | ErrorKind::AddrNotAvailable
        ),
        ureq::Error::Timeout(ureq::Timeout::Connect) => true,
        _ => false,
    }
}

/// One path segment (a pipeline name, a digest), percent-encoded.
pub(crate) fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn client(server: &str) -> Client {
        Client::new(&ServerArgs {
            server: server.to_owned(),
            token: None,
            token_file: None,
            ca_cert: None,
        })
        .unwrap()
    }

    #[test]
    fn a_server_that_is_not_running_gets_the_friendly_error() {
        // Bound then dropped: nothing listens on the port any more.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let base = format!("http://127.0.0.1:{port}");
        let error = client(&format!("{base}/")).get("/v1/plugins").unwrap_err();
        assert!(
            matches!(error, ClientError::Unreachable { .. }),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            format!("cannot reach the weir server at {base} (is `weir serve` running?)")
        );
    }

    #[test]
    fn an_error_body_becomes_its_detail_and_status() {
        let reply = Reply {
            status: 409,
            body: json!({"error": "conflict", "detail": "pipeline \"fraud\" exists"}),
            retry_after: None,
        };
        let error = reply.into_result().unwrap_err();
        assert_eq!(error.to_string(), "pipeline \"fraud\" exists (409)");
        assert!(matches!(error, ClientError::Api { ref kind, .. } if kind == "conflict"));
    }

    #[test]
    fn an_error_without_the_usual_shape_still_says_something() {
        let plain = Reply {
            status: 502,
            body: json!("Bad Gateway"),
            retry_after: None,
        };
        assert_eq!(
            plain.into_result().unwrap_err().to_string(),
            "Bad Gateway (502)"
        );
        let empty = Reply {
            status: 500,
            body: Value::Null,
            retry_after: None,
        };
        assert_eq!(
            empty.into_result().unwrap_err().to_string(),
            "the server gave no detail (500)"
        );
    }

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(segment("fraud-2.v_1~"), "fraud-2.v_1~");
        assert_eq!(segment("a b/c"), "a%20b%2Fc");
        assert_eq!(segment("é"), "%C3%A9");
    }
}
