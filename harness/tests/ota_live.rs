//! The OTA flow live, process by process: `ecu-sim serve` (DoIP on loopback), `hil
//! serve-artifacts` (HTTP on loopback) and `hil ota submit/run/status`, like a user runs them.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use ecu_sim::image::{Behaviour, ImageBuilder, Version, dev_key};
use sha2::{Digest, Sha256};

/// A binary of this workspace, next to `hil` (built if missing, e.g. `ecu-sim`).
pub fn workspace_bin(name: &str) -> PathBuf {
    let hil = PathBuf::from(env!("CARGO_BIN_EXE_hil"));
    let path = hil.with_file_name(name);
    if !path.exists() {
        let release = hil.parent().is_some_and(|d| d.ends_with("release"));
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--bin", name]);
        if release {
            cmd.arg("--release");
        }
        assert!(cmd.status().unwrap().success(), "building {name}");
    }
    path
}

/// A child process killed when dropped.
#[derive(Debug)]
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start `cmd`, read its first stdout line, return the port after `127.0.0.1:`.
fn start(mut cmd: Command) -> (Proc, u16) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    (Proc(child), port)
}

/// An ECU served over DoIP and an artifact server, in a temp dir.
#[derive(Debug)]
pub struct Bench {
    pub dir: tempfile::TempDir,
    pub ecu_port: u16,
    pub http_port: u16,
    _procs: Vec<Proc>,
}

impl Bench {
    pub fn start(speed: &str, http_args: &[&str]) -> Bench {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("artifacts")).unwrap();
        let mut ecu = Command::new(workspace_bin("ecu-sim"));
        ecu.args([
            "serve",
            "--doip",
            "127.0.0.1:0",
            "--seed",
            "3",
            "--speed",
            speed,
        ])
        .arg("--state")
        .arg(dir.path().join("ecu"));
        let (ecu, ecu_port) = start(ecu);
        let mut http = Command::new(env!("CARGO_BIN_EXE_hil"));
        http.arg("serve-artifacts")
            .arg(dir.path().join("artifacts"))
            .args(["--addr", "127.0.0.1:0"])
            .args(http_args);
        let (http, http_port) = start(http);
        Bench {
            dir,
            ecu_port,
            http_port,
            _procs: vec![ecu, http],
        }
    }

    pub fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// Put a signed image into the artifact directory and write its manifest; returns the
    /// manifest's path.
    pub fn publish(&self, major: u8, behaviour: Behaviour, len: usize) -> PathBuf {
        let name = format!("v{major}.bin");
        let image = ImageBuilder::new(Version::new(major, 0, 0), vec![major; len])
            .security_counter(u32::from(major))
            .behaviour(behaviour)
            .sign(&dev_key("oem"));
        std::fs::write(self.dir.path().join("artifacts").join(&name), &image).unwrap();
        let sha: String = Sha256::digest(&image)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let manifest = format!(
            "artifact:\n  url: http://127.0.0.1:{}/{name}\n  size: {}\n  sha256: {sha}\nversion: {major}.0.0\ntarget:\n  transport: doip\n  host: 127.0.0.1\n  port: {}\n",
            self.http_port,
            image.len(),
            self.ecu_port
        );
        let path = self.dir.path().join(format!("v{major}.yaml"));
        std::fs::write(&path, manifest).unwrap();
        path
    }

    pub fn hil(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_hil"))
            .args(args)
            .arg("--store")
            .arg(self.store())
            .output()
            .unwrap()
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn submit(b: &Bench, manifest: &Path) -> String {
    let o = b.hil(&["ota", "submit", manifest.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[test]
fn update_commits_then_a_never_confirming_image_rolls_back() {
    let b = Bench::start("max", &[]);
    let v2 = b.publish(
        2,
        Behaviour::Healthy {
            confirm_after_ms: 200,
        },
        60_000,
    );
    assert_eq!(submit(&b, &v2), "job-0001");
    let o = b.hil(&["ota", "run", "--confirm-timeout", "3"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    for line in [
        "job-0001: downloading (0 bytes)",
        "job-0001: downloaded",
        "job-0001: verifying",
        "job-0001: transferring: session",
        "job-0001: transferring: erase",
        "job-0001: applying: reset",
        "job-0001: applying: await_confirm",
        "job-0001: COMMITTED v2.0.0 to 0x0010",
    ] {
        assert!(out.contains(line), "no {line:?} in:\n{out}");
    }

    let v3 = b.publish(3, Behaviour::NeverConfirm, 50_000);
    assert_eq!(submit(&b, &v3), "job-0002");
    let o = b.hil(&["ota", "run", "--confirm-timeout", "2"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("job-0002: ROLLED BACK (reverted: not confirmed after 1 boot attempt(s))"),
        "{out}"
    );

    let o = b.hil(&["ota", "status", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let jobs: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(jobs[0]["state"]["state"], "committed");
    assert_eq!(jobs[1]["state"]["state"], "rolled_back");
    let o = b.hil(&["ota", "status"]);
    assert!(text(&o).contains("job-0002  v3.0.0"), "{}", text(&o));
}

#[test]
fn bad_manifests_and_stores_are_clear_errors() {
    let b = Bench::start("max", &[]);
    let m = b.dir.path().join("bad.yaml");
    std::fs::write(
        &m,
        "artifact: {url: 'http://x/a', size: 1}\nversion: 1.0.0\n",
    )
    .unwrap();
    let o = b.hil(&["ota", "submit", m.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("bad.yaml:1:11: artifact: missing field `sha256`"),
        "{}",
        text(&o)
    );
    let v2 = b.publish(2, Behaviour::DEFAULT, 20_000);
    submit(&b, &v2);
    std::fs::write(
        b.store().join("jobs/job-0001.json"),
        "{\"format\": 1, \"id\": ",
    )
    .unwrap();
    let o = b.hil(&["ota", "run"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("job-0001.json is corrupt at line 1"),
        "{}",
        text(&o)
    );
}
