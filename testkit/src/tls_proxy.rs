//! A TLS terminator on 127.0.0.1 with a fresh self-signed certificate, forwarding bytes
//! to a plain upstream (the test gateway): `wss://` and certificate pinning tested against
//! the real gateway without a CA.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Result;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// Stops accepting when dropped.
pub struct TlsProxy {
    addr: SocketAddr,
    fingerprint: [u8; 32],
    task: tokio::task::JoinHandle<()>,
}

impl TlsProxy {
    /// Listens on a free loopback port and forwards every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Result<TlsProxy> {
        let cert =
            rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])?;
        let der: CertificateDer<'static> = cert.cert.der().clone();
        let fingerprint: [u8; 32] = Sha256::digest(der.as_ref()).into();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(vec![der], key)?;
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A client that refuses our certificate ends here: nothing to forward.
                    let Ok(mut tls) = acceptor.accept(sock).await else {
                        return;
                    };
                    let Ok(mut up) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
                });
            }
        });
        Ok(TlsProxy {
            addr,
            fingerprint,
            task,
        })
    }

    /// `wss://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("wss://{}", self.addr)
    }

    /// SHA-256 of the certificate's DER, as `gateway.tls_fingerprint` takes it.
    pub fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
