//! One HTTP/1.1 POST to a callback URL, over TCP or TLS (rustls with the
//! ring provider, roots from the system bundle plus an optional extra CA
//! file). Written on hyper and tokio-rustls directly: the workspace's HTTP
//! client is built without a TLS backend.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

/// Where Debian keeps the system's trusted roots.
const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Posts callbacks; one per duty holder.
pub struct Poster {
    tls: Arc<ClientConfig>,
    timeout: Duration,
}

impl Poster {
    /// Trusts the system's roots and, if given, the CA certificates in
    /// `extra_ca` (PEM), e.g. a private CA of the tenants' receivers.
    pub fn new(extra_ca: Option<&Path>, timeout: Duration) -> Result<Poster, String> {
        let mut roots = RootCertStore::empty();
        let mut add = |path: &Path, must: bool| -> Result<(), String> {
            let certs = match CertificateDer::pem_file_iter(path) {
                Ok(c) => c,
                // A machine without the bundle still reaches receivers
                // whose CA is given explicitly.
                Err(_) if !must => return Ok(()),
                Err(e) => return Err(format!("{}: {e}", path.display())),
            };
            for c in certs.flatten() {
                // One malformed root must not lose the others.
                let _ = roots.add(c);
            }
            Ok(())
        };
        add(Path::new(SYSTEM_ROOTS), false)?;
        if let Some(p) = extra_ca {
            add(p, true)?;
        }
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let tls = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Poster {
            tls: Arc::new(tls),
            timeout,
        })
    }

    /// POSTs `body` to `url` with `headers`; the status, or what failed.
    pub async fn post(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<u16, String> {
        tokio::time::timeout(self.timeout, self.post_inner(url, headers, body))
            .await
            .map_err(|_| format!("no answer within {:?}", self.timeout))?
    }

    async fn post_inner(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<u16, String> {
        let u = reqwest::Url::parse(url).map_err(|e| format!("bad URL: {e}"))?;
        let host = u.host_str().ok_or("the URL has no host")?;
        let port = u.port_or_known_default().ok_or("the URL has no port")?;
        // `[::1]` as the URL writes it; `::1` to connect and to verify.
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let tcp = tokio::net::TcpStream::connect((bare, port))
            .await
            .map_err(|e| format!("connect to {host}:{port}: {e}"))?;
        let authority = match u.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        let target = match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_string(),
        };
        let mut req = hyper::Request::post(target).header(hyper::header::HOST, authority);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("cannot build the request: {e}"))?;
        match u.scheme() {
            "https" => {
                let name = ServerName::try_from(bare.to_string())
                    .map_err(|e| format!("bad TLS server name {bare:?}: {e}"))?;
                let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS with {host}: {e}"))?;
                exchange(tls, req).await
            }
            "http" => exchange(tcp, req).await,
            other => Err(format!("scheme {other:?} is not http or https")),
        }
    }
}

/// One request on a fresh HTTP/1.1 connection over `io`.
async fn exchange<S>(io: S, req: hyper::Request<Full<Bytes>>) -> Result<u16, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = sender.send_request(req).await;
    conn.abort();
    resp.map(|r| r.status().as_u16())
        .map_err(|e| format!("HTTP exchange: {e}"))
}
