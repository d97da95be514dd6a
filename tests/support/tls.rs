//! Self-signed TLS identities (rcgen) for loopback backends, with the rustls acceptor that
//! serves them and an optional client-certificate requirement.

use std::sync::Arc;

use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A self-signed certificate (rcgen) for `names`, with rustls server and client pieces.
pub(crate) struct TlsIdentity {
    pub(crate) cert_pem: String,
    pub(crate) key_pem: String,
    pub(crate) cert_der: CertificateDer<'static>,
    key_der: Vec<u8>,
    /// When set, the server requires a client certificate signed by this one.
    pub(crate) client_ca: Option<CertificateDer<'static>>,
}

impl TlsIdentity {
    pub(crate) fn new(names: &[&str]) -> Self {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let ck = rcgen::generate_simple_self_signed(names).unwrap();
        Self {
            cert_pem: ck.cert.pem(),
            key_pem: ck.signing_key.serialize_pem(),
            cert_der: ck.cert.der().clone(),
            key_der: ck.signing_key.serialize_der(),
            client_ca: None,
        }
    }

    /// The same identity, serving only clients with a certificate signed by `ca`.
    pub(crate) fn requiring_client_cert(mut self, ca: &TlsIdentity) -> Self {
        self.client_ca = Some(ca.cert_der.clone());
        self
    }

    /// A server offering ALPN `h2` and `http/1.1` (an upgrading proxy must pick `http/1.1`).
    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(ca.clone()).unwrap();
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .unwrap();
                builder.with_client_cert_verifier(verifier)
            }
        };
        let key = PrivateKeyDer::try_from(self.key_der.clone()).unwrap();
        let mut config = builder
            .with_single_cert(vec![self.cert_der.clone()], key)
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }
}
