//! rustls client configurations for the two transports (generic and kubelet).
//!
//! Every configuration is built with `ClientConfig::builder_with_provider` and the ring
//! provider, so a process that also links aws-lc-rs never panics choosing a default.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// A TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM input could not be parsed or held nothing usable.
    #[error("invalid PEM: {0}")]
    Pem(String),
    /// rustls refused the configuration (bad key, unsupported algorithm, ...).
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// Verification is on but no trust anchor could be loaded.
    #[error("no trusted root certificates")]
    NoRoots,
}

/// Where trusted root certificates come from when backends are verified.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub enum Roots {
    /// The operating system's store (via `rustls-native-certs`). The default.
    #[default]
    System,
    /// These certificates only (a cluster CA bundle).
    Certificates(Vec<CertificateDer<'static>>),
}

impl Roots {
    /// Parses a PEM bundle of one or more `CERTIFICATE` blocks.
    pub fn from_pem(pem: &[u8]) -> Result<Self, TlsError> {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Pem(e.to_string()))?;
        if certs.is_empty() {
            return Err(TlsError::Pem("no CERTIFICATE block".into()));
        }
        Ok(Roots::Certificates(certs))
    }

    fn store(&self) -> Result<RootCertStore, TlsError> {
        let mut store = RootCertStore::empty();
        match self {
            Roots::System => {
                let loaded = rustls_native_certs::load_native_certs();
                for e in &loaded.errors {
                    tracing::warn!(error = %e, "loading a system root certificate failed");
                }
                store.add_parsable_certificates(loaded.certs);
            }
            Roots::Certificates(certs) => {
                let (_, ignored) = store.add_parsable_certificates(certs.iter().cloned());
                if ignored > 0 {
                    tracing::warn!(ignored, "some CA certificates could not be parsed");
                }
            }
        }
        if store.is_empty() {
            return Err(TlsError::NoRoots);
        }
        Ok(store)
    }
}

/// A client certificate chain and its private key (the kubelet client identity).
pub struct ClientIdentity {
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Clone for ClientIdentity {
    fn clone(&self) -> Self {
        Self {
            certs: self.certs.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        f.debug_struct("ClientIdentity")
            .field("certs", &self.certs.len())
            .finish_non_exhaustive()
    }
}

impl ClientIdentity {
    /// From a PEM certificate chain and a PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem(cert_chain: &[u8], key: &[u8]) -> Result<Self, TlsError> {
        let certs = CertificateDer::pem_slice_iter(cert_chain)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Pem(e.to_string()))?;
        if certs.is_empty() {
            return Err(TlsError::Pem("no CERTIFICATE block".into()));
        }
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| TlsError::Pem(e.to_string()))?;
        Ok(Self { certs, key })
    }

    /// From DER values.
    pub fn from_der(cert_chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Self {
        Self {
            certs: cert_chain,
            key,
        }
    }
}

/// TLS options for backends (part of [`ProxyConfig`](crate::ProxyConfig)).
///
/// Defaults are kube-apiserver's: pods, services and non-kubelet node ports are **not**
/// verified ("proxying is IP-based"); kubelets are verified only when a kubelet CA is given;
/// no client certificate.
#[derive(Clone, Debug, Default)]
pub struct TlsOptions {
    /// Verify pod, service and non-kubelet node backends against [`TlsOptions::roots`]
    /// (default `false`, as upstream). The name checked is the target's
    /// [`tls_server_name`](crate::Target::tls_server_name) (`svc.ns.svc` for services),
    /// else the dialed IP.
    pub verify_backends: bool,
    /// Trust anchors for the generic transport when [`TlsOptions::verify_backends`] is on.
    pub roots: Roots,
    /// The kubelet CA (`--kubelet-certificate-authority`): when set, kubelets are verified
    /// against it; when `None`, kubelet certificates are not verified (upstream's default).
    pub kubelet_ca: Option<Roots>,
    /// The client certificate presented to kubelets (`--kubelet-client-certificate` and
    /// `--kubelet-client-key`).
    pub kubelet_client: Option<ClientIdentity>,
}

/// The two rustls configurations of one transport: ALPN `h2, http/1.1` for ordinary
/// requests and `http/1.1` only for upgrades.
#[derive(Clone, Debug)]
pub(crate) struct TlsConfigs {
    pub(crate) http: Arc<ClientConfig>,
    pub(crate) http1_only: Arc<ClientConfig>,
    /// Whether certificates are verified (decides the server name sent).
    pub(crate) verify: bool,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsConfigs {
    pub(crate) fn generic(options: &TlsOptions) -> Result<Self, TlsError> {
        let roots = if options.verify_backends {
            Some(options.roots.store()?)
        } else {
            None
        };
        Self::build(roots, None)
    }

    pub(crate) fn kubelet(options: &TlsOptions) -> Result<Self, TlsError> {
        let roots = match &options.kubelet_ca {
            Some(r) => Some(r.store()?),
            None => None,
        };
        Self::build(roots, options.kubelet_client.clone())
    }

    fn build(
        roots: Option<RootCertStore>,
        identity: Option<ClientIdentity>,
    ) -> Result<Self, TlsError> {
        let provider = provider();
        let verify = roots.is_some();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let builder = match roots {
            Some(roots) => builder.with_root_certificates(roots),
            None => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerifier {
                    algorithms: provider.signature_verification_algorithms,
                })),
        };
        let mut config = match identity {
            Some(id) => builder.with_client_auth_cert(id.certs, id.key)?,
            None => builder.with_no_client_auth(),
        };
        let mut http1 = config.clone();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        http1.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            http: Arc::new(config),
            http1_only: Arc::new(http1),
            verify,
        })
    }
}

/// Accepts any server certificate (kube-apiserver's `InsecureSkipVerify` for pods and
/// services). Handshake signatures are still checked against the presented key, so the peer
/// must at least own the certificate it shows.
#[derive(Debug)]
struct NoVerifier {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for NoVerifier {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
