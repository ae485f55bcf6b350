//! How `weir serve` meets the network (docs/api.md, "Security"): the flags
//! that decide who may talk to it (token, allowed hosts, TLS), the refusal
//! to start exposed without a token, and the accept loop. The loop is ours
//! rather than `axum::serve` because that one has no header-read timeout,
//! no idle timeout and no connection cap: HTTP/1 over hyper, plain or TLS
//! (rustls), at most `--max-connections` at once, each closed when a request
//! head takes longer than `--header-timeout` to arrive (which also bounds
//! how long a kept-alive connection may sit idle).

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::http_guard::Guard;

/// Connections served at once; more wait in the kernel's accept queue.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// Seconds a connection may take to send a request head (and may sit idle
/// between requests).
pub const DEFAULT_HEADER_TIMEOUT_S: u64 = 30;

/// The flags of `weir serve` about its HTTP side.
#[derive(clap::Args, Debug, Clone)]
pub struct HttpArgs {
    /// A file holding the bearer token that every route but /healthz then
    /// requires (`Authorization: Bearer <token>`); surrounding whitespace is
    /// ignored. The token may instead come from the environment variable
    /// WEIR_TOKEN. It is never taken on the command line, where every user
    /// of the machine can read it (ps).
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// Refused: a command line is visible to every user of the machine.
    #[arg(long, hide = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Serve on an address other than loopback without a token. Anyone who
    /// can reach the address can then upload and run code.
    #[arg(long)]
    pub insecure: bool,
    /// A host name this server also answers to (the `Host` header), besides
    /// loopback names and the address it is bound to; repeatable. Any other
    /// name is refused (421), which stops DNS rebinding.
    #[arg(long = "allow-host", value_name = "NAME")]
    pub allow_hosts: Vec<String>,
    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Seconds a connection has to send a request's head, counted from when
    /// it opens or its previous answer was sent; then it is closed.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_HEADER_TIMEOUT_S,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub header_timeout: u64,
    /// Connections served at once; further ones wait to be accepted.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CONNECTIONS,
          value_parser = parse_max_connections)]
    pub max_connections: usize,
}

fn parse_max_connections(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if (1..=65_536).contains(&n) => Ok(n),
        _ => Err("a number of connections from 1 to 65536".to_owned()),
    }
}

/// Why `weir serve` refuses to start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "--token is not accepted: a command line is readable by every user of the machine (ps); put the token in a file and pass --token-file PATH, or set WEIR_TOKEN"
    )]
    TokenOnCommandLine,
    #[error("cannot read the token file {path}")]
    TokenFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the token file {0} is empty")]
    EmptyTokenFile(PathBuf),
    #[error("both --token-file and WEIR_TOKEN give a token; keep one")]
    TwoTokens,
    #[error(
        "refusing to serve on {0} without a token: anyone who can reach it could upload and run code. Give a token (--token-file PATH or WEIR_TOKEN), or pass --insecure to serve without one"
    )]
    ExposedWithoutToken(SocketAddr),
    #[error("cannot read the TLS {what} {path}: {detail}")]
    Tls {
        what: &'static str,
        path: PathBuf,
        detail: String,
    },
}

/// `HttpArgs`, checked and loaded.
pub struct HttpSettings {
    pub token: Option<String>,
    pub tls: Option<TlsAcceptor>,
    pub header_timeout: Duration,
    pub max_connections: usize,
    allowed_hosts: Vec<String>,
}

impl HttpSettings {
    /// Reads the token and the TLS files; refuses an exposed bind without a
    /// token. `env_token` is WEIR_TOKEN's value.
    pub fn load(
        args: &HttpArgs,
        addr: SocketAddr,
        env_token: Option<String>,
    ) -> Result<Self, StartError> {
        if args.token.is_some() {
            return Err(StartError::TokenOnCommandLine);
        }
        let env_token = env_token.filter(|t| !t.trim().is_empty());
        let token = match (&args.token_file, env_token) {
            (Some(_), Some(_)) => return Err(StartError::TwoTokens),
            (Some(path), None) => Some(read_token_file(path)?),
            (None, token) => token.map(|t| t.trim().to_owned()),
        };
        if token.is_none() && !addr.ip().is_loopback() && !args.insecure {
            return Err(StartError::ExposedWithoutToken(addr));
        }
        let tls = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some(tls_acceptor(cert, key)?),
            _ => None,
        };
        Ok(HttpSettings {
            token,
            tls,
            header_timeout: Duration::from_secs(args.header_timeout),
            max_connections: args.max_connections,
            allowed_hosts: args.allow_hosts.clone(),
        })
    }

    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// The request checks for a server bound to `bound`.
    pub fn guard(&self, bound: IpAddr) -> Guard {
        Guard::new(
            bound,
            &self.allowed_hosts,
            self.tls.is_some(),
            self.token.as_deref(),
        )
    }
}

fn read_token_file(path: &Path) -> Result<String, StartError> {
    let text = std::fs::read_to_string(path).map_err(|source| StartError::TokenFile {
        path: path.to_owned(),
        source,
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(StartError::EmptyTokenFile(path.to_owned()));
    }
    Ok(token.to_owned())
}

fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, StartError> {
    let tls_error = |what, path: &Path, detail: String| StartError::Tls {
        what,
        path: path.to_owned(),
        detail,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| tls_error("certificate", cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(tls_error(
            "certificate",
            cert,
            "no certificate in it".into(),
        ));
    }
    let private_key =
        PrivateKeyDer::from_pem_file(key).map_err(|e| tls_error("key", key, e.to_string()))?;
    // ring, explicitly, rather than a process default that another crate
    // could change. rustls deprecates it for lacking post-quantum key
    // exchange; aws-lc-rs, which has it, needs cmake and minutes to build.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, private_key))
        .map_err(|e| tls_error("certificate and key", cert, e.to_string()))?;
    // The server speaks HTTP/1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serves `app` on `listener` until `shutdown` completes, then waits (a
/// while) for the requests in flight to be answered.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    settings: &HttpSettings,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(settings.header_timeout);
    tokio::pin!(shutdown);
    loop {
        // A slot first, so that connections past the cap wait in the
        // kernel's queue instead of costing a task and buffers here.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, say: wait rather than spin.
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let watcher = graceful.watcher();
        let http = http.clone();
        let tls = settings.tls.clone();
        let handshake_limit = settings.header_timeout;
        tokio::spawn(async move {
            let _slot = slot;
            match tls {
                None => {
                    let connection = http.serve_connection(TokioIo::new(stream), service);
                    finish(watcher.watch(connection).await);
                }
                Some(acceptor) => {
                    // The handshake is bounded like a request head.
                    match tokio::time::timeout(handshake_limit, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let connection = http.serve_connection(TokioIo::new(stream), service);
                            finish(watcher.watch(connection).await);
                        }
                        Ok(Err(e)) => tracing::debug!("TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    // Requests in flight get a while to be answered; a long one (a swap
    // waiting for its stream) must not hold the shutdown for minutes.
    if tokio::time::timeout(DRAIN_LIMIT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "requests still in flight after {} s: stopping without them",
            DRAIN_LIMIT.as_secs()
        );
    }
}

/// The longest a shutdown waits for requests in flight.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// A connection's end: a client that went away or was too slow is routine.
fn finish(result: Result<(), hyper::Error>) {
    if let Err(e) = result {
        tracing::debug!("connection ended: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> HttpArgs {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            http: HttpArgs,
        }
        let mut argv = vec!["weir"];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).expect("valid flags").http
    }

    fn load(extra: &[&str], addr: &str, env: Option<&str>) -> Result<HttpSettings, StartError> {
        HttpSettings::load(&args(extra), addr.parse().unwrap(), env.map(str::to_owned))
    }

    #[test]
    fn an_exposed_bind_without_a_token_refuses_to_start() {
        let error = load(&[], "0.0.0.0:7070", None).err().unwrap();
        assert!(
            matches!(error, StartError::ExposedWithoutToken(_)),
            "{error}"
        );
        assert!(load(&["--insecure"], "0.0.0.0:7070", None).is_ok());
        assert!(load(&[], "0.0.0.0:7070", Some("t")).is_ok());
        assert!(load(&[], "127.0.0.1:7070", None).is_ok());
        assert!(load(&[], "[::1]:7070", None).is_ok());
    }

    #[test]
    fn a_token_on_the_command_line_is_refused() {
        let error = load(&["--token", "s3cret"], "127.0.0.1:7070", None)
            .err()
            .unwrap();
        assert!(matches!(error, StartError::TokenOnCommandLine));
        assert!(error.to_string().contains("--token-file"));
    }

    #[test]
    fn the_token_comes_from_a_file_or_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "s3cret\n").unwrap();
        let path = file.to_str().unwrap();
        let settings = load(&["--token-file", path], "127.0.0.1:7070", None).unwrap();
        assert_eq!(settings.token.as_deref(), Some("s3cret"));
        let settings = load(&[], "127.0.0.1:7070", Some("t0ken")).unwrap();
        assert_eq!(settings.token.as_deref(), Some("t0ken"));
        assert!(matches!(
            load(&["--token-file", path], "127.0.0.1:7070", Some("t")).err(),
            Some(StartError::TwoTokens)
        ));
        std::fs::write(&file, " \n").unwrap();
        assert!(matches!(
            load(&["--token-file", path], "127.0.0.1:7070", None).err(),
            Some(StartError::EmptyTokenFile(_))
        ));
    }

    #[test]
    fn a_tls_certificate_needs_its_key() {
        use clap::Parser;
        #[derive(clap::Parser, Debug)]
        struct Cli {
            #[command(flatten)]
            _http: HttpArgs,
        }
        assert!(Cli::try_parse_from(["weir", "--tls-cert", "c.pem"]).is_err());
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let missing = missing.to_str().unwrap();
        let error = load(
            &["--tls-cert", missing, "--tls-key", missing],
            "127.0.0.1:0",
            None,
        )
        .err()
        .unwrap();
        assert!(
            error
                .to_string()
                .contains("cannot read the TLS certificate"),
            "{error}"
        );
    }
}
