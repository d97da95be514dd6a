//! Who a request comes from: the [`UserInfo`] authentication puts in the request's
//! extensions, the [`Authenticator`]s that find it, and the [`AuthenticationLayer`] that
//! runs a chain of them in front of the proxy (or of any tower service), as kube-apiserver's
//! authentication filter does.
//!
//! * `chain`: [`Authenticator`], [`Authentication`], [`AuthenticationLayer`] and its
//!   service;
//! * `token`: kube-apiserver's static token file ([`TokenFile`]) and the WebSocket bearer
//!   subprotocol ([`websocket_token`]);
//! * `x509`: client certificates ([`X509Authenticator`](X509Authenticator),
//!   [`ClientCertificates`], [`ClientCaError`]);
//! * `request_header`: front proxies that name the user in headers
//!   ([`RequestHeaderAuthenticator`]).

mod chain;
mod request_header;
mod token;
mod x509;

use std::collections::BTreeMap;

pub use chain::{
    AuthenticateFuture, Authenticated, AuthenticatedBody, AuthenticatedFuture, Authentication,
    AuthenticationLayer, Authenticator,
};
#[cfg(feature = "fuzzing")]
pub(crate) use request_header::unescape_extra_key;
pub use request_header::{
    REMOTE_EXTRA_PREFIX, REMOTE_GROUP_HEADER, REMOTE_USER_HEADER, RequestHeaderAuthenticator,
};
#[cfg(feature = "kube")]
pub(crate) use token::bearer_token;
pub use token::{TokenFile, TokenFileError, websocket_token};
pub use x509::{ClientCaError, ClientCertificates, X509Authenticator};

/// The group every authenticated user is in.
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";

/// The name of the anonymous user.
pub const ANONYMOUS_USER: &str = "system:anonymous";

/// The group of the anonymous user.
pub const UNAUTHENTICATED_GROUP: &str = "system:unauthenticated";

/// The user a request authenticated as: kube-apiserver's `user.Info`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct UserInfo {
    /// The user name (`alice`, `system:serviceaccount:ns:name`).
    pub name: String,
    /// The user's uid (may be empty).
    pub uid: String,
    /// The groups, `system:authenticated` included for authenticated users.
    pub groups: Vec<String>,
    /// Extra attributes (scopes and the like), by key.
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// A user with a name, a uid and groups, and no extra attributes.
    pub fn new(name: impl Into<String>, uid: impl Into<String>, groups: Vec<String>) -> Self {
        UserInfo {
            name: name.into(),
            uid: uid.into(),
            groups,
            extra: BTreeMap::new(),
        }
    }
}

impl UserInfo {
    /// kube-apiserver's anonymous user: `system:anonymous` in `system:unauthenticated`.
    pub fn anonymous() -> Self {
        UserInfo::new(ANONYMOUS_USER, "", vec![UNAUTHENTICATED_GROUP.to_owned()])
    }
}
