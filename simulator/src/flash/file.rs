//! [`FileFlash`]: a [`SimFlash`] written through to a file.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::*;

/// A [`SimFlash`] whose contents live in a file, written through after every operation, so a
/// served ECU keeps its flash across process restarts (also after `kill -9`).
///
/// On open, a byte that reads as the erased value counts as erased (the file stores cell values
/// only, like a flash dump).
#[derive(Debug)]
pub struct FileFlash {
    inner: SimFlash,
    file: File,
    path: PathBuf,
}

impl FileFlash {
    /// Open `path`, creating an erased device if it does not exist. An existing file must be
    /// exactly the device size.
    pub fn open(path: &Path, geometry: Geometry, seed: u64) -> Result<Self, FlashError> {
        let io = |source| FlashError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut inner = SimFlash::new(geometry, seed);
        let size = inner.geometry.size();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        if len == 0 {
            file.write_all(&inner.contents()).map_err(io)?;
            file.sync_all().map_err(io)?;
        } else if len != u64::from(size) {
            return Err(FlashError::BadGeometry(format!(
                "{} holds {len} bytes but the geometry is {size} bytes",
                path.display()
            )));
        } else {
            let mut data = Vec::with_capacity(size as usize);
            file.read_to_end(&mut data).map_err(io)?;
            let erased = inner.geometry.erased;
            for (s, sector) in inner.geometry.sectors.clone().iter().enumerate() {
                let cells = super::sim::cells_mut(&mut inner.sectors, s);
                let src = &data[sector.offset as usize..sector.end() as usize];
                cells.bytes.copy_from_slice(src);
                for (i, &b) in src.iter().enumerate() {
                    if b != erased {
                        cells.set_programmed(i);
                    }
                }
            }
        }
        Ok(FileFlash {
            inner,
            file,
            path: path.to_path_buf(),
        })
    }

    pub fn sim(&self) -> &SimFlash {
        &self.inner
    }
    pub fn sim_mut(&mut self) -> &mut SimFlash {
        &mut self.inner
    }

    /// Write `addr..addr+len` of the model back to the file, whatever the operation's outcome
    /// (a torn operation changed cells too).
    fn sync(&mut self, addr: u32, len: u32) -> Result<(), FlashError> {
        let io = |source| FlashError::Io {
            path: self.path.clone(),
            source,
        };
        let was = self.inner.powered;
        self.inner.powered = true;
        let mut buf = vec![0; len as usize];
        let read = self.inner.read(addr, &mut buf);
        self.inner.powered = was;
        read?;
        self.file
            .seek(SeekFrom::Start(u64::from(addr)))
            .map_err(io)?;
        // No fsync per operation: the page cache survives the process being killed, which is
        // what a served ECU must survive; `flush` makes it durable on a clean shutdown.
        self.file.write_all(&buf).map_err(io)
    }

    /// Make everything written so far durable (fsync).
    pub fn flush(&mut self) -> Result<(), FlashError> {
        self.file.sync_all().map_err(|source| FlashError::Io {
            path: self.path.clone(),
            source,
        })
    }
}

impl Flash for FileFlash {
    fn geometry(&self) -> &Geometry {
        self.inner.geometry()
    }
    fn busy_us(&self) -> u64 {
        self.inner.busy_us()
    }
    fn set_powered(&mut self, on: bool) {
        self.inner.set_powered(on);
    }
    fn ops(&self) -> u64 {
        self.inner.ops
    }
    fn stats(&self) -> FlashStats {
        self.inner.stats
    }
    fn take_fired(&mut self) -> Option<FiredCut> {
        self.inner.take_fired()
    }
    fn read(&self, addr: u32, buf: &mut [u8]) -> Result<(), FlashError> {
        self.inner.read(addr, buf)
    }
    fn erase(&mut self, addr: u32, len: u32) -> Result<(), FlashError> {
        let r = self.inner.erase(addr, len);
        if !matches!(
            r,
            Err(FlashError::OutOfBounds { .. } | FlashError::NotSectorAligned { .. })
        ) {
            self.sync(addr, len)?;
        }
        r
    }
    fn write(&mut self, addr: u32, data: &[u8]) -> Result<(), FlashError> {
        let r = self.inner.write(addr, data);
        if r.is_ok() || matches!(r, Err(FlashError::PowerLost { .. })) {
            self.sync(addr, data.len() as u32)?;
        }
        r
    }
}
