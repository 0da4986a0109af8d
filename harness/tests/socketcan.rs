//! The harness over a real Linux CAN bus: SocketCAN on vcan interfaces.
//!
//! | trial | what runs on the bus |
//! |---|---|
//! | `flash_over_vcan_classic_11bit` | the in-process virtual ECU answers UDS over ISO-TP on one `CAN_RAW` socket; `Flasher` over `IsoTpTransport<SocketCanBackend>` on a second programs a signed v2 image (reset, confirm, commit); a third socket watches: classic 8-byte frames, ids 0x7E0/0x7E8, the ECU's flow control every 8 frames |
//! | `flash_over_vcan_fd_29bit` | the same in CAN FD frames of up to 64 bytes with 29-bit ids 0x18DA10F1/0x18DAF110 |
//! | `backend_against_the_kernel` | what the backend reads (remote frames skipped, FD frames skipped on a classic connection, its own frames not echoed), the open errors (not CAN, no such interface, FD on a classic interface, down), and an interface going down (`Network is down` at once, not a timeout) and away (`closed`) |
//!
//! Each trial makes its own interfaces, `hil<letter><pid>` (`ip link add … type vcan`, an
//! explicit MTU, up), and deletes them when done, so trials run in parallel under `cargo test`
//! and nextest alike. Both flashes run on an FD-capable bus (MTU 72), so the watching socket
//! would also see an FD frame on the classic connection, and fail the trial.
//!
//! ## Running it
//!
//! - With CAN in the kernel, as root (CI): `cargo nextest run -p hil --test socketcan`; vcan is
//!   loaded with `modprobe vcan` if `ip link add` does not find it.
//! - Without root, on an interface made once:
//!   `sudo ip link add dev vcan0 type vcan && sudo ip link set vcan0 mtu 72 up`, then
//!   `HIL_VCAN=vcan0 cargo nextest run -p hil --test socketcan`: both flashes share it (their ids
//!   differ); `backend_against_the_kernel` still needs root and is skipped.
//! - `HIL_REQUIRE_VCAN=1` makes a trial that cannot run fail instead of skipping (for a machine
//!   that must have CAN).
//!
//! ## Where the kernel has no CAN
//!
//! Whether a trial can run is decided when the binary lists its trials (nextest has no
//! runtime skip: a test that returns early passes), by opening a `PF_CAN` socket and making a
//! probe interface. One that cannot is listed as ignored: nextest counts it as skipped
//! (`--status-level skip` prints its SKIP line) and `cargo test` prints `ignored`. The reason
//! goes to stderr on every run of the binary (`cargo test` shows it; nextest keeps listing
//! output to itself), and is the trial's failure when it is run anyway:
//! `cargo nextest run -p hil --test socketcan --run-ignored only` says why.

use std::process::Command;
use std::time::Duration;

use ecu_sim::boot::{BootConfig, BootMode};
use ecu_sim::can::frame::Frame;
use ecu_sim::ecu::Ecu;
use ecu_sim::flash::{Geometry, SimFlash};
use ecu_sim::host::{EcuHandle, Host, Pace};
use ecu_sim::image::{Behaviour, ImageBuilder, Keyring, Version, dev_key};
use ecu_sim::proto::isotp;
use ecu_sim::proto::uds::codec::{BootStatusRecord, did};
use ecu_sim::proto::uds::server::{DiagServer, ServerConfig};
use ecu_sim::proto::uds_can::{CanIds, DiagEndpoint, EndpointEvent};
use hil::can::socketcan::{SocketCanBackend, check_kernel};
use hil::can::{CanBackend, CanError, IsoTpSettings, IsoTpTransport};
use hil::flasher::{FlashEvent, Flasher, FlasherConfig, Outcome};
use hil::uds_client::{UdsClient, UdsConfig};
use libtest_mimic::{Arguments, Failed, Trial};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Set to an existing, up vcan interface to run the flashes on it instead of making one.
const ENV_IFACE: &str = "HIL_VCAN";
/// Set to make trials that cannot run fail instead of skipping.
const ENV_REQUIRE: &str = "HIL_REQUIRE_VCAN";

/// Block size the ECU asks the tester for: vcan has no bit rate, so without flow-control pauses
/// a sender outruns the receiving socket's buffer.
const ECU_BLOCK_SIZE: u8 = 8;

/// One diagnostic connection on the bus.
#[derive(Clone, Copy, Debug)]
struct Link {
    fd: bool,
    ids: CanIds,
}

const CLASSIC_11BIT: Link = Link {
    fd: false,
    ids: CanIds {
        request: 0x7E0,
        response: 0x7E8,
        functional: 0x7DF,
    },
};

/// ISO 15765-4 normal fixed addressing: tester 0xF1, ECU 0x10.
const FD_29BIT: Link = Link {
    fd: true,
    ids: CanIds {
        request: 0x18DA_10F1,
        response: 0x18DA_F110,
        functional: 0x18DB_33F1,
    },
};

fn main() {
    let args = Arguments::from_args();
    let require = std::env::var_os(ENV_REQUIRE).is_some();
    // Making interfaces of our own: needed by the kernel trial, and by the flashes unless
    // HIL_VCAN names one.
    let own = can_make_vcan();
    let shared = std::env::var(ENV_IFACE).ok();
    let flash_bus = |link: Link| -> Result<Bus, String> {
        match &shared {
            Some(name) if link.fd => fd_capable(name).map(|()| Bus::Shared(name.clone())),
            Some(name) => Ok(Bus::Shared(name.clone())),
            None => own.clone().map(|()| Bus::Own),
        }
    };
    let plans: [(&str, Result<Bus, String>, TrialFn); 3] = [
        (
            "flash_over_vcan_classic_11bit",
            flash_bus(CLASSIC_11BIT),
            |bus| flash(bus, CLASSIC_11BIT, "c"),
        ),
        ("flash_over_vcan_fd_29bit", flash_bus(FD_29BIT), |bus| {
            flash(bus, FD_29BIT, "f")
        }),
        (
            "backend_against_the_kernel",
            own.clone().map(|()| Bus::Own),
            |_| backend_against_the_kernel(),
        ),
    ];
    // Run anyway (--ignored, --include-ignored, nextest's --run-ignored): fail with the reason.
    let forced = args.ignored || args.include_ignored;
    let mut trials = Vec::new();
    for (name, bus, run) in plans {
        trials.push(match bus {
            Ok(bus) => Trial::test(name, move || run(bus)),
            Err(reason) => {
                if require {
                    eprintln!("socketcan: {name} fails ({ENV_REQUIRE} is set): {reason}");
                } else if !forced {
                    eprintln!("socketcan: {name} SKIPPED (listed as ignored): {reason}");
                }
                Trial::test(name, move || Err(reason.into())).with_ignored_flag(!require)
            }
        });
    }
    // Runs everywhere: the CLI names why an interface does not open (here: no such interface,
    // and, on a kernel without CAN, that too).
    trials.push(Trial::test(
        "hil_flash_names_a_missing_interface",
        hil_flash_names_a_missing_interface,
    ));
    libtest_mimic::run(&args, trials).exit();
}

fn hil_flash_names_a_missing_interface() -> Result<(), Failed> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let image = dir.path().join("v2.bin");
    std::fs::write(&image, b"not reached").map_err(|e| e.to_string())?;
    let o = Command::new(env!("CARGO_BIN_EXE_hil"))
        .args(["flash", "--socketcan", "hilnosuch0"])
        .arg(&image)
        .output()
        .map_err(|e| e.to_string())?;
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    if o.status.code() != Some(2) {
        return Err(format!("exit {:?}, expected 2: {err}", o.status.code()).into());
    }
    let want = "socketcan hilnosuch0 (iso-tp 0x7e0/0x7e8): can: CAN interface hilnosuch0: no such interface";
    if !err.contains(want) {
        return Err(format!("no {want:?} in: {err}").into());
    }
    if hil::can::socketcan::check_kernel().is_err()
        && !err.contains("this kernel has no CAN support")
    {
        return Err(format!("the missing kernel support is not named: {err}").into());
    }
    Ok(())
}

/// A trial's body, given its bus.
type TrialFn = fn(Bus) -> Result<(), Failed>;

/// Where a trial's bus comes from.
#[derive(Clone, Debug)]
enum Bus {
    /// An interface the trial makes and deletes.
    Own,
    /// An existing interface (HIL_VCAN), left as it is.
    Shared(String),
}

/// Whether this kernel and user can make vcan interfaces: a `PF_CAN` socket, then a probe
/// interface made and deleted. The error is the reason to skip.
fn can_make_vcan() -> Result<(), String> {
    check_kernel().map_err(|e| format!("vcan unavailable: {e}"))?;
    Vcan::create(&iface_name("p"), None)
        .map(drop)
        .map_err(|e| format!("vcan unavailable: {e}"))
}

/// MTU of a vcan that carries classic frames only (`sizeof(struct can_frame)`).
const CLASSIC_MTU: u32 = 16;
/// MTU of a vcan that carries CAN FD frames too (`sizeof(struct canfd_frame)`).
const FD_MTU: u32 = 72;

/// Whether an existing interface carries CAN FD (MTU 72 or more).
fn fd_capable(name: &str) -> Result<(), String> {
    let path = format!("/sys/class/net/{name}/mtu");
    let mtu =
        std::fs::read_to_string(&path).map_err(|e| format!("{ENV_IFACE}={name}: {path}: {e}"))?;
    match mtu.trim().parse::<u32>() {
        Ok(mtu) if mtu >= FD_MTU => Ok(()),
        _ => Err(format!(
            "{ENV_IFACE}={name} has MTU {}: classic frames only (`ip link set {name} mtu 72` while down)",
            mtu.trim()
        )),
    }
}

/// `hil<tag><pid>`: unique per process and trial, within the 15 bytes of an interface name.
fn iface_name(tag: &str) -> String {
    format!("hil{tag}{}", std::process::id())
}

/// Run a command; its stderr is the error.
fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let line = format!("`{program} {}`", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{line}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(format!("{line}: {} ({})", stderr.trim(), out.status))
}

/// A vcan interface of ours, deleted when dropped.
#[derive(Debug)]
struct Vcan {
    name: String,
    deleted: bool,
}

impl Vcan {
    /// `ip link add dev NAME type vcan` (loading vcan if that fails), the MTU if given (the
    /// kernel's default for vcan differs between versions), up.
    fn create(name: &str, mtu: Option<u32>) -> Result<Vcan, String> {
        let add = ["link", "add", "dev", name, "type", "vcan"];
        if let Err(first) = run("ip", &add) {
            match run("modprobe", &["vcan"]) {
                Ok(()) => run("ip", &add)?,
                Err(modprobe) => return Err(format!("{first}; {modprobe}")),
            }
        }
        let vcan = Vcan {
            name: name.to_string(),
            deleted: false,
        };
        if let Some(mtu) = mtu {
            vcan.ip(&["mtu", &mtu.to_string()])?;
        }
        vcan.ip(&["up"])?;
        Ok(vcan)
    }

    /// `ip link set dev NAME ARGS`.
    fn ip(&self, args: &[&str]) -> Result<(), String> {
        let mut all = vec!["link", "set", "dev", &self.name];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    fn delete(mut self) -> Result<(), String> {
        self.deleted = true;
        run("ip", &["link", "del", "dev", &self.name])
    }
}

impl Drop for Vcan {
    fn drop(&mut self) {
        if self.deleted {
            return;
        }
        if let Err(e) = run("ip", &["link", "del", "dev", &self.name]) {
            eprintln!("socketcan: cleaning up: {e}");
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

const HEALTHY: Behaviour = Behaviour::Healthy {
    confirm_after_ms: 100,
};

fn image(major: u8, len: usize) -> Vec<u8> {
    ImageBuilder::new(Version::new(major, 0, 0), vec![0xA0 | major; len])
        .security_counter(u32::from(major))
        .behaviour(HEALTHY)
        .sign(&dev_key("oem"))
}

/// The virtual ECU running v1, answering on `link` through a socket of its own.
struct TestEcu {
    stop: oneshot::Sender<()>,
    host: JoinHandle<Host<SimFlash>>,
    serve: JoinHandle<Result<(), CanError>>,
}

impl TestEcu {
    fn start(interface: &str, link: Link) -> Result<TestEcu, CanError> {
        let keys = Keyring::new().with_key(dev_key("oem").verifying_key());
        let ecu = Ecu::factory(
            Geometry::uniform(4096, 3 + 2 * 16 + 1, 8).unwrap(),
            BootMode::SwapScratch,
            &image(1, 9000),
            BootConfig {
                defect: None,
                max_boot_attempts: 1,
                keys,
            },
            1,
        )
        .unwrap();
        let host = Host {
            ecu,
            server: DiagServer::new(ServerConfig::default()),
            nvm_path: None,
        };
        let bus = SocketCanBackend::open(interface, link.fd)?;
        let (stop, stop_rx) = oneshot::channel();
        let (handle, host) = host.spawn(Pace::Max, stop_rx);
        let serve = tokio::spawn(serve_can(bus, handle, link));
        Ok(TestEcu { stop, host, serve })
    }

    /// Why the ECU stopped answering, if its bus loop ended.
    async fn serve_error(&mut self) -> Option<String> {
        if !self.serve.is_finished() {
            return None;
        }
        Some(match (&mut self.serve).await {
            Ok(Ok(())) => "the ECU's bus loop ended".into(),
            Ok(Err(e)) => format!("the ECU's bus loop failed: {e}"),
            Err(e) => format!("the ECU's bus loop panicked: {e}"),
        })
    }

    async fn stop(self) -> Ecu<SimFlash> {
        self.serve.abort();
        let _ = self.stop.send(());
        self.host.await.unwrap().ecu
    }
}

/// The ECU's side of UDS on CAN: every frame from the bus into the ISO-TP endpoint, its
/// requests to the ECU task, the responses back as frames when they are due.
async fn serve_can(mut bus: SocketCanBackend, ecu: EcuHandle, link: Link) -> Result<(), CanError> {
    let start = Instant::now();
    let us = |t: Instant| t.saturating_duration_since(start).as_micros() as u64;
    let template = isotp::Config {
        fd: link.fd,
        padding: Some(0xAA),
        block_size: ECU_BLOCK_SIZE,
        // RequestDownload announces 16 KiB + 2 blocks: segmented with the 32-bit first frame.
        max_message: 1 << 16,
        ..isotp::Config::new(link.ids.response, link.ids.request)
    };
    let mut ep = DiagEndpoint::new(link.ids, template);
    loop {
        let wake = ep
            .poll_timeout()
            .map_or(Instant::now() + Duration::from_secs(3600), |t| {
                start + Duration::from_micros(t)
            });
        if let Some(frame) = bus.recv(wake).await? {
            ep.handle_frame(us(Instant::now()), &frame.into_isotp());
        }
        ep.handle_timeout(us(Instant::now()));
        while let Some(event) = ep.poll_event() {
            match event {
                EndpointEvent::Request {
                    data, addressing, ..
                } => {
                    for (at, bytes) in ecu.request(data, addressing).await {
                        ep.respond(us(Instant::now()), us(at.into()), bytes);
                    }
                }
                EndpointEvent::TransportError(e) => eprintln!("socketcan: ecu iso-tp: {e}"),
            }
        }
        let now = us(Instant::now());
        while let Some(f) = ep.poll_transmit(now) {
            bus.send(&Frame::from_isotp(f, link.fd)).await?;
        }
    }
}

/// Every frame a third socket sees until stopped.
struct Sniffer {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<Vec<Frame>, CanError>>,
}

impl Sniffer {
    /// `fd`: whether the interface carries FD frames (a classic socket would not see them).
    fn start(interface: &str, fd: bool) -> Result<Sniffer, CanError> {
        let mut bus = SocketCanBackend::open(interface, fd)?;
        let (stop, mut stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            loop {
                tokio::select! {
                    _ = &mut stopped => return Ok(seen),
                    f = bus.recv(Instant::now() + Duration::from_secs(3600)) => seen.extend(f?),
                }
            }
        });
        Ok(Sniffer { stop, task })
    }

    async fn stop(self) -> Result<Vec<Frame>, CanError> {
        let _ = self.stop.send(());
        self.task.await.expect("the sniffer does not panic")
    }
}

/// Program a signed v2 over `link` on the trial's bus and check the outcome, the ECU's state
/// and what went over the wire.
fn flash(bus: Bus, link: Link, tag: &str) -> Result<(), Failed> {
    let own;
    let (interface, bus_fd) = match bus {
        Bus::Own => {
            own = Vcan::create(&iface_name(tag), Some(FD_MTU))?;
            (own.name.clone(), true)
        }
        Bus::Shared(name) => {
            let fd = fd_capable(&name).is_ok();
            (name, fd)
        }
    };
    runtime().block_on(async {
        let mut ecu = TestEcu::start(&interface, link)?;
        let sniffer = Sniffer::start(&interface, bus_fd)?;
        let backend = SocketCanBackend::open(&interface, link.fd)?;
        let kind = if link.fd { "fd" } else { "classic" };
        assert_eq!(
            backend.describe(),
            format!("socketcan {interface} ({kind})")
        );
        let settings = IsoTpSettings {
            tx_id: link.ids.request,
            rx_id: link.ids.response,
            fd: link.fd,
            padding: Some(0xCC),
        };
        let mut client =
            UdsClient::new(IsoTpTransport::new(backend, settings), UdsConfig::default());
        let v2 = image(2, 40_000);
        let config = FlasherConfig {
            confirm_timeout: Duration::from_secs(5),
            boot_timeout: Duration::from_secs(10),
            ..FlasherConfig::default()
        };
        let mut phases = Vec::new();
        let flasher = Flasher::new(config);
        let mut on_event = |e: &FlashEvent| {
            if let FlashEvent::Phase(p) = e {
                phases.push(p.name());
            }
        };
        let flashing = flasher.run(&mut client, &v2, &mut on_event);
        let report = match tokio::time::timeout(Duration::from_secs(120), flashing).await {
            Ok(Ok(report)) => report,
            Ok(Err(e)) => {
                let ecu_side = ecu.serve_error().await.unwrap_or_default();
                return Err(format!("flash over {interface}: {e} {ecu_side}").into());
            }
            Err(_) => return Err(format!("flash over {interface}: no outcome in 120 s").into()),
        };
        assert_eq!(
            report.outcome,
            Outcome::Committed {
                version: Version::new(2, 0, 0),
                slot: 0
            },
            "phases: {phases:?}"
        );
        assert!(
            phases.contains(&"reset") && phases.contains(&"confirm"),
            "{phases:?}"
        );
        let version = client.read_did(did::APPLICATION_VERSION).await?;
        assert_eq!(String::from_utf8_lossy(&version), "2.0.0");
        let status = BootStatusRecord::decode(&client.read_did(did::BOOT_STATUS).await?)?;
        assert!(status.confirmed && !status.on_probation, "{status:?}");
        drop(client);

        let ecu = ecu.stop().await;
        let running = ecu.running().expect("firmware runs");
        assert_eq!(running.image.header.version, Version::new(2, 0, 0));
        assert!(running.confirmed);

        let seen = sniffer.stop().await?;
        check_wire(&seen, link, v2.len());
        Ok::<(), Failed>(())
    })
}

/// The frames of `link` a third socket saw: their format, enough of them to carry the image,
/// and the ECU's flow control pacing the transfer.
fn check_wire(seen: &[Frame], link: Link, image_len: usize) {
    let ours: Vec<&Frame> = seen
        .iter()
        .filter(|f| f.id == link.ids.request || f.id == link.ids.response)
        .collect();
    let extended = link.ids.request > 0x7FF;
    for f in &ours {
        assert!(
            f.extended == extended && f.fd == link.fd,
            "{f:?} on a {link:?} connection"
        );
        if !link.fd {
            assert_eq!(f.data.len(), 8, "classic frames are padded: {f:?}");
        }
    }
    if link.fd {
        assert!(
            ours.iter().any(|f| f.data.len() == 64),
            "no 64-byte FD frame among {} frames",
            ours.len()
        );
    }
    let pci =
        |f: &&&Frame, id: u32, kind: u8| f.id == id && f.data.first().map(|b| b >> 4) == Some(kind);
    let consecutive = ours.iter().filter(|f| pci(f, link.ids.request, 2)).count();
    let per_frame = if link.fd { 63 } else { 7 };
    assert!(
        consecutive >= image_len / per_frame,
        "{consecutive} consecutive frames cannot carry {image_len} bytes"
    );
    let flow_control = ours.iter().filter(|f| pci(f, link.ids.response, 3)).count();
    assert!(
        flow_control >= consecutive / usize::from(ECU_BLOCK_SIZE),
        "{flow_control} flow control frames for {consecutive} consecutive frames in blocks of {ECU_BLOCK_SIZE}"
    );
}

/// The backend on real sockets: what it delivers, how it fails to open, and what an interface
/// going down and away looks like to a reader and a writer.
fn backend_against_the_kernel() -> Result<(), Failed> {
    let fd_bus = Vcan::create(&iface_name("k"), Some(FD_MTU))?;
    let classic_bus = Vcan::create(&iface_name("m"), Some(CLASSIC_MTU))?;
    runtime().block_on(async {
        let open_err = |name: &str, fd| match SocketCanBackend::open(name, fd) {
            Ok(b) => panic!("{} opened", b.describe()),
            Err(e) => e.to_string(),
        };
        // From sysfs: "… (link type 772, CAN is 280)"; without it, from bind.
        let e = open_err("lo", false);
        assert!(
            e.starts_with("CAN interface lo: not a CAN interface"),
            "{e}"
        );
        let missing = iface_name("x");
        assert_eq!(
            open_err(&missing, false),
            format!("CAN interface {missing}: no such interface")
        );
        let e = open_err(&classic_bus.name, true);
        assert!(e.contains("CAN FD requested, but the MTU is 16"), "{e}");

        let name = &fd_bus.name;
        let mut fd_rx = SocketCanBackend::open(name, true)?;
        let mut classic_rx = SocketCanBackend::open(name, false)?;
        let mut tx = SocketCanBackend::open(name, true)?;
        // A remote frame, from a socket of the crate's own (the backend sends data frames only).
        let raw = <socketcan::CanFdSocket as socketcan::Socket>::open(name)?;
        let remote = <socketcan::CanRemoteFrame as socketcan::EmbeddedFrame>::new_remote(
            socketcan::StandardId::new(0x7E8).unwrap(),
            8,
        )
        .unwrap();
        socketcan::Socket::write_frame(&raw, &remote)?;
        let fd_frame = Frame::fd(0x18DA_F110, vec![0x42; 64]);
        let ext_short = Frame {
            id: 0x7E8,
            extended: true,
            fd: false,
            data: vec![1, 2, 3],
        };
        let std_full = Frame::classic(0x7E8, vec![9; 8]);
        for f in [&fd_frame, &ext_short, &std_full] {
            tx.send(f).await?;
        }
        let e = classic_rx.send(&fd_frame).await.unwrap_err().to_string();
        assert!(e.contains("an FD frame on a classic connection"), "{e}");

        let soon = || Instant::now() + Duration::from_secs(2);
        for want in [&fd_frame, &ext_short, &std_full] {
            assert_eq!(fd_rx.recv(soon()).await?.as_ref(), Some(want));
        }
        for want in [&ext_short, &std_full] {
            assert_eq!(classic_rx.recv(soon()).await?.as_ref(), Some(want));
        }
        let quiet = || Instant::now() + Duration::from_millis(200);
        assert_eq!(fd_rx.recv(quiet()).await?, None, "only the data frames");
        assert_eq!(classic_rx.recv(quiet()).await?, None);
        assert_eq!(
            tx.recv(quiet()).await?,
            None,
            "its own frames are not echoed"
        );

        // Down: a waiting reader hears it at once (not at its deadline), a writer too.
        let down_at = Instant::now();
        let reading = tokio::spawn(async move {
            let r = fd_rx.recv(Instant::now() + Duration::from_secs(10)).await;
            (r, down_at.elapsed())
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        fd_bus.ip(&["down"])?;
        let (r, after) = reading.await?;
        let e = r.expect_err("the interface went down").to_string();
        assert!(e.contains("Network is down"), "{e}");
        assert!(
            after < Duration::from_secs(5),
            "the reader heard it after {after:?}"
        );
        let e = tx.send(&std_full).await.unwrap_err().to_string();
        assert!(e.contains("Network is down"), "{e}");
        let e = open_err(name, false);
        assert!(e.contains("interface is down"), "{e}");

        // Away: the socket is closed for good.
        let described = classic_rx.describe();
        fd_bus.delete()?;
        let r = classic_rx
            .recv(Instant::now() + Duration::from_secs(10))
            .await;
        assert!(
            matches!(&r, Err(CanError::Closed(what)) if *what == described),
            "{r:?}"
        );
        Ok::<(), Failed>(())
    })
}
