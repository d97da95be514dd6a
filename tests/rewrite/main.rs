//! Response rewriting: data-driven over the upstream vectors, streaming behaviour, header
//! rules and switches, and (through the real proxy) end to end.

#[path = "../support/mod.rs"]
mod support;

mod bodies;
mod e2e;
mod headers;
mod html_events;
mod streaming;
mod vectors;

use bytes::Bytes;
use http_body_util::BodyExt;
use kube_bastion::RewriteOptions;
use kube_bastion::test_util::{RewriteContext, rewrite_response};

/// The apiserver-typical context used by most tests.
pub(crate) const PREFIX: &str = "/api/v1/namespaces/ns/services/svc/proxy";

pub(crate) fn ctx() -> RewriteContext {
    RewriteContext::new(PREFIX, "10.1.2.3:8080", "apiserver:6443")
}

/// Builds a backend response.
pub(crate) fn response<B>(headers: &[(&str, &str)], body: B) -> http::Response<B> {
    let mut builder = http::Response::builder().status(200);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(body).expect("valid test response")
}

/// Rewrites a one-chunk HTML body and returns the output body.
pub(crate) async fn rewrite_html(ctx: &RewriteContext, html: &str) -> String {
    let resp = response(
        &[("content-type", "text/html; charset=utf-8")],
        bodies::chunks([html.as_bytes().to_vec()]),
    );
    let out = rewrite_response(ctx, resp).expect("no Location");
    let bytes = out.into_body().collect().await.expect("body").to_bytes();
    String::from_utf8(bytes.to_vec()).expect("utf-8 output")
}

/// Collects a body, returning the data and whether it ended with an error.
pub(crate) async fn collect_lossy<B>(body: B) -> (Vec<u8>, Option<B::Error>)
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    let mut body = body;
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    out.extend_from_slice(&data);
                }
            }
            Err(err) => return (out, Some(err)),
        }
    }
    (out, None)
}

/// Options with none of our additions, for upstream's vectors.
pub(crate) fn upstream() -> RewriteOptions {
    RewriteOptions::upstream()
}
