//! Response rewriting: HTML rewriting throughput on two 1 MiB pages (plain and gzip), a
//! link-dense dashboard and a typical text page, against a pass-through copy and lol_html
//! alone on the same page measured in the same run, and the memory ceiling while rewriting
//! a 100 MiB page (printed before the timings).
//!
//! `cargo bench --locked --bench rewrite -- --warm-up-time 1 --measurement-time 3`

use std::collections::VecDeque;
use std::convert::Infallible;
use std::hint::black_box;
use std::io::Write;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::Bytes;
use criterion::{Criterion, Throughput};
use http_body::{Body, Frame};
use kube_bastion::RewriteOptions;
use kube_bastion::test_util::{RewriteContext, rewrite_response};

/// One repetition of a dashboard-like page: links, an image with srcset, a script, a form,
/// relative and foreign links, and text.
const UNIT: &str = "<tr><td><a href=\"/pods/web-0\">web-0</a></td><td class=\"ok\">Running</td>\
<td><img src=\"/static/ok.png\" srcset=\"/static/ok@2x.png 2x\" alt=\"ok\"></td>\
<td><form action=\"/restart\" method=\"post\"><button formaction=\"/restart?pod=web-0\">restart</button></form></td>\
<td><a href=\"logs?pod=web-0\">logs</a> <a href=\"https://example.com/docs\">docs</a></td>\
<td>Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt.</td></tr>\n";

/// One repetition of a typical text page (documentation, a status page): paragraphs, a
/// list, inline markup and one link every ~190 bytes (5 per 960-byte unit: three absolute
/// paths that are rewritten, one relative and one foreign link).
const TYPICAL_UNIT: &str = "<div class=\"section\"><h2 id=\"metrics\">Scrape metrics</h2>\n\
<p>The exporter serves its metrics on <code>/metrics</code> and reloads the configuration file when it changes. \
Read <a href=\"/docs/configuration.html#reload\">the configuration guide</a> before you change the defaults; \
most options can also be set with environment variables &amp; flags.</p>\n\
<ul><li><strong>scrape_interval</strong>: how often targets are read, 15s unless set otherwise \
(<a href=\"reference/scrape.html\">reference</a>).</li>\n\
<li><strong>timeout</strong>: a scrape that takes longer is counted as failed and shows up in the \
<a href=\"/graph?g0.expr=up&amp;g0.tab=1\">up series</a>.</li></ul>\n\
<p>Alerts follow the rules in <em>rules.yml</em>; the upstream project documents the syntax at \
<a href=\"https://prometheus.io/docs/alerting/latest/\">prometheus.io</a>, and the dashboards link back to \
<a href=\"/alerts?state=firing\">the firing alerts</a> with a short summary of each one.</p></div>\n";

const FRAME: usize = 16 << 10;

/// Fixed frames, as a backend would send them.
struct Frames(VecDeque<Bytes>);

impl Body for Frames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
    }
}

fn frames(data: &Bytes) -> Frames {
    let mut out = VecDeque::new();
    let mut i = 0;
    while i < data.len() {
        let end = (i + FRAME).min(data.len());
        out.push_back(data.slice(i..end));
        i = end;
    }
    Frames(out)
}

/// Polls a body that never waits to its end; returns the bytes produced.
fn drain<B: Body<Data = Bytes> + Unpin>(mut body: B) -> usize
where
    B::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    let mut n = 0;
    loop {
        match Pin::new(&mut body).poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    n += black_box(data).len();
                }
            }
            Poll::Ready(Some(Err(err))) => panic!("body error: {err:?}"),
            Poll::Ready(None) | Poll::Pending => return n,
        }
    }
}

fn ctx(options: RewriteOptions) -> RewriteContext {
    RewriteContext::new(
        "/api/v1/namespaces/monitoring/services/dashboard:http/proxy",
        "10.1.2.3:8080",
        "apiserver.example:6443",
    )
    .with_options(options)
}

/// The link-dense dashboard page.
fn page(len: usize) -> Bytes {
    let mut page =
        String::from("<!DOCTYPE html><html><head><title>pods</title></head><body><table>\n");
    while page.len() < len {
        page.push_str(UNIT);
    }
    page.push_str("</table></body></html>\n");
    Bytes::from(page)
}

/// The typical text page.
fn typical_page(len: usize) -> Bytes {
    let mut page = String::from(
        "<!DOCTYPE html><html><head><title>docs</title>\
         <link rel=\"stylesheet\" href=\"/static/site.css\">\
         <script src=\"/static/site.js\"></script></head><body><main>\n",
    );
    while page.len() < len {
        page.push_str(TYPICAL_UNIT);
    }
    page.push_str("</main></body></html>\n");
    Bytes::from(page)
}

fn gzip(data: &[u8]) -> Bytes {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("gzip");
    Bytes::from(e.finish().expect("gzip"))
}

fn run(ctx: &RewriteContext, headers: &[(&str, &str)], wire: &Bytes) -> usize {
    let mut builder = http::Response::builder();
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let response = builder.body(frames(wire)).expect("response");
    let out = rewrite_response(ctx, response).expect("no Location");
    drain(out.into_body())
}

/// lol_html alone, with one element handler on the same 25 tags that does nothing: the
/// parser's share of the cost with upstream's tag list as selectors.
fn lol_html_parse(html: &[u8]) -> usize {
    let selector = "a,applet,area,audio,base,blockquote,body,button,command,del,embed,\
        form,frame,head,html,iframe,img,input,ins,link,object,q,script,source,video";
    lol_html_run(html, Some(selector))
}

/// lol_html alone over `html` in frames, with a no-op element handler on `selector`.
fn lol_html_run(html: &[u8], selector: Option<&str>) -> usize {
    let mut settings = lol_html::Settings::new();
    if let Some(selector) = selector {
        settings =
            settings.append_element_content_handler(lol_html::element!(selector, |_el| Ok(())));
    }
    let mut n = 0;
    let mut rewriter = lol_html::HtmlRewriter::new(settings, |c: &[u8]| n += c.len());
    for chunk in html.chunks(FRAME) {
        rewriter.write(chunk).expect("parses");
    }
    rewriter.end().expect("parses");
    n
}

/// The rewriting cases for one page.
fn page_group(c: &mut Criterion, name: &str, html: &Bytes) {
    let gz = gzip(html);
    let on = ctx(RewriteOptions::default());
    let off = ctx(RewriteOptions::disabled());
    let plain = [("content-type", "text/html; charset=utf-8")];
    let gzipped = [("content-type", "text/html"), ("content-encoding", "gzip")];

    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Bytes(html.len() as u64));
    group.bench_function("copy_baseline", |b| b.iter(|| run(&off, &plain, html)));
    group.bench_function("html", |b| b.iter(|| run(&on, &plain, html)));
    group.bench_function("html_upstream_attributes_only", |b| {
        let upstream = ctx(RewriteOptions::upstream());
        b.iter(|| run(&upstream, &plain, html))
    });
    group.bench_function("lol_html_parse_baseline", |b| {
        b.iter(|| lol_html_parse(html))
    });
    // lol_html with one no-op handler on `*` (the selector the rewriter uses): the parser's
    // share of the cost in the rewriter's own configuration.
    group.bench_function("lol_html_any_element_baseline", |b| {
        b.iter(|| lol_html_run(html, Some("*")))
    });
    // lol_html with no handler at all: it only scans for tags.
    group.bench_function("lol_html_no_handler_baseline", |b| {
        b.iter(|| lol_html_run(html, None))
    });
    group.bench_function("gzip_copy_baseline", |b| {
        b.iter(|| run(&off, &gzipped, &gz))
    });
    group.bench_function("html_gzip", |b| b.iter(|| run(&on, &gzipped, &gz)));
    group.finish();
}

/// Prints the size and an FNV-1a digest of each page's rewritten output (plain and through
/// gzip), so that runs of different versions can be checked for identical output.
fn output_digests() {
    for (name, html) in [
        ("rewrite_1mib", page(1 << 20)),
        ("rewrite_1mib_typical", typical_page(1 << 20)),
    ] {
        let on = ctx(RewriteOptions::default());
        for (coding, headers, wire) in [
            ("plain", &[("content-type", "text/html")][..], html.clone()),
            (
                "gzip",
                &[("content-type", "text/html"), ("content-encoding", "gzip")][..],
                gzip(&html),
            ),
        ] {
            let mut builder = http::Response::builder();
            for (k, v) in headers {
                builder = builder.header(*k, *v);
            }
            let response = builder.body(frames(&wire)).expect("response");
            let mut body = rewrite_response(&on, response)
                .expect("no Location")
                .into_body();
            let mut out = Vec::new();
            let mut cx = Context::from_waker(Waker::noop());
            while let Poll::Ready(Some(frame)) = Pin::new(&mut body).poll_frame(&mut cx) {
                if let Ok(data) = frame.expect("no error").into_data() {
                    out.extend_from_slice(&data);
                }
            }
            if coding == "gzip" {
                let mut plain = Vec::new();
                std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&out[..]), &mut plain)
                    .expect("gunzip");
                out = plain;
            }
            let digest = out.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
                (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
            });
            println!(
                "output/{name}/{coding}: {} bytes in, {} bytes out, fnv1a64 {digest:016x}",
                html.len(),
                out.len()
            );
        }
    }
}

fn throughput(c: &mut Criterion) {
    page_group(c, "rewrite_1mib", &page(1 << 20));
    page_group(c, "rewrite_1mib_typical", &typical_page(1 << 20));
}

/// A 100 MiB page generated frame by frame (never held in memory), optionally gzip.
struct Generated {
    remaining: usize,
    unit_frame: Bytes,
    encoder: Option<flate2::write::GzEncoder<Vec<u8>>>,
}

impl Body for Generated {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        if this.remaining == 0 {
            return Poll::Ready(
                this.encoder
                    .take()
                    .map(|e| Ok(Frame::data(Bytes::from(e.finish().expect("gzip"))))),
            );
        }
        let frame = this.unit_frame.clone();
        this.remaining = this.remaining.saturating_sub(frame.len());
        Poll::Ready(Some(Ok(Frame::data(match &mut this.encoder {
            None => frame,
            Some(e) => {
                e.write_all(&frame).expect("gzip");
                e.flush().expect("gzip");
                Bytes::from(std::mem::take(e.get_mut()))
            }
        }))))
    }
}

fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Rewrites a 100 MiB page and reports how far the resident set grew while doing it.
fn memory_ceiling(gzip: bool) {
    const TOTAL: usize = 100 << 20;
    let unit_frame = Bytes::from(UNIT.repeat(FRAME / UNIT.len() + 1));
    let body = Generated {
        remaining: TOTAL,
        unit_frame,
        encoder: gzip
            .then(|| flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast())),
    };
    let mut builder = http::Response::builder().header("content-type", "text/html");
    if gzip {
        builder = builder.header("content-encoding", "gzip");
    }
    let out = rewrite_response(
        &ctx(RewriteOptions::default()),
        builder.body(body).expect("ok"),
    )
    .expect("no Location");
    let mut body = out.into_body();
    let before = status_kib("VmRSS:").unwrap_or(0);
    let mut peak = before;
    let mut cx = Context::from_waker(Waker::noop());
    let (mut frames, mut bytes) = (0u64, 0usize);
    let start = Instant::now();
    while let Poll::Ready(Some(frame)) = Pin::new(&mut body).poll_frame(&mut cx) {
        bytes += frame.expect("no error").into_data().map_or(0, |d| d.len());
        frames += 1;
        if frames % 16 == 0 {
            peak = peak.max(status_kib("VmRSS:").unwrap_or(0));
        }
    }
    let elapsed = start.elapsed();
    println!(
        "memory_ceiling/{}: 100 MiB page, {} output bytes in {:.2?} ({:.0} MiB/s); \
         RSS before {} KiB, peak {} KiB, growth {} KiB",
        if gzip { "gzip" } else { "plain" },
        bytes,
        elapsed,
        TOTAL as f64 / (1 << 20) as f64 / elapsed.as_secs_f64(),
        before,
        peak,
        peak.saturating_sub(before)
    );
}

fn main() {
    output_digests();
    memory_ceiling(false);
    memory_ceiling(true);
    let mut c = Criterion::default().configure_from_args();
    throughput(&mut c);
    c.final_summary();
}
