//! The job store: one JSON document per job, written atomically.
//!
//! ```text
//! STORE/
//!   jobs/job-0001.json        the job (see crate::ota::job)
//!   artifacts/job-0001.bin    the artifact as downloaded so far
//!   next-id                   the number of the next job (never goes down)
//!   runner.lock               flock'ed exclusively by the one runner (`hil ota run`/`resume`)
//!   submit.lock               flock'ed while an id is allocated
//! ```
//!
//! A save writes `jobs/ID.json.tmp`, fsyncs it, renames it over `jobs/ID.json` and fsyncs the
//! directory, so a crash at any instant leaves the old or the new document, never a mix. A job
//! file that does not parse is an error naming the file and the position — never a panic,
//! never silently a new job — and so is a job whose `id` is not its file name.
//!
//! ## Concurrency
//!
//! | who | lock | a second one |
//! |---|---|---|
//! | runner ([`Store::lock_runner`]) | `runner.lock`, exclusive, for the whole run | refused at once: [`StoreError::Busy`] |
//! | submit ([`Store::submit`]) | `submit.lock`, exclusive, while the id is allocated | waits its turn (milliseconds) |
//!
//! An id is allocated under `submit.lock` as `max(next-id, highest job file + 1)`; `next-id`
//! is rewritten (atomically) before the job file is created, and the job file is created with
//! create-new semantics (a complete temp file hard-linked into place), so an existing job is
//! never overwritten and an id is never handed out twice, even after its file was deleted.
//! Submitting does not need the runner lock: a running `hil ota run` leaves new jobs for the
//! next run. The locks are `flock(2)` locks, released by the kernel when a process dies.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use super::job::{JOB_FORMAT, Job};
use super::manifest::Manifest;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("job file {path} is corrupt at line {line} column {column}: {message}")]
    Corrupt {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("job file {path} has format {found}, this harness reads format {JOB_FORMAT}")]
    Format { path: PathBuf, found: u32 },
    #[error("no job {id} in {store}")]
    NoSuchJob { id: String, store: PathBuf },
    #[error("job file {path} holds job {found}, its name says {id}")]
    IdMismatch {
        path: PathBuf,
        id: String,
        found: String,
    },
    #[error("store {store} is in use by another `hil ota run`/`resume` (it holds {lock})")]
    Busy { store: PathBuf, lock: PathBuf },
    #[error("{path}: cannot lock: {source}")]
    Lock { path: PathBuf, source: nix::Error },
    #[error("{path}: {content:?} is not a job number")]
    Counter { path: PathBuf, content: String },
}

/// The store's runner lock, held until dropped (or the process ends).
#[derive(Debug)]
pub struct RunnerLock {
    _lock: Flock<fs::File>,
}

/// A directory of jobs.
#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
    /// fsync each save (off only for simulations, where no machine crashes).
    durable: bool,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Store {
    /// Open (and create) a store directory.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        for sub in ["jobs", "artifacts"] {
            let p = root.join(sub);
            fs::create_dir_all(&p).map_err(io(&p))?;
        }
        Ok(Store {
            root: root.to_path_buf(),
            durable: true,
        })
    }

    /// The same store without fsync: saves are still atomic (temp file, rename), so a killed
    /// process never leaves a torn job file, but a machine crash may lose the last saves.
    /// For simulations, which run thousands of jobs and never lose power on the host.
    pub fn without_fsync(mut self) -> Store {
        self.durable = false;
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn job_path(&self, id: &str) -> PathBuf {
        self.root.join("jobs").join(format!("{id}.json"))
    }

    /// Where the job's artifact is downloaded to.
    pub fn artifact_path(&self, id: &str) -> PathBuf {
        self.root.join("artifacts").join(format!("{id}.bin"))
    }

    /// Take the runner lock: one process drives the jobs of a store at a time. A second
    /// runner gets [`StoreError::Busy`] at once instead of waiting.
    pub fn lock_runner(&self) -> Result<RunnerLock, StoreError> {
        let path = self.root.join("runner.lock");
        match lock_file(&path, FlockArg::LockExclusiveNonblock) {
            Err(StoreError::Lock {
                source: nix::Error::EWOULDBLOCK,
                ..
            }) => Err(StoreError::Busy {
                store: self.root.clone(),
                lock: path,
            }),
            other => other.map(|lock| RunnerLock { _lock: lock }),
        }
    }

    /// Create a job for `manifest` (ids `job-0001`, `job-0002`, … in submission order, never
    /// reused; see the module doc). Safe to call from many processes at once.
    pub fn submit(&self, manifest: Manifest, at_us: u64) -> Result<Job, StoreError> {
        let _lock = lock_file(&self.root.join("submit.lock"), FlockArg::LockExclusive)?;
        let counter = self.root.join("next-id");
        let recorded = match fs::read_to_string(&counter) {
            Ok(text) => text
                .trim()
                .parse::<u64>()
                .map_err(|_| StoreError::Counter {
                    path: counter.clone(),
                    content: text.trim().to_string(),
                })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 1,
            Err(e) => return Err(io(&counter)(e)),
        };
        let highest = self
            .ids()?
            .iter()
            .filter_map(|id| id.strip_prefix("job-")?.parse::<u64>().ok())
            .max()
            .unwrap_or(0);
        let n = recorded.max(highest + 1);
        self.write_atomically(&counter, format!("{}\n", n + 1).as_bytes())?;
        let job = Job::new(format!("job-{n:04}"), manifest, at_us);
        self.create(&job)?;
        Ok(job)
    }

    /// Write `bytes` to a temp file beside `path`, fsync, rename over `path`, fsync the dir.
    fn write_atomically(&self, path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        let tmp = path.with_extension("tmp");
        let mut f = fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(bytes).map_err(io(&tmp))?;
        if self.durable {
            f.sync_all().map_err(io(&tmp))?;
        }
        fs::rename(&tmp, path).map_err(io(path))?;
        self.sync_dir(path);
        Ok(())
    }

    fn sync_dir(&self, path: &Path) {
        if self.durable
            && let Some(dir) = path.parent()
            && let Ok(d) = fs::File::open(dir)
        {
            let _ = d.sync_all();
        }
    }

    /// Persist a new job: its complete document appears at once, and never over another job.
    fn create(&self, job: &Job) -> Result<(), StoreError> {
        let path = self.job_path(&job.id);
        let dir = self.root.join("jobs");
        let mut tmp = tempfile::Builder::new()
            .prefix(".new-")
            .suffix(".tmp")
            .tempfile_in(&dir)
            .map_err(io(&dir))?;
        tmp.write_all(&job_bytes(job)).map_err(io(tmp.path()))?;
        if self.durable {
            tmp.as_file().sync_all().map_err(io(tmp.path()))?;
        }
        // persist_noclobber: link(2) then unlink, so an existing file is never replaced.
        tmp.persist_noclobber(&path)
            .map_err(|e| io(&path)(e.error))?;
        self.sync_dir(&path);
        Ok(())
    }

    /// Persist `job` atomically.
    pub fn save(&self, job: &Job) -> Result<(), StoreError> {
        let path = self.job_path(&job.id);
        let tmp = path.with_extension("json.tmp");
        let mut f = fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&job_bytes(job)).map_err(io(&tmp))?;
        if self.durable {
            f.sync_all().map_err(io(&tmp))?;
        }
        fs::rename(&tmp, &path).map_err(io(&path))?;
        self.sync_dir(&path);
        Ok(())
    }

    /// Load one job.
    pub fn load(&self, id: &str) -> Result<Job, StoreError> {
        let path = self.job_path(id);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::NoSuchJob {
                    id: id.to_string(),
                    store: self.root.clone(),
                });
            }
            Err(e) => return Err(io(&path)(e)),
        };
        let job = parse_job(&text, &path)?;
        if job.id != id {
            return Err(StoreError::IdMismatch {
                path,
                id: id.to_string(),
                found: job.id,
            });
        }
        Ok(job)
    }

    /// Ids of all jobs, in order.
    pub fn ids(&self) -> Result<Vec<String>, StoreError> {
        let dir = self.root.join("jobs");
        let mut ids = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io(&dir))? {
            let name = entry.map_err(io(&dir))?.file_name();
            let name = name.to_string_lossy();
            if let Some(id) = name.strip_suffix(".json") {
                ids.push(id.to_string());
            }
        }
        // job-9999 before job-10000.
        ids.sort_by(|a, b| (a.len(), a).cmp(&(b.len(), b)));
        Ok(ids)
    }

    /// Every job, in id order. The first unreadable one is an error.
    pub fn jobs(&self) -> Result<Vec<Job>, StoreError> {
        self.ids()?.iter().map(|id| self.load(id)).collect()
    }

    /// Every job that reads, and an error for each one that does not (in id order): one
    /// corrupt file does not hide the others. Only a store that cannot be listed is an error.
    pub fn scan(&self) -> Result<(Vec<Job>, Vec<StoreError>), StoreError> {
        let mut jobs = Vec::new();
        let mut broken = Vec::new();
        for id in self.ids()? {
            match self.load(&id) {
                Ok(job) => jobs.push(job),
                Err(e) => broken.push(e),
            }
        }
        Ok((jobs, broken))
    }
}

/// The document of `job`, as saved.
fn job_bytes(job: &Job) -> Vec<u8> {
    let mut text = serde_json::to_vec_pretty(job).expect("jobs serialize");
    text.push(b'\n');
    text
}

/// Open (create) `path` and flock it.
fn lock_file(path: &Path, how: FlockArg) -> Result<Flock<fs::File>, StoreError> {
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io(path))?;
    Flock::lock(file, how).map_err(|(_, source)| StoreError::Lock {
        path: path.to_path_buf(),
        source,
    })
}

/// Parse a job document; `path` names it in errors.
pub fn parse_job(text: &str, path: &Path) -> Result<Job, StoreError> {
    // Check the format first, so that a newer document is not reported as corrupt.
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(text)
        && let Some(found) = v.get("format").and_then(|f| f.as_u64())
        && found != u64::from(JOB_FORMAT)
    {
        return Err(StoreError::Format {
            path: path.to_path_buf(),
            found: found as u32,
        });
    }
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
        path: path.to_path_buf(),
        line: e.line(),
        column: e.column(),
        message: json_message(&e),
    })
}

/// A serde_json error's message without its " at line L column C" (callers locate it
/// themselves, from `line()` and `column()`).
pub fn json_message(e: &serde_json::Error) -> String {
    let text = e.to_string();
    text.split(" at line ").next().unwrap_or("").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ota::job::State;

    fn manifest() -> Manifest {
        Manifest::parse(
            "artifact: {url: 'http://h:1/a', size: 5, sha256: '0000000000000000000000000000000000000000000000000000000000000000'}\nversion: 1.2.3\ntarget: {transport: doip, host: h}\n",
            "m",
        )
        .unwrap()
    }

    #[test]
    fn submit_save_load() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut a = store.submit(manifest(), 1).unwrap();
        let b = store.submit(manifest(), 2).unwrap();
        assert_eq!((a.id.as_str(), b.id.as_str()), ("job-0001", "job-0002"));
        a.go(State::Downloading { bytes: 3 }, 5).unwrap();
        store.save(&a).unwrap();
        assert_eq!(store.load("job-0001").unwrap(), a);
        assert_eq!(store.jobs().unwrap().len(), 2);
        assert!(matches!(
            store.load("job-0009"),
            Err(StoreError::NoSuchJob { .. })
        ));
        assert!(
            !store
                .job_path("job-0001")
                .with_extension("json.tmp")
                .exists()
        );
    }

    #[test]
    fn corrupt_and_truncated_files_are_named_errors() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let job = store.submit(manifest(), 1).unwrap();
        let path = store.job_path(&job.id);
        let good = fs::read_to_string(&path).unwrap();
        // Every truncation is an error, never a panic and never a job.
        for cut in 0..good.len() {
            if good[..cut].trim_end().len() == good.trim_end().len() {
                continue;
            }
            fs::write(&path, &good[..cut]).unwrap();
            let e = store
                .load(&job.id)
                .expect_err("truncated job must not load");
            assert!(matches!(e, StoreError::Corrupt { .. }), "cut at {cut}: {e}");
        }
        fs::write(&path, good.replace("\"submitted\"", "\"sumbitted\"")).unwrap();
        let e = store.load(&job.id).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("job file {} is corrupt at line", path.display())),
            "{e}"
        );
        assert!(e.contains("unknown variant `sumbitted`"), "{e}");
        fs::write(&path, good.replace("\"format\": 1", "\"format\": 7")).unwrap();
        let e = store.load(&job.id).unwrap_err().to_string();
        assert!(
            e.ends_with("has format 7, this harness reads format 1"),
            "{e}"
        );
    }

    proptest::proptest! {
        /// Any edit of a job file (bytes replaced, inserted or removed) is a job or an
        /// error, never a panic.
        #[test]
        fn edited_job_files_never_panic(
            edits in proptest::collection::vec((0usize..4096, 0u8..128, 0u8..3), 1..8)
        ) {
            let mut job = Job::new("job-0001".into(), manifest(), 1);
            job.go(State::Downloading { bytes: 10 }, 2).unwrap();
            let mut text = serde_json::to_string_pretty(&job).unwrap().into_bytes();
            for (at, byte, op) in edits {
                let at = at % (text.len() + 1);
                match op {
                    0 if at < text.len() => text[at] = byte,
                    1 => text.insert(at, byte),
                    _ if at < text.len() => { text.remove(at); }
                    _ => {}
                }
            }
            let text = String::from_utf8_lossy(&text);
            let _ = parse_job(&text, Path::new("job-0001.json"));
        }
    }
}
