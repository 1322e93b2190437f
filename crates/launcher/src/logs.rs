//! Child output capture: every line goes to the launcher's stdout prefixed with the
//! daemon's name, and to `$RINGRIFT_HOME/logs/<daemon>.log`, rotated by size.
//!
//! Output is read as bytes, not text: invalid UTF-8 is replaced (lossy), never the end of
//! the copy, and a line longer than [`MAX_LINE`] is cut there with [`CUT_MARKER`] (the
//! rest of it is dropped) so a child cannot make the launcher buffer without bound.
//!
//! The launcher's stdout is written by one dedicated thread ([`Console`]), never on the
//! async runtime: a slow reader of stdout cannot stall the pumps (and with them the
//! children, blocked on full pipes, and the control API), and a closed stdout ends the
//! console output instead of panicking. While the console's queue is full a line goes
//! to the daemon's log file only (counted in [`Console::dropped`]).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, mpsc};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::sync::Mutex;

/// Longest line kept, in bytes.
pub const MAX_LINE: usize = 16 << 10;
/// Appended to a line cut at [`MAX_LINE`].
pub const CUT_MARKER: &str = " [line cut at 16 KiB]";

/// Lines waiting for the console thread at most.
pub const CONSOLE_QUEUE: usize = 4096;

/// The writer of the launcher's stdout: a dedicated thread fed by a bounded queue.
#[derive(Clone)]
pub struct Console {
    tx: mpsc::SyncSender<String>,
    dropped: Arc<AtomicU64>,
}

impl Console {
    /// A console writing to `out` from its own thread; it ends at the first write error
    /// (a closed stdout), after which lines are discarded.
    pub fn new(mut out: Box<dyn std::io::Write + Send>) -> Console {
        let (tx, rx) = mpsc::sync_channel::<String>(CONSOLE_QUEUE);
        let spawned = std::thread::Builder::new()
            .name("launcher-console".into())
            .spawn(move || {
                for line in rx {
                    if out
                        .write_all(line.as_bytes())
                        .and_then(|()| out.flush())
                        .is_err()
                    {
                        return;
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the console thread; daemon output goes to log files only");
        }
        Console {
            tx,
            dropped: Arc::default(),
        }
    }

    /// The process's stdout console, started on first use.
    pub fn stdout() -> Console {
        static STDOUT: OnceLock<Console> = OnceLock::new();
        STDOUT
            .get_or_init(|| Console::new(Box::new(std::io::stdout())))
            .clone()
    }

    /// Queues `line` (with its newline) without waiting: dropped when the queue is full
    /// or the console has ended.
    pub fn print(&self, mut line: String) {
        line.push('\n');
        if let Err(mpsc::TrySendError::Full(_)) = self.tx.try_send(line) {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(
                    dropped = n,
                    "stdout is not keeping up: daemon lines go to their log files only meanwhile"
                );
            }
        }
    }

    /// Lines not shown because the queue was full.
    #[cfg(test)]
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

pub struct LogSink {
    console: Console,
    name: String,
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    file: Mutex<Option<(tokio::fs::File, u64)>>,
}

impl LogSink {
    /// A sink that shows lines on the launcher's stdout ([`Console::stdout`]).
    pub fn new(dir: PathBuf, name: &str, max_bytes: u64, keep: u32) -> LogSink {
        Self::with_console(Console::stdout(), dir, name, max_bytes, keep)
    }

    /// A sink that shows lines on `console`.
    pub fn with_console(
        console: Console,
        dir: PathBuf,
        name: &str,
        max_bytes: u64,
        keep: u32,
    ) -> LogSink {
        LogSink {
            console,
            name: name.to_owned(),
            path: dir.join(format!("{name}.log")),
            max_bytes,
            keep,
            file: Mutex::new(None),
        }
    }

    /// Copies lines from a child pipe until it closes (or fails to read).
    pub async fn pump(&self, pipe: impl AsyncRead + Unpin) {
        let mut r = BufReader::new(pipe);
        let mut line: Vec<u8> = Vec::new();
        let mut cut = false;
        loop {
            let buf = match r.fill_buf().await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(daemon = %self.name, error = %e, "reading daemon output failed");
                    break;
                }
            };
            if buf.is_empty() {
                if !line.is_empty() || cut {
                    self.bytes(&line, cut).await;
                }
                return;
            }
            let newline = buf.iter().position(|&b| b == b'\n');
            let chunk = &buf[..newline.unwrap_or(buf.len())];
            let room = MAX_LINE.saturating_sub(line.len());
            cut |= chunk.len() > room;
            line.extend_from_slice(&chunk[..chunk.len().min(room)]);
            let used = newline.map_or(buf.len(), |i| i + 1);
            r.consume(used);
            if newline.is_some() {
                self.bytes(&line, cut).await;
                line.clear();
                cut = false;
            }
        }
    }

    /// One raw line (without its newline): lossy UTF-8, marked when it was cut.
    async fn bytes(&self, raw: &[u8], cut: bool) {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let mut text = String::from_utf8_lossy(raw).into_owned();
        if cut {
            text.push_str(CUT_MARKER);
        }
        self.line(&text).await;
    }

    pub async fn line(&self, line: &str) {
        self.console.print(format!("{:<24} | {line}", self.name));
        if let Err(e) = self.append(line).await {
            tracing::warn!(daemon = %self.name, error = %e, "cannot write daemon log");
        }
    }

    async fn append(&self, line: &str) -> std::io::Result<()> {
        let mut g = self.file.lock().await;
        if g.as_ref()
            .is_some_and(|(_, size)| *size + line.len() as u64 + 1 > self.max_bytes)
        {
            *g = None;
            self.rotate().await?;
        }
        if g.is_none() {
            if let Some(dir) = self.path.parent() {
                tokio::fs::create_dir_all(dir).await?;
            }
            let f = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .await?;
            let size = f.metadata().await?.len();
            *g = Some((f, size));
        }
        if let Some((f, size)) = g.as_mut() {
            f.write_all(line.as_bytes()).await?;
            f.write_all(b"\n").await?;
            *size += line.len() as u64 + 1;
        }
        Ok(())
    }

    /// `x.log` → `x.log.1` → … → `x.log.<keep>` (the oldest is dropped).
    async fn rotate(&self) -> std::io::Result<()> {
        let name = |i: u32| PathBuf::from(format!("{}.{i}", self.path.display()));
        let _ = tokio::fs::remove_file(name(self.keep)).await;
        for i in (1..self.keep).rev() {
            let _ = tokio::fs::rename(name(i), name(i + 1)).await;
        }
        if self.keep > 0 {
            tokio::fs::rename(&self.path, name(1)).await
        } else {
            tokio::fs::remove_file(&self.path).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn rotates_at_the_size_limit_and_keeps_n_files() {
        let dir = tempfile_dir();
        let sink = LogSink::new(dir.clone(), "d", 100, 2);
        for i in 0..30 {
            sink.line(&format!("line number {i:04}")).await;
        }
        let cur = std::fs::metadata(dir.join("d.log")).unwrap().len();
        assert!(cur <= 100, "{cur}");
        assert!(dir.join("d.log.1").exists() && dir.join("d.log.2").exists());
        assert!(!dir.join("d.log.3").exists());
        let last = std::fs::read_to_string(dir.join("d.log")).unwrap();
        assert!(last.contains("line number 0029"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn invalid_utf8_and_long_lines_do_not_stop_the_copy() {
        let dir = tempfile_dir();
        let sink = LogSink::new(dir.clone(), "u", 1 << 30, 1);
        let mut input: Vec<u8> = b"first\nbad \xff\xfe bytes\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', MAX_LINE + 5000));
        input.extend_from_slice(b"\nafter the long one\nno newline at the end");
        sink.pump(input.as_slice()).await;
        let text = std::fs::read_to_string(dir.join("u.log")).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{lines:?}");
        assert_eq!(lines[0], "first");
        assert_eq!(lines[1], "bad \u{fffd}\u{fffd} bytes");
        assert_eq!(lines[2], format!("{}{CUT_MARKER}", "x".repeat(MAX_LINE)));
        assert_eq!(lines[3], "after the long one");
        assert_eq!(lines[4], "no newline at the end");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A writer that blocks until released (a stdout nobody reads), or fails at once (a
    /// closed one).
    struct Stuck(Arc<std::sync::Barrier>);
    impl std::io::Write for Stuck {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.wait();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    struct Closed;
    impl std::io::Write for Closed {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A stdout that blocks, or one that is closed, neither stalls nor panics the pump:
    /// every line still reaches the log file (issue 28, point 5; the pump used
    /// `println!`, which blocks the runtime thread on a full pipe and panics on a closed one).
    #[tokio::test]
    async fn a_stuck_or_closed_stdout_neither_stalls_nor_panics_the_pump() {
        let release = Arc::new(std::sync::Barrier::new(2));
        for (name, console) in [
            ("stuck", Console::new(Box::new(Stuck(release.clone())))),
            ("closed", Console::new(Box::new(Closed))),
        ] {
            let dir = tempfile_dir().join(name);
            let sink = LogSink::with_console(console.clone(), dir.clone(), name, 1 << 30, 1);
            let n = CONSOLE_QUEUE + 1000;
            let input: String = (0..n).map(|i| format!("line {i}\n")).collect();
            tokio::time::timeout(
                std::time::Duration::from_secs(60),
                sink.pump(input.as_bytes()),
            )
            .await
            .expect("the pump is not stalled by stdout");
            let text = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap();
            assert_eq!(text.lines().count(), n, "{name}: every line in the file");
            if name == "stuck" {
                assert!(
                    console.dropped() >= 999,
                    "{name}: {} dropped",
                    console.dropped()
                );
            }
        }
        release.wait();
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "ringrift-logsink-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
