//! The bounded queue between the request path and the audit log, and the thread that writes
//! it.
//!
//! [`AuditLog::emit`] never blocks: an event goes into a bounded channel
//! (`--audit-log-batch-buffer-size` events, and at most [`MAX_QUEUED_BYTES`] of request
//! text), or is dropped and counted when either bound is reached. One writer thread
//! serializes the events into a `BufWriter` over the file (or stdout) and flushes whenever
//! the queue is empty, so a line reaches the file right after a burst ends, and a burst costs
//! one write per 64 KiB.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;

use super::Entry;

/// The most request text (URIs, user agents, source addresses) queued events may hold: with
/// 64 KiB request URIs, 10,000 queued events would otherwise hold 640 MiB.
pub(crate) const MAX_QUEUED_BYTES: usize = 64 << 20;

/// What the writer thread receives.
enum Message {
    Event(Entry),
    /// Write what is queued, flush and stop.
    Stop,
}

/// The sending half: cheap to share, never blocks.
#[derive(Debug)]
pub(crate) struct AuditLog {
    sender: SyncSender<Message>,
    /// Estimated bytes held by queued events.
    queued: Arc<AtomicUsize>,
    /// Events dropped because the queue was full (rendered by `/metrics`).
    dropped: Arc<AtomicU64>,
    max_bytes: usize,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Message::Event(_) => f.write_str("Event"),
            Message::Stop => f.write_str("Stop"),
        }
    }
}

impl AuditLog {
    /// Queues `entry` for the writer; when the queue is full (in events or bytes) the event
    /// is dropped and counted instead. Returns whether it was queued.
    pub(crate) fn emit(&self, entry: Entry) -> bool {
        let cost = entry.cost();
        let before = self.queued.fetch_add(cost, Ordering::Relaxed);
        if before.saturating_add(cost) > self.max_bytes {
            self.queued.fetch_sub(cost, Ordering::Relaxed);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        match self.sender.try_send(Message::Event(entry)) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.queued.fetch_sub(cost, Ordering::Relaxed);
                self.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }
}

/// The writer thread; [`Writer::close`] writes what is queued and stops it.
#[derive(Debug)]
pub(crate) struct Writer {
    sender: SyncSender<Message>,
    thread: JoinHandle<()>,
}

impl Writer {
    /// Writes the events queued so far, flushes and waits for the thread to end. Events
    /// emitted after this are dropped (and counted).
    pub(crate) fn close(self) {
        // The queue may be full: this waits for room, which the writer makes.
        let _ = self.sender.send(Message::Stop);
        let _ = self.thread.join();
    }
}

/// Opens `path` (`-`: standard output) for appending, created with mode 0600 (and its
/// directory with 0700) if missing, and starts the writer thread with a queue of `capacity`
/// events. `dropped` counts the events the full queue refused.
pub(crate) fn open(
    path: &Path,
    capacity: usize,
    dropped: Arc<AtomicU64>,
) -> Result<(Arc<AuditLog>, Writer), String> {
    let out: Box<dyn Write + Send> = if path == Path::new("-") {
        Box::new(std::io::stdout())
    } else {
        Box::new(open_file(path).map_err(|e| format!("{}: {e}", path.display()))?)
    };
    start(out, capacity, MAX_QUEUED_BYTES, dropped)
}

fn open_file(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = OpenOptions::new();
    options.append(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
        options.mode(0o600);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
    }
    #[cfg(not(unix))]
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    options.open(path)
}

/// Starts the writer thread over `out`.
pub(crate) fn start(
    out: Box<dyn Write + Send>,
    capacity: usize,
    max_bytes: usize,
    dropped: Arc<AtomicU64>,
) -> Result<(Arc<AuditLog>, Writer), String> {
    let (sender, receiver) = mpsc::sync_channel(capacity.max(1));
    let queued = Arc::new(AtomicUsize::new(0));
    let log = Arc::new(AuditLog {
        sender: sender.clone(),
        queued: Arc::clone(&queued),
        dropped: Arc::clone(&dropped),
        max_bytes,
    });
    let thread = std::thread::Builder::new()
        .name("audit-log".to_owned())
        .spawn(move || write_loop(&receiver, out, &queued, &dropped))
        .map_err(|e| format!("cannot start the audit log writer: {e}"))?;
    Ok((log, Writer { sender, thread }))
}

/// Writes events until [`Message::Stop`] (or every sender is gone), flushing whenever the
/// queue is empty.
fn write_loop(
    receiver: &Receiver<Message>,
    out: Box<dyn Write + Send>,
    queued: &AtomicUsize,
    dropped: &AtomicU64,
) {
    let mut out = BufWriter::with_capacity(64 * 1024, out);
    let mut line = Vec::with_capacity(2048);
    let mut failing = false;
    let mut reported_drops = 0;
    // Blocks while idle; `Err`: every sender is gone.
    while let Ok(first) = receiver.recv() {
        let mut next = Some(first);
        let mut stop = false;
        while let Some(message) = next.take() {
            match message {
                Message::Event(entry) => {
                    queued.fetch_sub(entry.cost(), Ordering::Relaxed);
                    line.clear();
                    match entry.write_json(&mut line) {
                        Ok(()) => {
                            line.push(b'\n');
                            report(out.write_all(&line), &mut failing);
                        }
                        Err(err) => tracing::warn!(error = %err, "cannot serialize an audit event"),
                    }
                }
                Message::Stop => stop = true,
            }
            next = receiver.try_recv().ok();
        }
        report(out.flush(), &mut failing);
        let total = dropped.load(Ordering::Relaxed);
        if total > reported_drops {
            tracing::warn!(
                dropped = total - reported_drops,
                total,
                "audit events dropped: the audit log queue was full"
            );
            reported_drops = total;
        }
        if stop {
            return;
        }
    }
    report(out.flush(), &mut failing);
}

/// Logs the first write error of a streak (a full disk fails every write).
fn report(result: std::io::Result<()>, failing: &mut bool) {
    match result {
        Ok(()) if *failing => {
            *failing = false;
            tracing::info!("audit log writable again");
        }
        Ok(()) => {}
        Err(err) if !*failing => {
            *failing = true;
            tracing::error!(error = %err, "cannot write the audit log");
        }
        Err(_) => {}
    }
}
