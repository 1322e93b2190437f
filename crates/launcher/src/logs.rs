//! Child output capture: every line goes to the launcher's stdout prefixed with the
//! daemon's name, and to `$RINGRIFT_HOME/logs/<daemon>.log`, rotated by size.

use std::path::PathBuf;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::sync::Mutex;

pub struct LogSink {
    name: String,
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    file: Mutex<Option<(tokio::fs::File, u64)>>,
}

impl LogSink {
    pub fn new(dir: PathBuf, name: &str, max_bytes: u64, keep: u32) -> LogSink {
        LogSink {
            name: name.to_owned(),
            path: dir.join(format!("{name}.log")),
            max_bytes,
            keep,
            file: Mutex::new(None),
        }
    }

    /// Copies lines from a child pipe until it closes.
    pub async fn pump(&self, pipe: impl AsyncRead + Unpin) {
        let mut lines = BufReader::new(pipe).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            self.line(&line).await;
        }
    }

    pub async fn line(&self, line: &str) {
        println!("{:<24} | {line}", self.name);
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
