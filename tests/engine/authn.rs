//! The authentication chain (`AuthenticationLayer`) and its authenticators, in front of a
//! service that answers with the user it was given: kube-apiserver's union rules, the 401
//! body, anonymous access, public paths, the WebSocket bearer subprotocol, and users from
//! client certificates.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use kube_bastion::{
    Authentication, AuthenticationLayer, ClientCertificates, TokenFile, UserInfo, X509Authenticator,
};
use rcgen::{CertificateParams, DnType, KeyPair};
use tower::{Layer as _, ServiceExt as _};

/// Answers `<user>|<groups>|<Sec-WebSocket-Protocol>`, or `-` without a user.
async fn who(request: Request<Full<Bytes>>) -> Result<Response<Full<Bytes>>, Infallible> {
    let user = request
        .extensions()
        .get::<UserInfo>()
        .map_or("-".to_owned(), |u| {
            format!("{}|{}", u.name, u.groups.join(","))
        });
    let protocols = request
        .headers()
        .get(http::header::SEC_WEBSOCKET_PROTOCOL)
        .map_or("", |v| v.to_str().unwrap());
    Ok(Response::new(Full::new(Bytes::from(format!(
        "{user}|{protocols}"
    )))))
}

fn tokens() -> TokenFile {
    TokenFile::parse("s3cret,alice,1001,\"dev\"\n").unwrap()
}

async fn call(layer: &AuthenticationLayer, request: Request<Full<Bytes>>) -> (StatusCode, String) {
    let service = layer.layer(tower::service_fn(who));
    let response = service.oneshot(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

fn get(path: &str) -> http::request::Builder {
    Request::get(path)
}

const UNAUTHORIZED: &str = "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"Unauthorized\",\"reason\":\"Unauthorized\",\"code\":401}\n";

#[tokio::test]
async fn tokens_authenticate_and_everything_else_is_401_with_upstreams_body() {
    let layer = AuthenticationLayer::new()
        .authenticator(tokens())
        .public_path("/healthz");
    let ok = get("/x")
        .header("authorization", "Bearer s3cret")
        .body(Full::default())
        .unwrap();
    assert_eq!(
        call(&layer, ok).await,
        (StatusCode::OK, "alice|dev,system:authenticated|".to_owned())
    );
    for request in [
        get("/x")
            .header("authorization", "Bearer guess")
            .body(Full::default())
            .unwrap(),
        get("/x")
            .header("authorization", "Basic YTpi")
            .body(Full::default())
            .unwrap(),
        get("/x").body(Full::default()).unwrap(),
    ] {
        assert_eq!(
            call(&layer, request).await,
            (StatusCode::UNAUTHORIZED, UNAUTHORIZED.to_owned())
        );
    }
    let probe = get("/healthz").body(Full::default()).unwrap();
    assert_eq!(
        call(&layer, probe).await,
        (StatusCode::OK, "-|".to_owned()),
        "served without a user"
    );
}

#[tokio::test]
async fn anonymous_access_never_covers_bad_credentials() {
    let layer = AuthenticationLayer::new()
        .authenticator(tokens())
        .anonymous(true);
    let anonymous = get("/x").body(Full::default()).unwrap();
    assert_eq!(
        call(&layer, anonymous).await,
        (
            StatusCode::OK,
            "system:anonymous|system:unauthenticated|".to_owned()
        )
    );
    let bad = get("/x")
        .header("authorization", "Bearer guess")
        .body(Full::default())
        .unwrap();
    assert_eq!(call(&layer, bad).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_first_authenticator_that_finds_a_user_wins_and_the_websocket_token_goes() {
    // An invalid token for the first authenticator does not stop a later one.
    let other = TokenFile::parse("other,bob,1002\n").unwrap();
    let layer = AuthenticationLayer::new()
        .authenticator(tokens())
        .authenticator(other);
    let bob = get("/x")
        .header("authorization", "Bearer other")
        .body(Full::default())
        .unwrap();
    assert_eq!(
        call(&layer, bob).await,
        (StatusCode::OK, "bob|system:authenticated|".to_owned())
    );
    // base64url("s3cret") = czNjcmV0
    let websocket = get("/x")
        .header(
            "sec-websocket-protocol",
            "base64url.bearer.authorization.k8s.io.czNjcmV0, v4.channel.k8s.io",
        )
        .body(Full::default())
        .unwrap();
    assert_eq!(
        call(&layer, websocket).await,
        (
            StatusCode::OK,
            "alice|dev,system:authenticated|v4.channel.k8s.io".to_owned()
        )
    );
}

#[tokio::test]
async fn without_authenticators_requests_pass_untouched() {
    let layer = AuthenticationLayer::new();
    let request = get("/x").body(Full::default()).unwrap();
    assert_eq!(
        call(&layer, request).await,
        (StatusCode::OK, "-|".to_owned())
    );
}

fn leaf(cn: Option<&str>, orgs: &[&str]) -> Vec<u8> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    if let Some(cn) = cn {
        params.distinguished_name.push(DnType::CommonName, cn);
    }
    for org in orgs {
        params
            .distinguished_name
            .push(DnType::OrganizationName, *org);
    }
    params
        .self_signed(&KeyPair::generate().unwrap())
        .unwrap()
        .der()
        .to_vec()
}

#[test]
fn a_certificate_is_its_common_name_in_its_organizations() {
    // (rcgen writes one attribute per type, so one organization here; every `O` of the
    // subject becomes a group.)
    assert_eq!(
        X509Authenticator::user(&leaf(Some("alice"), &["dev"])),
        Authentication::User(UserInfo::new("alice", "", vec!["dev".into()]))
    );
    assert_eq!(
        X509Authenticator::user(&leaf(None, &["dev"])),
        Authentication::NoCredentials
    );
    assert!(matches!(
        X509Authenticator::user(b"not DER"),
        Authentication::Invalid(_)
    ));
}

#[tokio::test]
async fn client_certificates_in_the_extensions_authenticate() {
    let layer = AuthenticationLayer::new().authenticator(X509Authenticator::new());
    let mut request = get("/x").body(Full::default()).unwrap();
    let chain: Arc<[_]> = Arc::from(vec![leaf(Some("carol"), &["ops"]).into()]);
    request.extensions_mut().insert(ClientCertificates(chain));
    assert_eq!(
        call(&layer, request).await,
        (StatusCode::OK, "carol|ops,system:authenticated|".to_owned())
    );
    let without = get("/x").body(Full::default()).unwrap();
    assert_eq!(call(&layer, without).await.0, StatusCode::UNAUTHORIZED);
}

/// Attributes of `GET /api/v1/namespaces/ns/pods/web/proxy/` and request parts carrying
/// `user` (if any).
fn proxy_request(user: Option<UserInfo>) -> (kube_bastion::Attributes, http::request::Parts) {
    let uri = http::Uri::from_static("/api/v1/namespaces/ns/pods/web/proxy/");
    let kube_bastion::Route::Proxy(request) =
        kube_bastion::ProxyRequest::route(&http::Method::GET, &uri, &http::HeaderMap::new())
    else {
        unreachable!()
    };
    let (mut parts, ()) = Request::get(uri).body(()).unwrap().into_parts();
    if let Some(user) = user {
        parts.extensions.insert(user);
    }
    (request.attributes(), parts)
}

/// `union`: the first authorizer that allows or denies decides; no opinion from all is
/// no opinion with the reasons; `AlwaysDeny` and no opinion name the authenticated user.
#[tokio::test]
async fn a_union_asks_in_order_and_no_opinion_is_a_refusal() {
    use kube_bastion::{AlwaysDeny, Authorizer, Decision, authorize_fn, union};
    let alice = UserInfo::new("alice", "", vec![]);
    let (attributes, parts) = proxy_request(Some(alice));
    let no_opinion = |reason: &'static str| {
        authorize_fn(move |_, _| Decision::NoOpinion {
            reason: reason.to_owned(),
        })
    };
    let allow = authorize_fn(|_, _| Decision::Allow);
    let chain = union(vec![
        Box::new(no_opinion("")),
        Box::new(allow),
        Box::new(AlwaysDeny),
    ]);
    assert_eq!(chain.authorize(&attributes, &parts).await, Decision::Allow);
    let chain = union(vec![Box::new(no_opinion("")), Box::new(AlwaysDeny)]);
    assert_eq!(
        chain.authorize(&attributes, &parts).await,
        Decision::deny("alice", "")
    );
    let chain = union(vec![
        Box::new(no_opinion("first")),
        Box::new(no_opinion("")),
        Box::new(no_opinion("third")),
    ]);
    assert_eq!(
        chain.authorize(&attributes, &parts).await,
        Decision::NoOpinion {
            reason: "first\nthird".to_owned()
        }
    );
}

/// `RbacAuthorizer`: the user in the extensions against the policy; no user, no opinion;
/// `update` swaps the policy.
#[tokio::test]
async fn the_rbac_authorizer_reads_the_user_and_follows_updates() {
    use kube_bastion::core::RbacPolicy;
    use kube_bastion::{Authorizer, Decision, RbacAuthorizer};
    let grant = |name: &str| {
        format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: b, namespace: ns}}\n\
             roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: proxy}}\n\
             subjects: [{{kind: User, name: {name}}}]\n---\n\
             apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {{name: proxy}}\n\
             rules: [{{apiGroups: [\"\"], resources: [\"*/proxy\"], verbs: [get]}}]\n"
        )
    };
    let authorizer =
        RbacAuthorizer::new(RbacPolicy::from_texts([grant("alice").as_str()]).unwrap());
    let (attributes, alice) = proxy_request(Some(UserInfo::new("alice", "", vec![])));
    let (_, bob) = proxy_request(Some(UserInfo::new("bob", "", vec![])));
    let (_, nobody) = proxy_request(None);
    let none = Decision::NoOpinion {
        reason: String::new(),
    };
    assert_eq!(
        authorizer.authorize(&attributes, &alice).await,
        Decision::Allow
    );
    assert_eq!(authorizer.authorize(&attributes, &bob).await, none);
    assert_eq!(authorizer.authorize(&attributes, &nobody).await, none);
    authorizer.update(RbacPolicy::from_texts([grant("bob").as_str()]).unwrap());
    assert_eq!(
        authorizer.authorize(&attributes, &bob).await,
        Decision::Allow
    );
    assert_eq!(authorizer.authorize(&attributes, &alice).await, none);
}
