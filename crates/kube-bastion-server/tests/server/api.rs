//! The apiserver face: version, health, discovery, get/list, the Table form, 404 and 405.

use crate::support::{Server, TempDir, get, kubectl, request, run_ok};

#[tokio::test]
async fn version_health_and_discovery() {
    let server = Server::demo(&[]);
    let version = get(&server, "/version").await.json();
    assert_eq!(version["major"], "1");
    assert!(version["gitVersion"].as_str().unwrap().starts_with("v1."));
    for path in ["/healthz", "/livez", "/readyz"] {
        let reply = get(&server, path).await;
        assert_eq!((reply.status, reply.body.as_str()), (200, "ok"), "{path}");
    }
    let api = get(&server, "/api").await.json();
    assert_eq!(api["kind"], "APIVersions");
    assert_eq!(api["versions"][0], "v1");
    let v1 = get(&server, "/api/v1").await.json();
    assert_eq!(v1["kind"], "APIResourceList");
    let names: Vec<&str> = v1["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    for name in [
        "pods",
        "pods/proxy",
        "services",
        "services/proxy",
        "endpoints",
        "nodes",
        "nodes/proxy",
        "namespaces",
    ] {
        assert!(names.contains(&name), "{name} not in {names:?}");
    }
    let apis = get(&server, "/apis").await.json();
    assert_eq!(apis["kind"], "APIGroupList");
    assert_eq!(apis["groups"][0]["name"], "discovery.k8s.io");
    assert_eq!(
        get(&server, "/apis/discovery.k8s.io").await.json()["kind"],
        "APIGroup"
    );
    let group = get(&server, "/apis/discovery.k8s.io/v1").await.json();
    assert_eq!(group["resources"][0]["name"], "endpointslices");
}

#[tokio::test]
async fn aggregated_discovery_and_openapi_fall_back_cleanly() {
    let server = Server::demo(&[]);
    // kubectl asks for aggregated discovery first, with plain JSON as its fallback.
    let accept =
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json";
    let reply = request(
        "GET",
        &format!("{}/api", server.url),
        &[("Accept", accept)],
        "",
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.json()["kind"], "APIVersions");
    for path in ["/openapi/v2", "/openapi/v3"] {
        let reply = get(&server, path).await;
        assert_eq!(reply.status, 404, "{path}");
        assert_eq!(reply.json()["reason"], "NotFound");
    }
}

#[tokio::test]
async fn get_and_list_return_objects_and_typed_lists() {
    let server = Server::demo(&[]);
    let pods = get(&server, "/api/v1/namespaces/demo/pods").await.json();
    assert_eq!(pods["kind"], "PodList");
    assert_eq!(pods["apiVersion"], "v1");
    assert_eq!(pods["items"].as_array().unwrap().len(), 5);
    assert_eq!(pods["items"][0]["kind"], "Pod");
    let all = get(&server, "/api/v1/pods").await.json();
    assert_eq!(all["items"].as_array().unwrap().len(), 5);
    let other = get(&server, "/api/v1/namespaces/other/pods").await.json();
    assert_eq!(other["items"].as_array().unwrap().len(), 0);
    let selected = get(
        &server,
        "/api/v1/namespaces/demo/pods?labelSelector=app%3Decho",
    )
    .await
    .json();
    assert_eq!(selected["items"].as_array().unwrap().len(), 3);
    let pod = get(&server, "/api/v1/namespaces/demo/pods/echo-1")
        .await
        .json();
    assert_eq!(pod["kind"], "Pod");
    assert_eq!(pod["metadata"]["name"], "echo-1");
    for (path, kind) in [
        ("/api/v1/namespaces/demo/services", "ServiceList"),
        ("/api/v1/services", "ServiceList"),
        ("/api/v1/namespaces/demo/endpoints", "EndpointsList"),
        ("/api/v1/endpoints", "EndpointsList"),
        ("/api/v1/nodes", "NodeList"),
        ("/api/v1/namespaces", "NamespaceList"),
        (
            "/apis/discovery.k8s.io/v1/endpointslices",
            "EndpointSliceList",
        ),
        (
            "/apis/discovery.k8s.io/v1/namespaces/demo/endpointslices",
            "EndpointSliceList",
        ),
    ] {
        assert_eq!(get(&server, path).await.json()["kind"], kind, "{path}");
    }
    assert_eq!(
        get(&server, "/api/v1/nodes/node-1").await.json()["kind"],
        "Node"
    );
    assert_eq!(
        get(&server, "/api/v1/namespaces/demo").await.json()["kind"],
        "Namespace"
    );
    assert_eq!(
        get(
            &server,
            "/apis/discovery.k8s.io/v1/namespaces/demo/endpointslices/echo-demo"
        )
        .await
        .json()["kind"],
        "EndpointSlice"
    );
    let missing = get(&server, "/api/v1/namespaces/demo/services/nope").await;
    assert_eq!(missing.status, 404);
    let status = missing.json();
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["message"], "services \"nope\" not found");
    assert_eq!(status["details"]["name"], "nope");
}

#[tokio::test]
async fn table_form_for_kubectl() {
    let server = Server::demo(&[]);
    let accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
    let reply = request(
        "GET",
        &format!("{}/api/v1/namespaces/demo/pods", server.url),
        &[("Accept", accept)],
        "",
    )
    .await;
    let table = reply.json();
    assert_eq!(table["kind"], "Table");
    assert_eq!(table["apiVersion"], "meta.k8s.io/v1");
    let columns: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        &columns[..6],
        ["Name", "Ready", "Status", "Restarts", "Age", "IP"]
    );
    let row = &table["rows"][0];
    assert_eq!(row["cells"][0], "echo-0");
    assert_eq!(row["cells"][1], "1/1");
    assert_eq!(row["cells"][2], "Running");
    assert_eq!(row["object"]["kind"], "PartialObjectMetadata");
    assert_eq!(row["object"]["metadata"]["namespace"], "demo");
}

#[tokio::test]
async fn unknown_paths_are_404_and_writes_are_405() {
    let server = Server::demo(&[]);
    for path in [
        "/nothing",
        "/api/v2",
        "/api/v1/secrets",
        "/api/v1/namespaces/demo/secrets",
    ] {
        let reply = get(&server, path).await;
        assert_eq!(reply.status, 404, "{path}");
        let status = reply.json();
        assert_eq!(status["kind"], "Status");
        assert_eq!(
            status["message"],
            "the server could not find the requested resource"
        );
    }
    for method in ["POST", "PUT", "PATCH", "DELETE"] {
        for path in [
            "/api/v1/namespaces/demo/pods",
            "/api/v1/namespaces/demo/pods/echo-0",
            "/anything",
        ] {
            let reply = request(method, &format!("{}{path}", server.url), &[], "{}").await;
            assert_eq!(reply.status, 405, "{method} {path}");
            assert_eq!(reply.json()["reason"], "MethodNotAllowed");
        }
    }
}

#[test]
fn kubectl_get_prints_useful_columns() {
    let server = Server::demo(&[]);
    let dir = TempDir::new("kubectl-get");
    let out =
        run_ok(kubectl(&server.url, dir.path()).args(["get", "pods,svc,nodes", "-n", "demo"]));
    for needle in [
        "pod/echo-0",
        "Running",
        "READY",
        "STATUS",
        "IP",
        "service/echo",
        "CLUSTER-IP",
        "PORT(S)",
        "80/TCP",
        "node/node-1",
        "Ready",
        "ADDRESSES",
        "InternalIP=",
    ] {
        assert!(out.contains(needle), "{needle} missing from:\n{out}");
    }
    let wide = run_ok(kubectl(&server.url, dir.path()).args(["get", "pods", "-A", "-o", "wide"]));
    assert!(
        wide.contains("NAMESPACE") && wide.contains("node-1") && wide.contains("http:8080"),
        "{wide}"
    );
    let one = run_ok(kubectl(&server.url, dir.path()).args([
        "get",
        "pod",
        "web-0",
        "-n",
        "demo",
        "-o",
        "jsonpath={.status.podIP}",
    ]));
    assert!(one.ends_with(".21"), "{one}");
    let missing = kubectl(&server.url, dir.path())
        .args(["get", "svc", "nope", "-n", "demo"])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("services \"nope\" not found"));
}
