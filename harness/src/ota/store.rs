//! The job store: one JSON document per job, written atomically.
//!
//! ```text
//! STORE/
//!   jobs/job-0001.json        the job (see crate::ota::job)
//!   artifacts/job-0001.bin    the artifact as downloaded so far
//! ```
//!
//! A save writes `jobs/ID.json.tmp`, fsyncs it, renames it over `jobs/ID.json` and fsyncs the
//! directory, so a crash at any instant leaves the old or the new document, never a mix. A job
//! file that does not parse is an error naming the file and the position — never a panic,
//! never silently a new job.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

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

    /// Create a job for `manifest` (ids `job-0001`, `job-0002`, … in submission order).
    pub fn submit(&self, manifest: Manifest, at_us: u64) -> Result<Job, StoreError> {
        let next = self.ids()?.len() + 1;
        let job = Job::new(format!("job-{next:04}"), manifest, at_us);
        self.save(&job)?;
        Ok(job)
    }

    /// Persist `job` atomically.
    pub fn save(&self, job: &Job) -> Result<(), StoreError> {
        let path = self.job_path(&job.id);
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(job).expect("jobs serialize");
        let mut f = fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&text).map_err(io(&tmp))?;
        f.write_all(b"\n").map_err(io(&tmp))?;
        if self.durable {
            f.sync_all().map_err(io(&tmp))?;
        }
        fs::rename(&tmp, &path).map_err(io(&path))?;
        if self.durable {
            let dir = self.root.join("jobs");
            if let Ok(d) = fs::File::open(&dir) {
                let _ = d.sync_all();
            }
        }
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
        parse_job(&text, &path)
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
        ids.sort();
        Ok(ids)
    }

    /// Every job, in id order. The first unreadable one is an error.
    pub fn jobs(&self) -> Result<Vec<Job>, StoreError> {
        self.ids()?.iter().map(|id| self.load(id)).collect()
    }
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
        message: e
            .to_string()
            .split(" at line ")
            .next()
            .unwrap_or("")
            .to_string(),
    })
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
