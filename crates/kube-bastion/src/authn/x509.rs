//! Client certificates: [`ClientCertificates`] (what the host's TLS listener verified) and
//! the [`X509Authenticator`] that turns them into a user.

use std::sync::Arc;

use rustls_pki_types::CertificateDer;
use x509_parser::prelude::{FromDer as _, X509Certificate};

use super::{AuthenticateFuture, Authentication, Authenticator, UserInfo};

/// The certificate chain a client presented and the host's TLS listener verified against
/// its client CA (leaf first), put into each request's extensions by the host. The server
/// binary does this with `--client-ca-file`; an embedder inserts it from
/// `rustls::ServerConnection::peer_certificates` after the handshake. Never insert
/// certificates that were not verified: the [`X509Authenticator`] trusts them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCertificates(pub Arc<[CertificateDer<'static>]>);

/// Authenticates a request by its [`ClientCertificates`], as kube-apiserver's
/// `--client-ca-file` does: the leaf certificate's subject common name is the user name and
/// its organizations are the groups. A request without certificates, or whose leaf has no
/// common name, has no credentials for it; a leaf that does not parse is invalid.
#[derive(Clone, Copy, Debug, Default)]
pub struct X509Authenticator;

impl X509Authenticator {
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

impl Authenticator for X509Authenticator {
    fn authenticate<'a>(&'a self, request: &'a http::request::Parts) -> AuthenticateFuture<'a> {
        let found = match request
            .extensions
            .get::<ClientCertificates>()
            .and_then(|chain| chain.0.first())
        {
            Some(leaf) => Self::user(leaf),
            None => Authentication::NoCredentials,
        };
        AuthenticateFuture::ready(found)
    }
}
