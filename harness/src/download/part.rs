//! The partial file on disk: re-hashed on open (its bytes are the resume offset), appended
//! in batches, synced, truncated.

use std::fs::{File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest as _, Sha256};

use super::{DownloadError, WRITE_BATCH, blocking};

/// The partial file: length and running hash of exactly the bytes in it.
pub(super) struct PartFile {
    pub(super) path: PathBuf,
    pub(super) file: Arc<File>,
    pub(super) len: u64,
    /// Length at the last `fdatasync`.
    pub(super) synced: u64,
    pub(super) hasher: Sha256,
    pub(super) sync_every: u64,
}

impl PartFile {
    /// Open (create) `path` for appending and hash what is there.
    pub(super) async fn open(path: &Path, sync_every: u64) -> Result<PartFile, DownloadError> {
        let p = path.to_path_buf();
        let (file, len, hasher) = blocking(move || {
            let mut file = OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .open(&p)?;
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; WRITE_BATCH];
            let mut len = 0u64;
            loop {
                match file.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        hasher.update(&buf[..n]);
                        len += n as u64;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            Ok((file, len, hasher))
        })
        .await
        .map_err(|source| DownloadError::File {
            op: "opening",
            path: path.to_path_buf(),
            source,
        })?;
        Ok(PartFile {
            path: path.to_path_buf(),
            file: Arc::new(file),
            len,
            synced: len,
            hasher,
            sync_every: sync_every.max(1),
        })
    }

    pub(super) fn error(
        &self,
        op: &'static str,
    ) -> impl FnOnce(io::Error) -> DownloadError + use<> {
        let path = self.path.clone();
        move |source| DownloadError::File { op, path, source }
    }

    pub(super) async fn append(&mut self, data: Vec<u8>) -> Result<(), DownloadError> {
        let file = Arc::clone(&self.file);
        self.hasher.update(&data);
        let n = data.len() as u64;
        blocking(move || (&*file).write_all(&data))
            .await
            .map_err(self.error("writing"))?;
        self.len += n;
        if self.len - self.synced >= self.sync_every {
            self.sync().await?;
        }
        Ok(())
    }

    pub(super) async fn sync(&mut self) -> Result<(), DownloadError> {
        if self.synced != self.len {
            let file = Arc::clone(&self.file);
            blocking(move || file.sync_data())
                .await
                .map_err(self.error("syncing"))?;
            self.synced = self.len;
        }
        Ok(())
    }

    pub(super) async fn truncate(&mut self) -> Result<(), DownloadError> {
        let file = Arc::clone(&self.file);
        blocking(move || {
            file.set_len(0)?;
            file.sync_data()
        })
        .await
        .map_err(self.error("truncating"))?;
        self.len = 0;
        self.synced = 0;
        self.hasher = Sha256::new();
        Ok(())
    }

    /// Delete the file (a missing file is fine). The handle stays open until `self` is
    /// dropped, which POSIX allows; nothing is written to it afterwards.
    pub(super) async fn remove(&mut self) -> Result<(), DownloadError> {
        let path = self.path.clone();
        blocking(move || match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        })
        .await
        .map_err(self.error("deleting"))?;
        self.len = 0;
        self.synced = 0;
        self.hasher = Sha256::new();
        Ok(())
    }
}
