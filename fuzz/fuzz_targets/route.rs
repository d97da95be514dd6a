//! Routing, planning and id parsing must never panic, whatever the request line says.
#![no_main]

use kube_bastion_core::{ProxyRequest, Route};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (method, rest) = match data.iter().position(|b| *b == b' ') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&b"GET"[..], data),
    };
    let Ok(method) = http::Method::from_bytes(method) else {
        return;
    };
    let Ok(uri) = http::Uri::try_from(rest) else {
        return;
    };
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("Upgrade"),
    );
    if let Route::Proxy(request) = ProxyRequest::route(&method, &uri, &headers) {
        let _ = request.attributes();
        let _ = request.check();
        let _ = request.target_id();
        let _ = request.plan();
    }
});
