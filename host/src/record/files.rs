//! The recording's files: JSON lines in `DIR/spoa-record-<unix ms>-<n>.jsonl`,
//! a new file once the current one holds a quarter of the byte limit, and
//! the oldest deleted so that all of them stay within it.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The name every recording file starts with.
pub const FILE_PREFIX: &str = "spoa-record-";

/// The smallest file before rotating, however low the limit.
const MIN_FILE_BYTES: u64 = 4096;

pub struct RecordFiles {
    dir: PathBuf,
    max_bytes: u64,
    current: Option<Current>,
    sequence: u64,
}

struct Current {
    out: BufWriter<File>,
    bytes: u64,
}

impl RecordFiles {
    /// Files in `dir` (created if missing), all of them within `max_bytes`.
    pub fn new(dir: &Path, max_bytes: u64) -> io::Result<RecordFiles> {
        std::fs::create_dir_all(dir)?;
        Ok(RecordFiles {
            dir: dir.to_path_buf(),
            max_bytes,
            current: None,
            sequence: 0,
        })
    }

    fn file_limit(&self) -> u64 {
        (self.max_bytes / 4).max(MIN_FILE_BYTES)
    }

    /// Appends one line (`line` without its newline).
    pub fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        let needed = line.len() as u64 + 1;
        let full = self
            .current
            .as_ref()
            .is_none_or(|current| current.bytes + needed > self.file_limit());
        if full {
            self.rotate()?;
        }
        let Some(current) = self.current.as_mut() else {
            return Err(io::Error::other("no recording file open"));
        };
        current.out.write_all(line)?;
        current.out.write_all(b"\n")?;
        current.bytes += needed;
        Ok(())
    }

    /// Makes what was written readable (called when the queue runs dry).
    pub fn flush(&mut self) -> io::Result<()> {
        match self.current.as_mut() {
            Some(current) => current.out.flush(),
            None => Ok(()),
        }
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.flush()?;
        self.current = None;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        self.sequence += 1;
        let path = self
            .dir
            .join(format!("{FILE_PREFIX}{now:013}-{:06}.jsonl", self.sequence));
        let file = File::create(&path)?;
        self.current = Some(Current {
            out: BufWriter::new(file),
            bytes: 0,
        });
        self.prune(&path)
    }

    /// Deletes the oldest files until the others, with room for a full
    /// `current` file, fit the limit.
    fn prune(&self, current: &Path) -> io::Result<()> {
        let mut older: Vec<(PathBuf, u64)> = recording_files(&self.dir)?
            .into_iter()
            .filter(|(path, _)| path != current)
            .collect();
        let mut total: u64 = older.iter().map(|(_, bytes)| bytes).sum::<u64>() + self.file_limit();
        older.sort();
        for (path, bytes) in older {
            if total <= self.max_bytes {
                break;
            }
            std::fs::remove_file(&path)?;
            total -= bytes;
        }
        Ok(())
    }
}

/// The recording files of `dir`, oldest first, with their sizes.
pub fn recording_files(dir: &Path) -> io::Result<Vec<(PathBuf, u64)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(FILE_PREFIX) && name.ends_with(".jsonl") {
            files.push((entry.path(), entry.metadata()?.len()));
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_rotate_and_the_oldest_go_so_all_stay_within_the_limit() {
        let dir = tempfile::tempdir().expect("temp dir");
        let limit = 64 * 1024;
        let mut files = RecordFiles::new(dir.path(), limit).expect("files");
        let line = vec![b'x'; 999];
        for _ in 0..1000 {
            files.write_line(&line).expect("write");
        }
        files.flush().expect("flush");
        let kept = recording_files(dir.path()).expect("list");
        let total: u64 = kept.iter().map(|(_, bytes)| bytes).sum();
        assert!(kept.len() >= 3, "rotated: {kept:?}");
        assert!(total <= limit, "{total} bytes kept of {limit}");
        assert!(total >= limit / 2, "the newest are kept: {total}");
        // Each file holds whole lines.
        for (path, bytes) in &kept {
            assert_eq!(bytes % 1000, 0, "{}", path.display());
        }
    }
}
