//! TLS backends with rcgen certificates: HTTP/2 by ALPN, verification off (upstream's
//! default) and on, kubelet client certificates, and handshake failures.

use http::{StatusCode, Version};
use kube_bastion::{ClientIdentity, Roots};

use crate::harness::*;

#[tokio::test]
async fn https_pod_unverified_by_default_speaks_http2_by_alpn() {
    // A certificate for a name the proxy never asks for: upstream skips verification.
    let id = TlsIdentity::new(&["unrelated.example"]);
    let (backend, rec) = recording_backend(Some(&id)).await;
    let proxy = serve_proxy(
        config(&[pod_yaml("ns", "web", "127.0.0.1")])
            .build()
            .unwrap(),
    )
    .await;
    let (status, headers, body) = get(
        proxy,
        &format!(
            "/api/v1/namespaces/ns/pods/https:web:{}/proxy/tls",
            backend.port()
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(headers["x-backend-version"], "HTTP/2.0");
    assert_eq!(rec.last().version, Version::HTTP_2);
    assert_eq!(rec.last().uri.path(), "/tls");
}

#[tokio::test]
async fn verified_service_backend_accepts_the_right_name_and_refuses_others() {
    let good = TlsIdentity::new(&["svc.ns.svc"]);
    let (backend, rec) = recording_backend(Some(&good)).await;
    let docs = [
        pod_yaml("ns", "web", "127.0.0.1"),
        service_yaml(
            "ns",
            "svc",
            443,
            Some("https"),
            &[("web", "127.0.0.1", backend.port())],
        ),
    ];
    let roots = Roots::from_pem(good.cert_pem.as_bytes()).unwrap();
    let proxy = serve_proxy(config(&docs).verify_backends(roots).build().unwrap()).await;
    let (status, _, body) = get(proxy, "/api/v1/namespaces/ns/services/svc:http/proxy/").await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(rec.count(), 1);

    // Same backend, trust anchored on a different certificate: the handshake fails.
    let other = TlsIdentity::new(&["svc.ns.svc"]);
    let roots = Roots::from_pem(other.cert_pem.as_bytes()).unwrap();
    let proxy = serve_proxy(config(&docs).verify_backends(roots).build().unwrap()).await;
    let (status, _, body) = get(proxy, "/api/v1/namespaces/ns/services/svc:http/proxy/").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let message = status_of(&body).2;
    assert!(
        message.starts_with("error trying to reach service: tls handshake with 127.0.0.1:"),
        "{message}"
    );
    assert_eq!(rec.count(), 1);
}

#[tokio::test]
async fn plain_backend_behind_https_scheme_is_a_tls_failure() {
    let (backend, rec) = recording_backend(None).await;
    let proxy = serve_proxy(
        config(&[pod_yaml("ns", "web", "127.0.0.1")])
            .build()
            .unwrap(),
    )
    .await;
    let (status, _, body) = get(
        proxy,
        &format!(
            "/api/v1/namespaces/ns/pods/https:web:{}/proxy/",
            backend.port()
        ),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        status_of(&body).2.contains("tls handshake"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(rec.count(), 0);
}

#[tokio::test]
async fn kubelet_gets_the_client_certificate_and_is_verified_against_its_ca() {
    let client_id = TlsIdentity::new(&["kube-apiserver-kubelet-client"]);
    let kubelet = TlsIdentity::new(&["127.0.0.1"]).requiring_client_cert(&client_id);
    let (backend, rec) = recording_backend(Some(&kubelet)).await;
    let docs = [node_yaml("n1", "InternalIP", "127.0.0.1", backend.port())];

    let identity =
        ClientIdentity::from_pem(client_id.cert_pem.as_bytes(), client_id.key_pem.as_bytes())
            .unwrap();
    let ca = Roots::from_pem(kubelet.cert_pem.as_bytes()).unwrap();
    let proxy = serve_proxy(
        config(&docs)
            .kubelet_client_identity(identity)
            .kubelet_ca(ca)
            .build()
            .unwrap(),
    )
    .await;
    let (status, _, body) = get(proxy, "/api/v1/nodes/n1/proxy/metrics").await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(rec.last().uri.path(), "/metrics");

    // Without the client certificate the kubelet refuses the handshake.
    let proxy = serve_proxy(config(&docs).build().unwrap()).await;
    let (status, _, body) = get(proxy, "/api/v1/nodes/n1/proxy/metrics").await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(rec.count(), 1);
}

#[tokio::test]
async fn node_hostnames_are_resolved_once_and_the_checked_ip_dialed() {
    let kubelet = TlsIdentity::new(&["localhost"]);
    let (backend, rec) = recording_backend(Some(&kubelet)).await;
    let docs = [node_yaml("n1", "Hostname", "localhost", backend.port())];
    let ca = Roots::from_pem(kubelet.cert_pem.as_bytes()).unwrap();
    let proxy = serve_proxy(config(&docs).kubelet_ca(ca).build().unwrap()).await;
    let (status, _, body) = get(proxy, "/api/v1/nodes/n1/proxy/healthz").await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(rec.count(), 1);

    // The default policy judges the resolved loopback address and refuses it.
    let config = kube_bastion::ProxyConfig::builder(cluster(&docs))
        .build()
        .unwrap();
    let proxy = serve_proxy(config).await;
    let (status, _, body) = get(proxy, "/api/v1/nodes/n1/proxy/healthz").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(status_of(&body).2, "address not allowed");
    assert_eq!(rec.count(), 1);
}

#[tokio::test]
async fn a_connection_verified_for_one_service_name_is_never_reused_for_another() {
    // One pod serves two Services; its certificate names only the first. With verification
    // on, the second Service must fail its own handshake even though a connection to the
    // same address, verified for the first name, sits idle in the pool.
    let cert = TlsIdentity::new(&["first.ns.svc"]);
    let (backend, rec) = recording_backend(Some(&cert)).await;
    let endpoints = [("web", "127.0.0.1", backend.port())];
    let docs = [
        pod_yaml("ns", "web", "127.0.0.1"),
        service_yaml("ns", "first", 443, Some("https"), &endpoints),
        service_yaml("ns", "second", 443, Some("https"), &endpoints),
    ];
    let roots = Roots::from_pem(cert.cert_pem.as_bytes()).unwrap();
    let proxy = serve_proxy(config(&docs).verify_backends(roots).build().unwrap()).await;

    let first = "/api/v1/namespaces/ns/services/first:http/proxy/";
    let (status, _, body) = get(proxy, first).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let (status, _, body) = get(proxy, "/api/v1/namespaces/ns/services/second:http/proxy/").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let message = status_of(&body).2;
    assert!(
        message.starts_with("error trying to reach service: tls handshake with 127.0.0.1:"),
        "{message}"
    );
    assert_eq!(
        rec.count(),
        1,
        "the second Service's request never reached the pod"
    );
    // The first Service still gets its pooled connection.
    let (status, _, _) = get(proxy, first).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(rec.count(), 2);
}
