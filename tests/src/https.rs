//! A mutual-TLS HTTP client for the tests that need to hold one connection open across several
//! requests (keep-alive, HTTP/2): what curl and the CLI cannot show.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// One answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

/// One HTTPS connection to the appliance.
pub struct Conn {
    rt: tokio::runtime::Runtime,
    sender: Sender,
    driver: tokio::task::JoinHandle<()>,
    authority: String,
}

/// TLS client configuration: trust `root_pem`, authenticate with `cert_pem` + `key_pem`.
pub fn client_config(
    root_pem: &Path,
    credential: Option<(&Path, &Path)>,
    alpn: &[u8],
) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(root_pem).expect("root PEM") {
        roots.add(c.expect("root certificate")).expect("root");
    }
    let b = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let mut cfg = match credential {
        Some((cert, key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .expect("certificate PEM")
                .map(|c| c.expect("certificate"))
                .collect();
            let key = PrivateKeyDer::from_pem_file(key).expect("key PEM");
            b.with_client_auth_cert(chain, key)
                .expect("client credential")
        }
        None => b.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![alpn.to_vec()];
    Arc::new(cfg)
}

impl Conn {
    /// Connects to `addr` (`127.0.0.1:port`), presenting `credential` (certificate chain PEM,
    /// key PEM) if any; `h2` selects HTTP/2 by ALPN, otherwise HTTP/1.1.
    pub fn open(
        addr: &str,
        root_pem: &Path,
        credential: Option<(&Path, &Path)>,
        h2: bool,
    ) -> Result<Conn, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let alpn: &[u8] = if h2 { b"h2" } else { b"http/1.1" };
        let cfg = client_config(root_pem, credential, alpn);
        let (sender, driver) = rt.block_on(async {
            let tcp = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| format!("connect {addr}: {e}"))?;
            let tls = tokio_rustls::TlsConnector::from(cfg)
                .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            let io = hyper_util::rt::TokioIo::new(tls);
            if h2 {
                let (s, c) =
                    hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                        .await
                        .map_err(|e| format!("h2: {e}"))?;
                let d = tokio::spawn(async move {
                    let _ = c.await;
                });
                Ok::<_, String>((Sender::H2(s), d))
            } else {
                let (s, c) = hyper::client::conn::http1::handshake(io)
                    .await
                    .map_err(|e| format!("h1: {e}"))?;
                let d = tokio::spawn(async move {
                    let _ = c.await;
                });
                Ok((Sender::H1(s), d))
            }
        })?;
        Ok(Conn {
            rt,
            sender,
            driver,
            authority: addr.to_owned(),
        })
    }

    /// Sends one request on this connection; `Err` when the connection is closed.
    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Answer, String> {
        let mut b = hyper::Request::builder().method(method);
        b = match self.sender {
            Sender::H1(_) => b.uri(path).header("host", &self.authority),
            Sender::H2(_) => b.uri(format!("https://{}{path}", self.authority)),
        };
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b
            .body(Full::new(Bytes::copy_from_slice(body)))
            .map_err(|e| e.to_string())?;
        let sender = &mut self.sender;
        self.rt.block_on(async move {
            let resp = tokio::time::timeout(Duration::from_secs(30), async {
                match sender {
                    Sender::H1(s) => {
                        s.ready().await.map_err(|e| e.to_string())?;
                        s.send_request(req).await.map_err(|e| e.to_string())
                    }
                    Sender::H2(s) => {
                        s.ready().await.map_err(|e| e.to_string())?;
                        s.send_request(req).await.map_err(|e| e.to_string())
                    }
                }
            })
            .await
            .map_err(|_| "timed out".to_string())??;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes()
                .to_vec();
            Ok(Answer {
                status,
                headers,
                body,
            })
        })
    }

    /// Whether the server has closed the connection (waits up to `within`).
    pub fn closed_within(&mut self, within: Duration) -> bool {
        let deadline = std::time::Instant::now() + within;
        loop {
            if self.driver.is_finished() {
                return true;
            }
            let closed = match &self.sender {
                Sender::H1(s) => s.is_closed(),
                Sender::H2(s) => s.is_closed(),
            };
            if closed {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            self.rt
                .block_on(async { tokio::time::sleep(Duration::from_millis(20)).await });
        }
    }
}
