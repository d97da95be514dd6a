//! The authorization hook: allow, deny with kube-apiserver's 403, the user passed in request
//! extensions, and the optional `create` check on upgrades.

use std::sync::{Arc, Mutex};

use http::{Request, StatusCode};
use kube_bastion::{Attributes, ProxyService};
use kube_bastion::{AuthorizeFuture, Authorizer, Decision, authorize_fn};

use crate::harness::*;

/// The authenticated user, as a host's authentication middleware would insert it.
#[derive(Clone)]
struct User(&'static str);

#[tokio::test]
async fn deny_is_kube_apiservers_403_and_the_backend_sees_nothing() {
    let (backend, rec) = recording_backend(None).await;
    let authz = authorize_fn(|attrs, parts| {
        let user = parts
            .extensions
            .get::<User>()
            .map_or("system:anonymous", |u| u.0);
        if user == "alice" && attrs.verb == "get" {
            Decision::Allow
        } else {
            Decision::deny(user, "")
        }
    });
    let config = config(&[pod_yaml("ns", "web", "127.0.0.1")])
        .authorizer(authz)
        .build()
        .unwrap();
    // A tiny "authentication" wrapper: the user comes from a test header.
    let svc = ProxyService::new(config);
    let authn = tower::service_fn(move |mut req: Request<hyper::body::Incoming>| {
        let mut svc = svc.clone();
        if req
            .headers()
            .get("x-test-user")
            .is_some_and(|v| v == "alice")
        {
            req.extensions_mut().insert(User("alice"));
        } else {
            req.extensions_mut().insert(User("bob"));
        }
        async move { tower::Service::call(&mut svc, req).await }
    });
    let proxy = serve(authn).await;
    let id = format!("web:{}", backend.port());
    let path = format!("/api/v1/namespaces/ns/pods/{id}/proxy/x");

    let (status, _, body) = get(proxy, &path).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (code, reason, message) = status_of(&body);
    assert_eq!((code, reason.as_deref()), (403, Some("Forbidden")));
    assert_eq!(
        message,
        format!(
            "pods \"{id}\" is forbidden: User \"bob\" cannot get resource \"pods/proxy\" in API group \"\" in the namespace \"ns\""
        )
    );
    assert_eq!(rec.count(), 0);

    let req = Request::get(format!("http://{proxy}{path}")).header("x-test-user", "alice");
    let (status, _, _) = send(req.body(empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(rec.count(), 1);

    let req = Request::delete(format!("http://{proxy}{path}")).header("x-test-user", "alice");
    let (status, _, body) = send(req.body(empty()).unwrap()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        status_of(&body)
            .2
            .contains("cannot delete resource \"pods/proxy\"")
    );
    assert_eq!(rec.count(), 1);
}

#[tokio::test]
async fn deny_reason_and_cluster_scope_message() {
    let authz = authorize_fn(|_, _| Decision::deny("carol", "no nodes for you"));
    let config = config(&[]).authorizer(authz).build().unwrap();
    let proxy = serve_proxy(config).await;
    let (status, _, body) = get(proxy, "/api/v1/nodes/n1:10250/proxy/metrics").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        status_of(&body).2,
        "nodes \"n1:10250\" is forbidden: User \"carol\" cannot get resource \"nodes/proxy\" in API group \"\" at the cluster scope: no nodes for you"
    );
}

/// An asynchronous authorizer that records the verbs it was asked about.
#[derive(Clone, Default)]
struct Recording(Arc<Mutex<Vec<&'static str>>>);

impl Authorizer for Recording {
    fn authorize<'a>(
        &'a self,
        attributes: &'a Attributes,
        _: &'a http::request::Parts,
    ) -> AuthorizeFuture<'a> {
        AuthorizeFuture::boxed(async move {
            tokio::task::yield_now().await;
            self.0.lock().unwrap().push(attributes.verb);
            if attributes.verb == "get" {
                Decision::Allow
            } else {
                Decision::deny("dave", "")
            }
        })
    }
}

#[tokio::test]
async fn upgrades_can_require_create() {
    let (backend, rec) = recording_backend(None).await;
    let verbs = Recording::default();
    let config = config(&[pod_yaml("ns", "web", "127.0.0.1")])
        .authorizer(verbs.clone())
        .authorize_upgrades_as_create(true)
        .build()
        .unwrap();
    let proxy = serve_proxy(config).await;
    let uri = format!(
        "http://{proxy}{}",
        pod_path("ns", "web", backend.port(), "/ws")
    );
    let req = Request::get(&uri)
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .body(empty())
        .unwrap();
    let (status, _, body) = send(req).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        status_of(&body)
            .2
            .contains("User \"dave\" cannot create resource \"pods/proxy\"")
    );
    assert_eq!(*verbs.0.lock().unwrap(), ["get", "create"]);
    assert_eq!(rec.count(), 0);

    // Ordinary requests are checked once, with their own verb.
    let (status, _, _) = send(Request::get(&uri).body(empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(*verbs.0.lock().unwrap(), ["get", "create", "get"]);
}
