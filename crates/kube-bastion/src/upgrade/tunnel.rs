//! The tunnel: bytes copied both ways between the upgraded client connection and the
//! backend, with half-close propagation, an idle timeout, an optional rate limit per
//! direction and graceful shutdown.

use std::io;
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::ratelimit::TokenBucket;
use super::shutdown::Shutdown;

/// The read buffer of each direction when a tunnel opens.
const MIN_CHUNK: usize = 32 * 1024;

/// The largest read buffer of a direction (before any rate limit shrinks the reads).
///
/// A buffer grows, by doubling, only when a read fills it: a busy direction then moves up to
/// this much per system call, while an interactive or idle tunnel (and a rate-limited one)
/// keeps [`MIN_CHUNK`]; a read of an eighth of the buffer or less shrinks it back to
/// [`MIN_CHUNK`], so a tunnel that goes quiet after a burst does not keep the large one.
/// Going from 32 KiB to 256 KiB cuts the CPU time of a bulk transfer
/// through the proxy by 10 to 25 % (`benches/tunnel.rs`, `docs/benchmarks.md`); beyond that
/// the gain is within noise. A busy tunnel holds at most twice this much.
const MAX_CHUNK: usize = 256 * 1024;

/// The read buffer's next length after a read of `n` bytes into `len`: doubled (up to
/// [`MAX_CHUNK`]) when the read filled it and no rate limit applies, back to [`MIN_CHUNK`]
/// when the read used an eighth of it or less, else unchanged.
fn next_buffer_len(len: usize, n: usize, rate_limited: bool) -> usize {
    if !rate_limited && n == len && len < MAX_CHUNK {
        (len * 2).min(MAX_CHUNK)
    } else if len > MIN_CHUNK && n <= len / 8 {
        MIN_CHUNK
    } else {
        len
    }
}

/// How a tunnel ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub(crate) enum TunnelEnd {
    /// Both sides closed their sending half (each half-close was passed on).
    Closed,
    /// No byte moved in either direction for the idle timeout.
    IdleTimeout,
    /// The shutdown grace period passed while the tunnel was open.
    Shutdown,
    /// Reading or writing failed on one side (reset, broken pipe, TLS error, ...).
    Error(io::ErrorKind),
}

/// What a tunnel did: bytes each way and how it ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TunnelReport {
    /// Bytes read from the client and written to the backend.
    pub client_to_backend: u64,
    /// Bytes read from the backend and written to the client.
    pub backend_to_client: u64,
    /// Why the tunnel ended.
    pub end: TunnelEnd,
}

/// Tunnel settings, taken from [`super::UpgradeOptions`].
#[derive(Clone, Debug)]
pub(crate) struct TunnelSettings {
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) max_bytes_per_sec: Option<NonZeroU64>,
    pub(crate) shutdown: Shutdown,
}

/// Time of the last byte moved, in milliseconds since `start`.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// Resolves once nothing moved for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let due = self.last() + idle;
            if Instant::now() >= due {
                return;
            }
            tokio::time::sleep_until(due).await;
        }
    }
}

/// Copies `reader` to `writer` until end of stream, then shuts `writer` down (half-close).
async fn pump<R, W>(
    mut reader: R,
    mut writer: W,
    rate: Option<NonZeroU64>,
    activity: &Activity,
    moved: &AtomicU64,
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut bucket = rate.map(|rate| TokenBucket::new(rate, Instant::now()));
    let mut buf = vec![0u8; MIN_CHUNK];
    loop {
        let want = bucket
            .as_ref()
            .map_or(buf.len(), |b| b.chunk().min(buf.len()));
        let n = reader.read(&mut buf[..want]).await?;
        if n == 0 {
            writer.shutdown().await?;
            return Ok(());
        }
        activity.touch();
        // Pay for the bytes before they leave, so no byte arrives ahead of the rate.
        if let Some(bucket) = bucket.as_mut() {
            let wait = bucket.take(n, Instant::now());
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
        writer.write_all(&buf[..n]).await?;
        writer.flush().await?;
        activity.touch();
        moved.fetch_add(n as u64, Ordering::Relaxed);
        // A full buffer means more was waiting: read more at once next time. A rate-limited
        // direction keeps its chunk size, so its pacing is unchanged.
        let next = next_buffer_len(buf.len(), n, bucket.is_some());
        if next > buf.len() {
            buf.resize(next, 0);
        } else if next < buf.len() {
            // The burst is over: an idle tunnel goes back to holding the smallest buffer.
            buf.truncate(next);
            buf.shrink_to_fit();
        }
    }
}

/// Copies bytes both ways between `client` and `backend` until both directions have ended,
/// either side fails, nothing moves for the idle timeout, or the shutdown grace period ends.
///
/// When one side closes its sending half, the other side's sending half is shut down and the
/// opposite direction keeps flowing (half-close). Both connections are dropped, so closed,
/// when this returns.
pub(crate) async fn splice<C, B>(client: C, backend: B, settings: &TunnelSettings) -> TunnelReport
where
    C: AsyncRead + AsyncWrite,
    B: AsyncRead + AsyncWrite,
{
    let activity = Activity::new();
    let up = AtomicU64::new(0);
    let down = AtomicU64::new(0);
    let (client_read, client_write) = tokio::io::split(client);
    let (backend_read, backend_write) = tokio::io::split(backend);
    let rate = settings.max_bytes_per_sec;
    let both = async {
        tokio::try_join!(
            pump(client_read, backend_write, rate, &activity, &up),
            pump(backend_read, client_write, rate, &activity, &down),
        )
    };
    let idle = async {
        match settings.idle_timeout {
            Some(idle) => activity.idle_for(idle).await,
            None => std::future::pending().await,
        }
    };
    let end = tokio::select! {
        result = both => match result {
            Ok(_) => TunnelEnd::Closed,
            Err(e) => TunnelEnd::Error(e.kind()),
        },
        () = idle => TunnelEnd::IdleTimeout,
        () = settings.shutdown.deadline_passed() => TunnelEnd::Shutdown,
    };
    TunnelReport {
        client_to_backend: up.load(Ordering::Relaxed),
        backend_to_client: down.load(Ordering::Relaxed),
        end,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};

    fn settings() -> TunnelSettings {
        TunnelSettings {
            idle_timeout: None,
            max_bytes_per_sec: None,
            shutdown: Shutdown::new(),
        }
    }

    /// client_end <-> [client side | tunnel | backend side] <-> backend_end
    fn pair() -> ((DuplexStream, DuplexStream), (DuplexStream, DuplexStream)) {
        let (client_end, client_side) = duplex(64 * 1024);
        let (backend_side, backend_end) = duplex(64 * 1024);
        ((client_end, client_side), (backend_side, backend_end))
    }

    #[tokio::test]
    async fn copies_both_ways_and_propagates_half_close() {
        let ((mut client, client_side), (backend_side, mut backend)) = pair();
        let tunnel =
            tokio::spawn(async move { splice(client_side, backend_side, &settings()).await });

        client.write_all(b"hello backend").await.unwrap();
        let mut buf = [0u8; 13];
        backend.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hello backend");

        // The client stops sending: the backend sees end of stream...
        client.shutdown().await.unwrap();
        let mut rest = Vec::new();
        backend.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        // ...and can still answer, in several writes, before closing its side.
        let big = vec![7u8; 300 * 1024];
        let answer = {
            let big = big.clone();
            tokio::spawn(async move {
                backend.write_all(&big).await.unwrap();
                backend.write_all(b"bye").await.unwrap();
                backend.shutdown().await.unwrap();
                backend
            })
        };
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        let _backend = answer.await.unwrap();
        assert_eq!(got.len(), big.len() + 3);
        assert!(got.ends_with(b"bye"));

        let report = tunnel.await.unwrap();
        assert_eq!(report.end, TunnelEnd::Closed);
        assert_eq!(report.client_to_backend, 13);
        assert_eq!(report.backend_to_client, big.len() as u64 + 3);
    }

    #[test]
    fn buffers_grow_while_reads_fill_them_and_shrink_when_quiet() {
        assert_eq!(next_buffer_len(MIN_CHUNK, MIN_CHUNK, false), 2 * MIN_CHUNK);
        assert_eq!(next_buffer_len(MAX_CHUNK, MAX_CHUNK, false), MAX_CHUNK);
        assert_eq!(next_buffer_len(MIN_CHUNK, MIN_CHUNK, true), MIN_CHUNK);
        assert_eq!(next_buffer_len(MIN_CHUNK, 10, false), MIN_CHUNK);
        assert_eq!(next_buffer_len(MAX_CHUNK, MAX_CHUNK / 2, false), MAX_CHUNK);
        assert_eq!(next_buffer_len(MAX_CHUNK, MAX_CHUNK / 8, false), MIN_CHUNK);
        assert_eq!(next_buffer_len(4 * MIN_CHUNK, 100, true), MIN_CHUNK);
    }

    #[tokio::test]
    async fn bulk_transfers_arrive_intact_both_ways() {
        // Pipes wide enough that reads fill the growing buffers up to their largest size.
        let (client, client_side) = duplex(1 << 20);
        let (backend_side, backend) = duplex(1 << 20);
        let tunnel =
            tokio::spawn(async move { splice(client_side, backend_side, &settings()).await });
        let pattern = |len: usize, seed: u8| -> Vec<u8> {
            (0..len)
                .map(|i| (i % 251) as u8 ^ seed)
                .collect::<Vec<u8>>()
        };
        let up = pattern(3 * MAX_CHUNK + 12_345, 0x5a);
        let down = pattern(5 * MAX_CHUNK + 7, 0xa5);
        let (mut client_read, mut client_write) = tokio::io::split(client);
        let (mut backend_read, mut backend_write) = tokio::io::split(backend);
        let send_up = {
            let up = up.clone();
            tokio::spawn(async move {
                client_write.write_all(&up).await.unwrap();
                client_write.shutdown().await.unwrap();
            })
        };
        let send_down = {
            let down = down.clone();
            tokio::spawn(async move {
                backend_write.write_all(&down).await.unwrap();
                backend_write.shutdown().await.unwrap();
            })
        };
        let mut got_up = Vec::new();
        let mut got_down = Vec::new();
        let (a, b) = tokio::join!(
            backend_read.read_to_end(&mut got_up),
            client_read.read_to_end(&mut got_down)
        );
        a.unwrap();
        b.unwrap();
        send_up.await.unwrap();
        send_down.await.unwrap();
        assert!(got_up == up, "client to backend bytes differ");
        assert!(got_down == down, "backend to client bytes differ");
        let report = tunnel.await.unwrap();
        assert_eq!(report.end, TunnelEnd::Closed);
        assert_eq!(report.client_to_backend, up.len() as u64);
        assert_eq!(report.backend_to_client, down.len() as u64);
    }

    #[tokio::test]
    async fn idle_timeout_closes_both_sides() {
        let ((mut client, client_side), (backend_side, mut backend)) = pair();
        let settings = TunnelSettings {
            idle_timeout: Some(Duration::from_millis(600)),
            ..settings()
        };
        let tunnel =
            tokio::spawn(async move { splice(client_side, backend_side, &settings).await });
        // Traffic every 100 ms keeps the tunnel open past an idle period...
        for _ in 0..8 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            client.write_all(b"x").await.unwrap();
            let mut one = [0u8; 1];
            backend.read_exact(&mut one).await.unwrap();
        }
        assert!(!tunnel.is_finished());
        // ...silence ends it, and both ends see the close.
        let report = tunnel.await.unwrap();
        assert_eq!(report.end, TunnelEnd::IdleTimeout);
        assert_eq!(report.client_to_backend, 8);
        let mut rest = Vec::new();
        assert_eq!(client.read_to_end(&mut rest).await.unwrap(), 0);
        assert_eq!(backend.read_to_end(&mut rest).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn shutdown_deadline_closes_open_tunnels() {
        let ((mut client, client_side), (backend_side, _backend)) = pair();
        let shutdown = Shutdown::new();
        let settings = TunnelSettings {
            shutdown: shutdown.clone(),
            ..settings()
        };
        let tunnel =
            tokio::spawn(async move { splice(client_side, backend_side, &settings).await });
        shutdown.trigger(Duration::from_millis(50));
        let report = tunnel.await.unwrap();
        assert_eq!(report.end, TunnelEnd::Shutdown);
        let mut rest = Vec::new();
        assert_eq!(client.read_to_end(&mut rest).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn rate_limit_paces_each_direction() {
        let ((mut client, client_side), (backend_side, mut backend)) = pair();
        let rate = 256 * 1024;
        let settings = TunnelSettings {
            max_bytes_per_sec: NonZeroU64::new(rate),
            ..settings()
        };
        let tunnel =
            tokio::spawn(async move { splice(client_side, backend_side, &settings).await });
        // 128 KiB at 256 KiB/s: the bucket lets a tenth of a second through at once, so the
        // rest takes at least (128 - 25.6) / 256 s = 0.4 s.
        let total = 128 * 1024;
        let start = Instant::now();
        let writer = tokio::spawn(async move {
            client.write_all(&vec![1u8; total]).await.unwrap();
            client.shutdown().await.unwrap();
            client
        });
        let mut got = Vec::new();
        backend.read_to_end(&mut got).await.unwrap();
        let elapsed = start.elapsed();
        assert_eq!(got.len(), total);
        assert!(elapsed >= Duration::from_millis(390), "{elapsed:?}");
        backend.shutdown().await.unwrap();
        drop(writer.await.unwrap());
        assert_eq!(tunnel.await.unwrap().end, TunnelEnd::Closed);
    }

    #[tokio::test]
    async fn a_failing_side_ends_the_tunnel() {
        let ((client, client_side), (backend_side, mut backend)) = pair();
        let tunnel =
            tokio::spawn(async move { splice(client_side, backend_side, &settings()).await });
        // The backend keeps writing to a client that went away.
        drop(client);
        let report = loop {
            if backend.write_all(&[0u8; 4096]).await.is_err() {
                break tunnel.await.unwrap();
            }
            if tunnel.is_finished() {
                break tunnel.await.unwrap();
            }
        };
        assert!(matches!(report.end, TunnelEnd::Error(_)), "{report:?}");
    }
}
