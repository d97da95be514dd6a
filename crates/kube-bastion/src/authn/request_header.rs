//! Front-proxy authentication: [`RequestHeaderAuthenticator`], kube-apiserver's
//! `--requestheader-*` flags.

use std::collections::BTreeMap;

use http::{HeaderMap, HeaderName};
use rustls_pki_types::CertificateDer;

use super::x509::{ChainVerifier, ClientCaError, common_names};
use super::{AuthenticateFuture, Authentication, Authenticator, ClientCertificates, UserInfo};

/// kube-apiserver's default `--requestheader-username-headers`.
pub const REMOTE_USER_HEADER: HeaderName = HeaderName::from_static("x-remote-user");

/// kube-apiserver's default `--requestheader-group-headers`.
pub const REMOTE_GROUP_HEADER: HeaderName = HeaderName::from_static("x-remote-group");

/// kube-apiserver's default `--requestheader-extra-headers-prefix`.
pub const REMOTE_EXTRA_PREFIX: &str = "X-Remote-Extra-";

/// Authenticates requests that come through a trusted front proxy (an authenticating
/// gateway, kube-apiserver's aggregator), which names the user in request headers, as
/// kube-apiserver's `--requestheader-*` flags do:
///
/// * the connection's [`ClientCertificates`] must chain to the requestheader CA given to
///   [`new`](Self::new) (verified here, not only by the TLS listener, which may also accept
///   the client CA) and, when [`allowed_names`](Self::allowed_names) are set, the leaf's
///   subject common name must be one of them (every common name, when it has several).
///   Without the list any common name is accepted, as upstream;
/// * the user name is the first non-empty value of the
///   [`username_headers`](Self::username_headers) (default `X-Remote-User`), taken in
///   order; the groups are every non-empty value of the
///   [`group_headers`](Self::group_headers) (default `X-Remote-Group`), one group per
///   value, never split at commas; the extra attributes come from the headers that start
///   with an [`extra_headers_prefixes`](Self::extra_headers_prefixes) entry (default
///   `X-Remote-Extra-`): the rest of the name, lower-cased, then percent-decoded (kept as
///   sent when that fails), is the key, and every value of the header is one of its values.
///
/// A request without certificates, or without a user name in the headers, has no
/// credentials for it (the user-name headers are looked at first, so an ordinary client
/// certificate costs no second verification); one whose certificate does not verify
/// against the requestheader CA or whose common name is not allowed, or whose identity
/// headers are not UTF-8, is [`Authentication::Invalid`], as upstream answers an error.
///
/// Put it first in the chain, as kube-apiserver does, and give the
/// [`X509Authenticator`](super::X509Authenticator) its own roots
/// ([`X509Authenticator::with_roots`](super::X509Authenticator::with_roots)) when the TLS
/// listener accepts both CAs, so that the front proxy's certificate is never a user itself.
///
/// Whichever authenticator finds the user, the [`AuthenticationLayer`](super::AuthenticationLayer)
/// removes the configured identity headers from every request it lets through
/// ([`Authenticator::strip_credentials`]): what a client sends under those names never
/// reaches a backend.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let ca = rcgen::CertificateParams::new(Vec::<String>::new())?
/// #     .self_signed(&rcgen::KeyPair::generate()?)?;
/// # let front_proxy_ca_pem = ca.pem();
/// use kube_bastion::{AuthenticationLayer, RequestHeaderAuthenticator};
/// use rustls_pki_types::{CertificateDer, pem::PemObject};
///
/// let roots = CertificateDer::pem_slice_iter(front_proxy_ca_pem.as_bytes())
///     .collect::<Result<Vec<_>, _>>()?;
/// let front_proxy = RequestHeaderAuthenticator::new(roots)?.allowed_names(["front-proxy-client"]);
/// let layer = AuthenticationLayer::new().authenticator(front_proxy);
/// # let _ = layer;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct RequestHeaderAuthenticator {
    verifier: ChainVerifier,
    allowed_names: Vec<String>,
    username_headers: Vec<HeaderName>,
    group_headers: Vec<HeaderName>,
    /// Lower-cased, never empty.
    extra_prefixes: Vec<String>,
}

impl RequestHeaderAuthenticator {
    /// An authenticator trusting front proxies whose client certificate chains to `roots`
    /// (kube-apiserver's `--requestheader-client-ca-file`, DER), with the default header
    /// names and no common-name restriction.
    pub fn new(
        roots: impl IntoIterator<Item = CertificateDer<'static>>,
    ) -> Result<Self, ClientCaError> {
        Ok(RequestHeaderAuthenticator {
            verifier: ChainVerifier::new(roots)?,
            allowed_names: Vec::new(),
            username_headers: vec![REMOTE_USER_HEADER],
            group_headers: vec![REMOTE_GROUP_HEADER],
            extra_prefixes: vec![REMOTE_EXTRA_PREFIX.to_ascii_lowercase()],
        })
    }

    /// The common names a front proxy's certificate may have
    /// (`--requestheader-allowed-names`); empty (the default): any.
    #[must_use]
    pub fn allowed_names(mut self, names: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.allowed_names = names.into_iter().map(Into::into).collect();
        self
    }

    /// The headers that name the user, the first non-empty one wins
    /// (`--requestheader-username-headers`; default `X-Remote-User`).
    #[must_use]
    pub fn username_headers(mut self, names: impl IntoIterator<Item = HeaderName>) -> Self {
        self.username_headers = names.into_iter().collect();
        self
    }

    /// The headers whose values are the groups (`--requestheader-group-headers`; default
    /// `X-Remote-Group`).
    #[must_use]
    pub fn group_headers(mut self, names: impl IntoIterator<Item = HeaderName>) -> Self {
        self.group_headers = names.into_iter().collect();
        self
    }

    /// The header name prefixes of extra attributes, matched case-insensitively
    /// (`--requestheader-extra-headers-prefix`; default `X-Remote-Extra-`). Empty prefixes
    /// are ignored (they would make every header an attribute).
    #[must_use]
    pub fn extra_headers_prefixes(
        mut self,
        prefixes: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        self.extra_prefixes = prefixes
            .into_iter()
            .map(|p| p.into().to_ascii_lowercase())
            .filter(|p| !p.is_empty())
            .collect();
        self
    }

    /// Whether `name` is one of the identity headers this authenticator reads (and removes),
    /// or one of them spelled with `_` for `-` (which CGI-style backends read as the same
    /// variable): those are removed too, and never read.
    pub fn is_identity_header(&self, name: &HeaderName) -> bool {
        let name = name.as_str();
        self.is_identity_name(name)
            || (name.contains('_') && self.is_identity_name(&name.replace('_', "-")))
    }

    fn is_identity_name(&self, name: &str) -> bool {
        self.username_headers.iter().any(|h| h.as_str() == name)
            || self.group_headers.iter().any(|h| h.as_str() == name)
            || self
                .extra_prefixes
                .iter()
                .any(|p| name.starts_with(p.as_str()))
    }

    /// Checks the front proxy's certificate chain (leaf first): the requestheader CA, then
    /// the allowed common names.
    fn verify_front_proxy(&self, chain: &[CertificateDer<'static>]) -> Result<(), String> {
        self.verifier.verify(chain).map_err(|e| {
            format!("the client certificate does not verify against the requestheader CA: {e}")
        })?;
        if self.allowed_names.is_empty() {
            return Ok(());
        }
        let names = chain.first().and_then(|leaf| common_names(leaf));
        match names {
            Some(names)
                if !names.is_empty()
                    && names
                        .iter()
                        .all(|n| self.allowed_names.iter().any(|a| a == n)) =>
            {
                Ok(())
            }
            Some(names) => Err(format!(
                "x509: subject with cn={} is not in the allowed list",
                names.join(",")
            )),
            None => Err("the front proxy's certificate does not parse".to_owned()),
        }
    }

    /// The user the identity headers name: `Ok(None)` when no user-name header has a
    /// non-empty value.
    fn user_from_headers(&self, headers: &HeaderMap) -> Result<Option<UserInfo>, String> {
        let Some(name) = self
            .username_headers
            .iter()
            .filter_map(|h| headers.get(h))
            .find(|v| !v.is_empty())
        else {
            return Ok(None);
        };
        let text = |value: &http::HeaderValue, what: &str| {
            std::str::from_utf8(value.as_bytes())
                .map(str::to_owned)
                .map_err(|_| format!("the front proxy's {what} is not UTF-8"))
        };
        let name = text(name, "user name")?;
        let mut groups = Vec::new();
        for header in &self.group_headers {
            for value in headers.get_all(header) {
                if !value.is_empty() {
                    groups.push(text(value, "group")?);
                }
            }
        }
        let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for prefix in &self.extra_prefixes {
            for header in headers.keys() {
                // Header names are lower-case already.
                let Some(encoded) = header.as_str().strip_prefix(prefix.as_str()) else {
                    continue;
                };
                let key = unescape_extra_key(encoded);
                let values = extra.entry(key).or_default();
                for value in headers.get_all(header) {
                    values.push(text(value, "extra attribute")?);
                }
            }
        }
        let mut user = UserInfo::new(name, "", groups);
        user.extra = extra;
        Ok(Some(user))
    }
}

/// Upstream's `unescapeExtraKey`: `url.PathUnescape` of the (lower-cased) key, the key as
/// sent when an escape is malformed (`%` not followed by two hex digits) or the result is
/// not UTF-8.
pub(crate) fn unescape_extra_key(encoded: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    if !encoded.contains('%') {
        return encoded.to_owned();
    }
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let decoded = bytes
                .get(i + 1)
                .and_then(|h| hex(*h))
                .zip(bytes.get(i + 2).and_then(|l| hex(*l)));
            let Some((high, low)) = decoded else {
                return encoded.to_owned();
            };
            out.push(high << 4 | low);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| encoded.to_owned())
}

impl Authenticator for RequestHeaderAuthenticator {
    fn authenticate<'a>(&'a self, request: &'a http::request::Parts) -> AuthenticateFuture<'a> {
        let Some(chain) = ClientCertificates::presented(request) else {
            return AuthenticateFuture::ready(Authentication::NoCredentials);
        };
        if !self
            .username_headers
            .iter()
            .filter_map(|h| request.headers.get(h))
            .any(|v| !v.is_empty())
        {
            return AuthenticateFuture::ready(Authentication::NoCredentials);
        }
        let found = match self
            .verify_front_proxy(&chain.0)
            .and_then(|()| self.user_from_headers(&request.headers))
        {
            Ok(Some(user)) => Authentication::User(user),
            Ok(None) => Authentication::NoCredentials,
            Err(reason) => Authentication::Invalid(format!("front proxy: {reason}")),
        };
        AuthenticateFuture::ready(found)
    }

    fn strip_credentials(&self, headers: &mut HeaderMap) {
        if !headers.keys().any(|name| self.is_identity_header(name)) {
            return;
        }
        let names: Vec<HeaderName> = headers
            .keys()
            .filter(|name| self.is_identity_header(name))
            .cloned()
            .collect();
        for name in names {
            headers.remove(&name);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use http::{HeaderValue, Request};
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };

    use super::*;

    /// A CA: its certificate (DER) and the issuer that signs with it.
    fn ca(name: &str) -> (CertificateDer<'static>, Issuer<'static, KeyPair>) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        (cert.der().clone(), Issuer::new(params, key))
    }

    /// A client certificate with common name `cn`, signed by `issuer`.
    fn leaf(issuer: &Issuer<'static, KeyPair>, cn: &str) -> CertificateDer<'static> {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.signed_by(&key, issuer).unwrap().der().clone()
    }

    fn parts(
        cert: Option<CertificateDer<'static>>,
        headers: &[(&str, &str)],
    ) -> http::request::Parts {
        let mut request = Request::get("/").body(()).unwrap();
        for (name, value) in headers {
            request.headers_mut().append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        if let Some(cert) = cert {
            request
                .extensions_mut()
                .insert(ClientCertificates(Arc::from(vec![cert])));
        }
        request.into_parts().0
    }

    fn run(auth: &RequestHeaderAuthenticator, parts: &http::request::Parts) -> Authentication {
        futures_util::FutureExt::now_or_never(auth.authenticate(parts)).unwrap()
    }

    fn user(name: &str, groups: &[&str], extra: &[(&str, &[&str])]) -> Authentication {
        let mut user = UserInfo::new(name, "", groups.iter().map(|g| g.to_string()).collect());
        user.extra = extra
            .iter()
            .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
            .collect();
        Authentication::User(user)
    }

    #[test]
    fn headers_name_the_user_groups_and_extra() {
        let (root, issuer) = ca("front-proxy-ca");
        let auth = RequestHeaderAuthenticator::new([root]).unwrap();
        let request = parts(
            Some(leaf(&issuer, "front-proxy")),
            &[
                ("x-remote-user", ""),
                ("x-remote-user", "alice"),
                ("x-remote-group", "dev"),
                ("x-remote-group", ""),
                ("x-remote-group", "ops,qa"),
                ("x-remote-extra-scopes", "read"),
                ("x-remote-extra-scopes", "write"),
                ("X-Remote-Extra-Acme.com%2FProject", "p1"),
                ("x-remote-extra-bad%zzkey", "b"),
                ("x-remote-extra-", "empty"),
                ("x-other", "kept"),
            ],
        );
        // Go's Header.Get takes the first value: an empty first value is no user name.
        assert_eq!(run(&auth, &request), Authentication::NoCredentials);

        let request = parts(
            Some(leaf(&issuer, "front-proxy")),
            &[
                ("x-remote-user", "alice"),
                ("x-remote-group", "dev"),
                ("x-remote-group", ""),
                ("x-remote-group", "ops,qa"),
                ("x-remote-extra-scopes", "read"),
                ("x-remote-extra-scopes", "write"),
                ("X-Remote-Extra-Acme.com%2FProject", "p1"),
                ("x-remote-extra-bad%zzkey", "b"),
                ("x-remote-extra-", "empty"),
            ],
        );
        assert_eq!(
            run(&auth, &request),
            user(
                "alice",
                &["dev", "ops,qa"],
                &[
                    ("", &["empty"]),
                    ("acme.com/project", &["p1"]),
                    ("bad%zzkey", &["b"]),
                    ("scopes", &["read", "write"]),
                ],
            )
        );
    }

    #[test]
    fn configured_headers_first_non_empty_wins() {
        let (root, issuer) = ca("front-proxy-ca");
        let auth = RequestHeaderAuthenticator::new([root])
            .unwrap()
            .username_headers([
                HeaderName::from_static("x-first"),
                HeaderName::from_static("x-second"),
            ])
            .group_headers([HeaderName::from_static("x-groups")])
            .extra_headers_prefixes(["X-Attr-", ""]);
        let request = parts(
            Some(leaf(&issuer, "any-name")),
            &[
                ("x-first", ""),
                ("x-second", "bob"),
                ("x-remote-user", "mallory"),
                ("x-remote-group", "system:masters"),
                ("x-groups", "dev"),
                ("x-attr-team", "a"),
            ],
        );
        assert_eq!(
            run(&auth, &request),
            user("bob", &["dev"], &[("team", &["a"])])
        );
        assert!(auth.is_identity_header(&HeaderName::from_static("x-attr-other")));
        assert!(!auth.is_identity_header(&HeaderName::from_static("x-remote-user")));
    }

    #[test]
    fn extra_keys_decode_as_upstream() {
        assert_eq!(unescape_extra_key("scopes"), "scopes");
        assert_eq!(unescape_extra_key("example.com%2fa%20b"), "example.com/a b");
        assert_eq!(unescape_extra_key("a+b"), "a+b");
        assert_eq!(unescape_extra_key("100%"), "100%");
        assert_eq!(unescape_extra_key("%4"), "%4");
        assert_eq!(unescape_extra_key("%ff"), "%ff", "not UTF-8: kept as sent");
        assert_eq!(unescape_extra_key("%c3%a9t%c3%a9"), "été");
        for key in ["example.com/project", "a b", "100%", "été", "Scopes", "x:y"] {
            let escaped = crate::headers::escape_extra_key(key);
            assert!(
                HeaderName::from_bytes(escaped.as_bytes()).is_ok(),
                "{escaped}"
            );
            assert_eq!(
                unescape_extra_key(&escaped.to_ascii_lowercase()),
                key.to_lowercase()
            );
        }
        assert_eq!(
            crate::headers::escape_extra_key("example.com/a b%"),
            "example.com%2Fa%20b%25"
        );
    }

    #[test]
    fn allowed_names_restrict_the_common_name() {
        let (root, issuer) = ca("front-proxy-ca");
        let auth = RequestHeaderAuthenticator::new([root])
            .unwrap()
            .allowed_names(["front-proxy", "aggregator"]);
        let headers = [("x-remote-user", "alice")];
        assert_eq!(
            run(&auth, &parts(Some(leaf(&issuer, "aggregator")), &headers)),
            user("alice", &[], &[])
        );
        match run(&auth, &parts(Some(leaf(&issuer, "someone-else")), &headers)) {
            Authentication::Invalid(reason) => {
                assert!(
                    reason.contains("cn=someone-else is not in the allowed list"),
                    "{reason}"
                )
            }
            other => panic!("{other:?}"),
        }
        // Without the list, any name the CA signed.
        let (root, issuer) = ca("front-proxy-ca");
        let open = RequestHeaderAuthenticator::new([root]).unwrap();
        assert_eq!(
            run(&open, &parts(Some(leaf(&issuer, "someone-else")), &headers)),
            user("alice", &[], &[])
        );
    }

    #[test]
    fn a_certificate_of_another_ca_is_not_a_front_proxy() {
        let (root, _) = ca("front-proxy-ca");
        let (_, client_issuer) = ca("client-ca");
        let auth = RequestHeaderAuthenticator::new([root]).unwrap();
        let headers = [("x-remote-user", "alice")];
        match run(
            &auth,
            &parts(Some(leaf(&client_issuer, "front-proxy")), &headers),
        ) {
            Authentication::Invalid(reason) => {
                assert!(reason.contains("requestheader CA"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        // No certificate, or no user name: nothing for this authenticator.
        assert_eq!(
            run(&auth, &parts(None, &headers)),
            Authentication::NoCredentials
        );
        assert_eq!(
            run(&auth, &parts(Some(leaf(&client_issuer, "x")), &[])),
            Authentication::NoCredentials
        );
    }

    #[test]
    fn identity_headers_are_stripped() {
        let (root, _) = ca("front-proxy-ca");
        let auth = RequestHeaderAuthenticator::new([root]).unwrap();
        let mut request = parts(
            None,
            &[
                ("x-remote-user", "alice"),
                ("x-remote-group", "a"),
                ("x-remote-group", "b"),
                ("X-Remote-Extra-Scopes", "s"),
                ("x-remote-extra-other", "o"),
                ("x_remote_user", "mallory"),
                ("X_Remote_Extra_Scopes", "s"),
                ("x-keep", "k"),
            ],
        );
        auth.strip_credentials(&mut request.headers);
        assert_eq!(request.headers.len(), 1, "{:?}", request.headers);
        assert_eq!(request.headers["x-keep"], "k");
    }

    /// The layer removes the configured identity headers from requests that did not come
    /// through a front proxy too (here an anonymous one), custom names included.
    #[tokio::test]
    async fn the_layer_strips_identity_headers_of_every_request() {
        use tower::{Layer as _, ServiceExt as _};
        let (root, _) = ca("front-proxy-ca");
        let auth = RequestHeaderAuthenticator::new([root])
            .unwrap()
            .username_headers([HeaderName::from_static("x-custom-user")])
            .extra_headers_prefixes(["X-Custom-Extra-"]);
        let layer = crate::AuthenticationLayer::new()
            .authenticator(auth)
            .anonymous(true);
        let seen = Arc::new(std::sync::Mutex::new(HeaderMap::new()));
        let record = Arc::clone(&seen);
        let inner = tower::service_fn(move |request: Request<()>| {
            *record.lock().unwrap() = request.headers().clone();
            async { Ok::<_, std::convert::Infallible>(http::Response::new(())) }
        });
        let mut request = Request::get("/").body(()).unwrap();
        for (name, value) in [
            ("x-custom-user", "alice"),
            ("x-custom-extra-scopes", "all"),
            ("x-remote-group", "system:masters"),
            ("x-keep", "k"),
        ] {
            request
                .headers_mut()
                .insert(name, HeaderValue::from_static(value));
        }
        let response = layer.layer(inner).oneshot(request).await.unwrap();
        assert_eq!(response.status(), 200);
        let seen = seen.lock().unwrap().clone();
        // The custom names and the default group header (still configured) are gone.
        let names: Vec<&str> = seen.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["x-keep"], "{seen:?}");
    }

    #[test]
    fn x509_with_roots_refuses_other_cas() {
        use crate::X509Authenticator;
        let (client_root, client_issuer) = ca("client-ca");
        let (_, proxy_issuer) = ca("front-proxy-ca");
        let x509 = X509Authenticator::with_roots([client_root]).unwrap();
        let run = |cert| {
            let request = parts(Some(cert), &[]);
            futures_util::FutureExt::now_or_never(x509.authenticate(&request)).unwrap()
        };
        assert_eq!(run(leaf(&client_issuer, "carol")), user("carol", &[], &[]));
        assert!(matches!(
            run(leaf(&proxy_issuer, "front-proxy")),
            Authentication::Invalid(_)
        ));
        // The constant trusts what the listener verified.
        let request = parts(Some(leaf(&proxy_issuer, "front-proxy")), &[]);
        assert_eq!(
            futures_util::FutureExt::now_or_never(X509Authenticator::new().authenticate(&request))
                .unwrap(),
            user("front-proxy", &[], &[])
        );
    }
}
