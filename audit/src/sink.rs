//! The audit log file (`--audit-log-path`): one JSON event per line.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use parking_lot::Mutex;

use crate::{Error, Event};

/// Appends events to a file as JSON lines.
///
/// Every line is written with one `write` call and flushed before [`FileSink::write`] returns
/// (upstream's blocking mode): a request is not answered before its event is in the file, so a
/// crash cannot lose the record of a completed request. The file is created `0600` because
/// events name users, objects and, at Request levels, bodies.
///
/// With rotation configured (`--audit-log-maxsize`, `--audit-log-maxbackup`), a line that would
/// grow the file past the limit first moves the file to `<stem>-<timestamp>.<ext>`, as
/// upstream's lumberjack does, and the oldest backups beyond the limit are removed.
#[derive(Debug)]
pub struct FileSink {
    path: PathBuf,
    max_size_bytes: Option<u64>,
    max_backups: usize,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    file: File,
    size: u64,
}

impl FileSink {
    /// Opens (creating if needed) the log at `path` for appending, without rotation.
    pub fn open(path: &Path) -> Result<Self, Error> {
        Self::open_with_rotation(path, 0, 0)
    }

    /// Opens the log with rotation: at most `max_size_mb` megabytes per file (`0`: unlimited)
    /// and `max_backups` rotated files kept (`0`: all).
    pub fn open_with_rotation(
        path: &Path,
        max_size_mb: u64,
        max_backups: usize,
    ) -> Result<Self, Error> {
        let file = open_log(path)?;
        let size = file.metadata().map_err(|e| io_err(path, e))?.len();
        Ok(FileSink {
            path: path.to_owned(),
            max_size_bytes: (max_size_mb > 0).then(|| max_size_mb.saturating_mul(1024 * 1024)),
            max_backups,
            state: Mutex::new(State { file, size }),
        })
    }

    /// Appends one event as a line and flushes it.
    pub fn write(&self, event: &Event) -> Result<(), Error> {
        let mut line = serde_json::to_vec(event)?;
        line.push(b'\n');
        let mut state = self.state.lock();
        if let Some(max) = self.max_size_bytes {
            let len = u64::try_from(line.len()).unwrap_or(u64::MAX);
            if state.size > 0 && state.size.saturating_add(len) > max {
                self.rotate(&mut state)?;
            }
        }
        state
            .file
            .write_all(&line)
            .and_then(|()| state.file.flush())
            .map_err(|e| io_err(&self.path, e))?;
        state.size += u64::try_from(line.len()).unwrap_or(u64::MAX);
        Ok(())
    }

    /// Moves the current file aside, starts a new one and prunes old backups.
    fn rotate(&self, state: &mut State) -> Result<(), Error> {
        let backup = self.backup_path(SystemTime::now());
        std::fs::rename(&self.path, &backup).map_err(|e| io_err(&self.path, e))?;
        state.file = open_log(&self.path)?;
        state.size = 0;
        if self.max_backups > 0 {
            let mut backups = self.backups()?;
            // The timestamp format sorts chronologically as text.
            backups.sort();
            let excess = backups.len().saturating_sub(self.max_backups);
            for old in &backups[..excess] {
                std::fs::remove_file(old).map_err(|e| io_err(old, e))?;
            }
        }
        Ok(())
    }

    /// `<dir>/<stem>-2026-11-29T12-00-00.123.<ext>`: lumberjack's backup name (UTC).
    fn backup_path(&self, now: SystemTime) -> PathBuf {
        let (stem, ext) = self.stem_and_ext();
        // 2026-11-29T12:00:00.123456Z → 2026-11-29T12-00-00.123
        let stamp = crate::format_micro_time(now);
        let stamp = stamp.get(..23).unwrap_or(&stamp).replace(':', "-");
        let mut candidate = self.path.with_file_name(format!("{stem}-{stamp}{ext}"));
        // Two rotations within a millisecond: keep both rather than overwrite one.
        let mut n = 1;
        while candidate.exists() {
            candidate = self.path.with_file_name(format!("{stem}-{stamp}-{n}{ext}"));
            n += 1;
        }
        candidate
    }

    fn stem_and_ext(&self) -> (String, String) {
        let stem = self
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let ext = self
            .path
            .extension()
            .map(|e| format!(".{}", e.to_string_lossy()))
            .unwrap_or_default();
        (stem, ext)
    }

    /// The rotated files next to the log.
    fn backups(&self) -> Result<Vec<PathBuf>, Error> {
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };
        let (stem, ext) = self.stem_and_ext();
        let prefix = format!("{stem}-");
        let entries = std::fs::read_dir(&dir).map_err(|e| io_err(&dir, e))?;
        Ok(entries
            .filter_map(|entry| entry.ok())
            .map(|entry| entry.path())
            .filter(|p| {
                p.file_name()
                    .map(|n| n.to_string_lossy())
                    .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(&ext) && p != &self.path)
            })
            .collect())
    }
}

/// Opens the log for appending, creating it owner-only.
fn open_log(path: &Path) -> Result<File, Error> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io_err(path, e))
}

fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_owned(),
        source,
    }
}
