//! A live bench for the OTA tests: `ecu-sim serve` (DoIP on loopback), `hil serve-artifacts`
//! (HTTP on loopback) and the `hil` binary, in a temp dir.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ecu_sim::image::{Behaviour, ImageBuilder, Version, dev_key};
use ecu_sim::proto::uds::codec::{BootStatusRecord, SlotRecord, did};
use hil::transport::{DoipSettings, DoipTransport};
use hil::uds_client::{UdsClient, UdsConfig};
use sha2::{Digest, Sha256};

/// A binary of this workspace, next to `hil` (built if missing, e.g. `ecu-sim`).
pub fn workspace_bin(name: &str) -> PathBuf {
    let hil = PathBuf::from(env!("CARGO_BIN_EXE_hil"));
    let path = hil.with_file_name(name);
    if !path.exists() {
        let release = hil.parent().is_some_and(|d| d.ends_with("release"));
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--workspace", "--bin", name]);
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
fn start(cmd: Command) -> (Proc, u16) {
    let (proc, port, _) = start_reading(cmd, 1);
    (proc, port)
}

/// Start `cmd`, read `lines` stdout lines; the port after `127.0.0.1:` in the first, and the
/// lines after it.
fn start_reading(mut cmd: Command, lines: usize) -> (Proc, u16, Vec<String>) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let more = (1..lines)
        .map(|_| {
            let mut l = String::new();
            out.read_line(&mut l).unwrap();
            l.trim_end().to_string()
        })
        .collect();
    let port = line
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    (Proc(child), port, more)
}

/// An ECU served over DoIP and an artifact server, in a temp dir.
#[derive(Debug)]
pub struct Bench {
    pub dir: tempfile::TempDir,
    pub ecu_port: u16,
    pub http_port: u16,
    /// The ECU's slcan pty, when started with one.
    pub slcan_pty: Option<String>,
    /// The pty of the ECU's emulated power relay, when started with one.
    pub relay_pty: Option<String>,
    _procs: Vec<Proc>,
}

impl Bench {
    pub fn start(speed: &str, http_args: &[&str]) -> Bench {
        Bench::start_with(speed, http_args, false)
    }

    /// As [`Bench::start`]; `slcan`: the ECU also sits behind an slcan adapter on a pty.
    pub fn start_with(speed: &str, http_args: &[&str], slcan: bool) -> Bench {
        Bench::start_full(speed, http_args, slcan, false)
    }

    /// An ECU for `hil run --bench` (which serves its own artifacts): optionally behind an
    /// slcan pty, optionally with its power on an emulated relay board.
    pub fn start_ecu(speed: &str, slcan: bool, relay: bool) -> Bench {
        Bench::start_full(speed, &[], slcan, relay)
    }

    fn start_full(speed: &str, http_args: &[&str], slcan: bool, relay: bool) -> Bench {
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
        if slcan {
            ecu.arg("--slcan-pty");
        }
        if relay {
            ecu.arg("--relay-pty");
        }
        let (ecu, ecu_port, lines) =
            start_reading(ecu, 1 + usize::from(slcan) + usize::from(relay));
        // "ecu-sim: slcan adapter on /dev/pts/N (...)", "ecu-sim: power relay on /dev/pts/M (...)"
        let pty = |what: &str| {
            lines.iter().find(|l| l.contains(what)).map(|l| {
                l.split(" on ")
                    .nth(1)
                    .and_then(|r| r.split_whitespace().next())
                    .unwrap_or_else(|| panic!("no pty in {l:?}"))
                    .to_string()
            })
        };
        let slcan_pty = pty("slcan adapter");
        let relay_pty = pty("power relay");
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
            slcan_pty,
            relay_pty,
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
        self.hil_command(args).output().unwrap()
    }
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn submit(b: &Bench, manifest: &Path) -> String {
    let o = b.hil(&["ota", "submit", manifest.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

impl Bench {
    /// `hil ARGS --store STORE`, not started.
    pub fn hil_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hil"));
        cmd.args(args).arg("--store").arg(self.store());
        cmd
    }

    /// The ECU's boot status and the record of the slot it runs from, read over DoIP (retried
    /// while the ECU boots or swaps, up to 20 s).
    pub fn ecu_state(&self) -> (BootStatusRecord, SlotRecord) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let addr = format!("127.0.0.1:{}", self.ecu_port);
        let mut last = String::new();
        for _ in 0..80 {
            let r = runtime.block_on(async {
                let transport = DoipTransport::connect(addr.clone(), DoipSettings::default())
                    .await
                    .map_err(|e| e.to_string())?;
                let mut client = UdsClient::new(transport, UdsConfig::default());
                let status = client
                    .read_did(did::BOOT_STATUS)
                    .await
                    .map_err(|e| e.to_string())?;
                let status = BootStatusRecord::decode(&status).map_err(|e| e.to_string())?;
                let slot_did = if status.slot == 0 {
                    did::PRIMARY_SLOT
                } else {
                    did::SECONDARY_SLOT
                };
                let slot = client.read_did(slot_did).await.map_err(|e| e.to_string())?;
                let slot = SlotRecord::decode(&slot).map_err(|e| e.to_string())?;
                Ok::<_, String>((status, slot))
            });
            match r {
                Ok(state) => return state,
                Err(e) => last = e,
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
        panic!("the ecu did not answer for 20 s: {last}");
    }
}

/// A mosquitto on 127.0.0.1:`port`, killed when dropped.
pub struct Broker {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Broker {
    pub fn start(port: u16) -> Broker {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
        )
        .unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto runs: run ci/install.sh");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Broker {
            child,
            port,
            _dir: dir,
        }
    }

    pub fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    pub fn url(&self) -> hil::ota::mqtt::BrokerUrl {
        format!("mqtt://127.0.0.1:{}", self.port).parse().unwrap()
    }

    /// Kill it (SIGKILL: nothing saved) and start a new one on the same port.
    pub fn restart(mut self) -> Broker {
        let port = self.port;
        let _ = self.child.kill();
        let _ = self.child.wait();
        Broker::start(port)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
