//! Client certificates: [`ClientCertificates`] (what the host's TLS listener verified) and
//! the [`X509Authenticator`](X509Authenticator) that turns them into a user.

use std::fmt;
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls_pki_types::{CertificateDer, UnixTime};
use x509_parser::prelude::{FromDer as _, X509Certificate};

use super::{AuthenticateFuture, Authentication, Authenticator, UserInfo};

/// The certificate chain a client presented and the host's TLS listener verified against
/// its client CA (leaf first), put into each request's extensions by the host. The server
/// binary does this with `--client-ca-file`; an embedder inserts it from
/// `rustls::ServerConnection::peer_certificates` after the handshake. Never insert
/// certificates that were not verified: an
/// [`X509Authenticator`](X509Authenticator) without roots of its own trusts them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCertificates(pub Arc<[CertificateDer<'static>]>);

impl ClientCertificates {
    /// The non-empty chain the host put in `request`'s extensions, if any.
    pub(crate) fn presented(request: &http::request::Parts) -> Option<&Self> {
        request
            .extensions
            .get::<ClientCertificates>()
            .filter(|chain| !chain.0.is_empty())
    }
}

/// A CA bundle that cannot verify client certificates (no usable certificate in it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCaError(String);

impl fmt::Display for ClientCaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ClientCaError {}

/// Verifies a client certificate chain against one CA pool, outside any handshake (with
/// rustls' own client verifier, so the rules are the TLS listener's: signatures, validity
/// dates, the `clientAuth` extended key usage).
#[derive(Clone)]
pub(super) struct ChainVerifier(Arc<dyn ClientCertVerifier>);

impl fmt::Debug for ChainVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChainVerifier")
    }
}

impl ChainVerifier {
    /// A verifier trusting `roots` (DER certificates).
    pub(super) fn new(
        roots: impl IntoIterator<Item = CertificateDer<'static>>,
    ) -> Result<Self, ClientCaError> {
        let mut store = rustls::RootCertStore::empty();
        for root in roots {
            store
                .add(root)
                .map_err(|e| ClientCaError(format!("unusable CA certificate: {e}")))?;
        }
        if store.is_empty() {
            return Err(ClientCaError("no CA certificate".to_owned()));
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(
            Arc::new(store),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .map_err(|e| ClientCaError(e.to_string()))?;
        Ok(ChainVerifier(verifier))
    }

    /// Whether `chain` (leaf first) chains to one of the roots, now.
    pub(super) fn verify(&self, chain: &[CertificateDer<'static>]) -> Result<(), String> {
        let Some((leaf, intermediates)) = chain.split_first() else {
            return Err("no certificate".to_owned());
        };
        self.0
            .verify_client_cert(leaf, intermediates, UnixTime::now())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// Authenticates a request by its [`ClientCertificates`], as kube-apiserver's
/// `--client-ca-file` does: the leaf certificate's subject common name is the user name and
/// its organizations are the groups. A request without certificates, or whose leaf has no
/// common name, has no credentials for it; a leaf that does not parse is invalid.
///
/// Two ways to use it:
///
/// * [`X509Authenticator::new`] (or `default()`) trusts the [`ClientCertificates`] as
///   verified by the TLS listener;
/// * [`X509Authenticator::with_roots`] verifies the chain again against its own CA pool and
///   treats a chain that does not verify as invalid credentials, as kube-apiserver's x509
///   authenticator does. Use it when the listener accepts certificates of more than one CA
///   (a front proxy's CA beside the client CA, see
///   [`RequestHeaderAuthenticator`](super::RequestHeaderAuthenticator)): a certificate that
///   only the other CA signed is then never a user.
#[derive(Clone, Debug, Default)]
pub struct X509Authenticator {
    verifier: Option<ChainVerifier>,
}

impl X509Authenticator {
    /// An authenticator that trusts the [`ClientCertificates`] the TLS listener verified.
    pub fn new() -> Self {
        X509Authenticator { verifier: None }
    }

    /// An authenticator that verifies the client certificate chain against `roots` (the
    /// client CA bundle, DER) before reading the user from it; a chain that does not verify
    /// is [`Authentication::Invalid`].
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let ca = rcgen::CertificateParams::new(Vec::<String>::new())?
    /// #     .self_signed(&rcgen::KeyPair::generate()?)?;
    /// # let client_ca_pem = ca.pem();
    /// use kube_bastion::X509Authenticator;
    /// use rustls_pki_types::{CertificateDer, pem::PemObject};
    ///
    /// let roots = CertificateDer::pem_slice_iter(client_ca_pem.as_bytes())
    ///     .collect::<Result<Vec<_>, _>>()?;
    /// let x509 = X509Authenticator::with_roots(roots)?;
    /// # let _ = x509;
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_roots(
        roots: impl IntoIterator<Item = CertificateDer<'static>>,
    ) -> Result<Self, ClientCaError> {
        Ok(X509Authenticator {
            verifier: Some(ChainVerifier::new(roots)?),
        })
    }

    /// The user of a verified leaf certificate (DER).
    pub fn user(leaf: &[u8]) -> Authentication {
        let Ok((_, certificate)) = X509Certificate::from_der(leaf) else {
            return Authentication::Invalid("the client certificate does not parse".to_owned());
        };
        let subject = certificate.subject();
        let Some(name) = subject
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .filter(|cn| !cn.is_empty())
        else {
            return Authentication::NoCredentials;
        };
        let groups = subject
            .iter_organization()
            .filter_map(|o| o.as_str().ok())
            .map(str::to_owned)
            .collect();
        Authentication::User(UserInfo::new(name, "", groups))
    }
}

/// Every subject common name of a leaf certificate (DER), in order: `None` when it does
/// not parse or a name is not a string.
pub(super) fn common_names(leaf: &[u8]) -> Option<Vec<String>> {
    let (_, certificate) = X509Certificate::from_der(leaf).ok()?;
    certificate
        .subject()
        .iter_common_name()
        .map(|cn| cn.as_str().ok().map(str::to_owned))
        .collect()
}

impl Authenticator for X509Authenticator {
    fn authenticate<'a>(&'a self, request: &'a http::request::Parts) -> AuthenticateFuture<'a> {
        let Some(chain) = ClientCertificates::presented(request) else {
            return AuthenticateFuture::ready(Authentication::NoCredentials);
        };
        if let Some(verifier) = &self.verifier
            && let Err(e) = verifier.verify(&chain.0)
        {
            return AuthenticateFuture::ready(Authentication::Invalid(format!(
                "the client certificate does not verify against the client CA: {e}"
            )));
        }
        AuthenticateFuture::ready(
            chain
                .0
                .first()
                .map_or(Authentication::NoCredentials, |leaf| Self::user(leaf)),
        )
    }
}
