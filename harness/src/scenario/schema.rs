//! The scenario file format (YAML). Strict: unknown fields are errors, enums are tagged (a
//! unit variant is a bare name, a variant with data a one-key map), nothing is guessed.
//!
//! ```yaml
//! description: Power cut at 50 % of the transfer; the manager retries and the update commits
//! seed: 7
//! ecu: {boot_mode: swap, transport: doip, slot_sectors: 24}
//! installed: {version: 1.0.0}
//! update: {version: 2.0.0, size: 60000}
//! faults:
//!   - when: {transfer_percent: 50}
//!     do: {power_cut: {restore_after_ms: 500}}
//! expect:
//!   outcome: committed
//!   version: 2.0.0
//! ```
//!
//! See the README's "Scenario files" section for every field.

use serde::{Deserialize, Serialize};

/// One scenario file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// One line: what the scenario proves.
    pub description: String,
    /// Seeds every random choice (torn writes, security seeds, probabilistic triggers).
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub ecu: EcuSpec,
    /// The image the ECU runs at the start (provisioned, confirmed).
    #[serde(default = "ImageSpec::installed")]
    pub installed: ImageSpec,
    /// The image the OTA job installs.
    pub update: ImageSpec,
    #[serde(default)]
    pub download: DownloadSpec,
    #[serde(default)]
    pub client: Client,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<Fault>,
    pub expect: Expect,
    /// The directory of the file it came from (`{dir}` of an external client).
    #[serde(skip)]
    pub dir: Option<std::path::PathBuf>,
    /// Where the faults are written (none for a scenario built in code, e.g. a sweep's fork).
    #[serde(skip)]
    pub origin: Option<Origin>,
}

/// The file a scenario came from and the (line, column) of each of its faults.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Origin {
    pub file: String,
    pub faults: Vec<(usize, usize)>,
}

impl Trigger {
    /// The trigger in the scenario file's words, as one flow mapping:
    /// `{flash_op: {n: 900, region: primary}}`, `{state: transferring:erase}`.
    pub fn to_yaml_flow(&self) -> String {
        let v = serde_json::to_value(self).unwrap_or_default();
        flow(&v)
    }
}

fn flow(v: &serde_json::Value) -> String {
    use serde_json::Value;
    match v {
        Value::Object(m) => {
            let fields: Vec<String> = m
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| format!("{k}: {}", flow(v)))
                .collect();
            format!("{{{}}}", fields.join(", "))
        }
        Value::Array(a) => format!("[{}]", a.iter().map(flow).collect::<Vec<_>>().join(", ")),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
            _ => n.to_string(),
        },
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// MCUboot's upgrade strategies by MCUboot's names; `swap` and `ab` (the earlier names) are
/// aliases of `swap-scratch` and `direct-xip`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BootModeSpec {
    #[default]
    #[serde(alias = "swap")]
    SwapScratch,
    SwapMove,
    SwapOffset,
    #[serde(alias = "overwrite-only")]
    Overwrite,
    #[serde(alias = "ab")]
    DirectXip,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransportSpec {
    /// UDS over DoIP (message level: each request and response is one TCP segment).
    #[default]
    Doip,
    /// UDS over ISO-TP over classic CAN at `bitrate`.
    Can,
    /// UDS over ISO-TP over CAN FD, `bitrate` arbitration, `data_bitrate` data phase.
    Canfd,
}

/// The virtual ECU.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EcuSpec {
    pub boot_mode: BootModeSpec,
    pub transport: TransportSpec,
    /// CAN (arbitration) bit rate, bit/s.
    pub bitrate: u32,
    /// CAN FD data-phase bit rate, bit/s.
    pub data_bitrate: u32,
    /// Flash sector size, bytes (uniform sectors).
    pub sector_size: u32,
    /// Sectors per slot (the last holds the trailer): image capacity is `(slot_sectors - 1) *
    /// sector_size`.
    pub slot_sectors: u32,
    /// Flash write unit, bytes (1, 2, 4, 8, 16 or 32).
    pub align: u8,
    /// Boots a test image gets before the bootloader reverts it.
    pub max_boot_attempts: u8,
    /// Development keys the bootloader trusts, by name.
    pub keys: Vec<String>,
    /// The image decryption key file (`ecu-sim --enc-key`: an X25519, EC P-256 or RSA-2048
    /// private key PEM, or an AES-KW key file), relative to the scenario file's directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enc_key: Option<std::path::PathBuf>,
    /// maxNumberOfBlockLength announced by RequestDownload.
    pub block_len: u32,
    /// A deliberate bootloader bug, to prove that sweeps find such bugs (never in a model of a
    /// real ECU).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bootloader_defect: Option<DefectSpec>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DefectSpec {
    /// The swap journal records a step before the step's erase and copy ran.
    JournalBeforeCopy,
    /// The swap journal records no steps: an interrupted swap starts over.
    NoStepRecords,
}

impl Default for EcuSpec {
    fn default() -> Self {
        EcuSpec {
            boot_mode: BootModeSpec::SwapScratch,
            transport: TransportSpec::Doip,
            bitrate: 500_000,
            data_bitrate: 2_000_000,
            sector_size: 4096,
            slot_sectors: 32,
            align: 8,
            max_boot_attempts: 1,
            keys: vec!["oem".into()],
            enc_key: None,
            block_len: 4096 + 2,
            bootloader_defect: None,
        }
    }
}

impl EcuSpec {
    /// The bootloader's mode.
    pub fn mode(&self) -> ecu_sim::boot::BootMode {
        use ecu_sim::boot::BootMode;
        match self.boot_mode {
            BootModeSpec::SwapScratch => BootMode::SwapScratch,
            BootModeSpec::SwapMove => BootMode::SwapMove,
            BootModeSpec::SwapOffset => BootMode::SwapOffset,
            BootModeSpec::Overwrite => BootMode::Overwrite,
            BootModeSpec::DirectXip => BootMode::DirectXip,
        }
    }

    /// The flash device: journal (2), counter and both slots, plus the scratch sector
    /// (swap-scratch) or the larger slot's extra sector (swap-move, swap-offset).
    pub fn geometry(&self) -> Result<ecu_sim::flash::Geometry, ecu_sim::flash::FlashError> {
        let (scratch, extra_p, extra_s) = self.mode().extra_sectors();
        let sectors = 3 + 2 * self.slot_sectors as usize + scratch + extra_p + extra_s;
        ecu_sim::flash::Geometry::uniform(self.sector_size, sectors, usize::from(self.align))
    }

    /// The image decryption key of `enc_key` (a relative path is taken from `dir`, the
    /// scenario file's directory); `Err` says what is wrong with the file.
    pub fn load_enc_key(
        &self,
        dir: Option<&std::path::Path>,
    ) -> Result<Option<ecu_sim::image::EncKey>, EncKeyFileError> {
        let Some(file) = &self.enc_key else {
            return Ok(None);
        };
        let path = dir.map_or_else(|| file.clone(), |d| d.join(file));
        let bytes = std::fs::read(&path).map_err(|source| EncKeyFileError::Read {
            path: path.clone(),
            source,
        })?;
        ecu_sim::image::EncKey::from_file(&bytes)
            .map(Some)
            .map_err(|source| EncKeyFileError::Key { path, source })
    }

    /// The layout the bootloader resolves for this ECU (what the runner's ECU will have).
    pub fn layout(&self) -> Result<ecu_sim::boot::Layout, String> {
        let geometry = self.geometry().map_err(|e| e.to_string())?;
        ecu_sim::boot::Layout::auto(&geometry, self.mode()).map_err(|e| e.to_string())
    }
}

/// Why `ecu.enc_key` gives no decryption key.
#[derive(Debug, thiserror::Error)]
pub enum EncKeyFileError {
    #[error("reading {path}: {source}", path = path.display())]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}", path = path.display())]
    Key {
        path: std::path::PathBuf,
        source: ecu_sim::image::EncKeyError,
    },
}

/// What an image does once booted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum BehaviourSpec {
    /// Confirms itself this long after booting.
    Healthy { confirm_after_ms: u32 },
    /// Crashes right after booting (every boot).
    CrashOnBoot,
    /// Hangs; the watchdog resets the ECU after `watchdog_ms`.
    Hang { watchdog_ms: u32 },
    /// Runs, answers diagnostics, never confirms.
    NeverConfirm,
}

impl Default for BehaviourSpec {
    fn default() -> Self {
        BehaviourSpec::Healthy {
            confirm_after_ms: 500,
        }
    }
}

/// How an image is signed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Signing {
    /// With the development key of this name.
    Key(String),
    /// No signature TLV at all.
    Unsigned,
}

impl Default for Signing {
    fn default() -> Self {
        Signing::Key("oem".into())
    }
}

/// An image, built deterministically from these fields and the scenario's seed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSpec {
    pub version: String,
    /// Payload bytes (the image adds its header and TLVs).
    #[serde(default = "ImageSpec::default_size")]
    pub size: usize,
    #[serde(default)]
    pub behaviour: BehaviourSpec,
    #[serde(default)]
    pub signing: Signing,
    /// Security counter (default: the major version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_counter: Option<u32>,
    /// Flip one payload byte after signing (the hash no longer matches).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tampered: bool,
    /// Encrypt the image for the ECU's key (`ecu.enc_key`) as `imgtool sign --encrypt` does:
    /// the update only (the installed image lies decrypted in the primary slot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypt: Option<EncryptSpec>,
}

/// How an image is encrypted ([`ImageSpec::encrypt`]); the key encryption (ENC_X25519,
/// ENC_EC256, ENC_RSA2048, ENC_KW) follows from the kind of `ecu.enc_key`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptSpec {
    /// AES key bits: 128 (the default) or 256 (imgtool `--encrypt-keylen 256`).
    #[serde(default = "EncryptSpec::default_aes")]
    pub aes: u16,
    /// HKDF and HMAC with SHA-512 (ENC_X25519_SHA512, imgtool `--hmac-sha 512`; X25519 keys).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hmac_sha512: bool,
}

impl EncryptSpec {
    fn default_aes() -> u16 {
        128
    }

    /// The AES key size, `None` for bits that are neither 128 nor 256.
    pub fn aes_key_size(&self) -> Option<ecu_sim::image::AesKeySize> {
        ecu_sim::image::AesKeySize::ALL
            .into_iter()
            .find(|a| a.bits() == self.aes)
    }
}

impl ImageSpec {
    fn default_size() -> usize {
        40_000
    }
    fn installed() -> ImageSpec {
        ImageSpec {
            version: "1.0.0".into(),
            size: Self::default_size(),
            behaviour: BehaviourSpec::default(),
            signing: Signing::default(),
            security_counter: None,
            tampered: false,
            encrypt: None,
        }
    }
}

/// The artifact server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DownloadSpec {
    /// Bytes per second.
    pub bandwidth: u64,
}

impl Default for DownloadSpec {
    fn default() -> Self {
        DownloadSpec {
            bandwidth: 1_000_000,
        }
    }
}

/// The OTA client that performs the update.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Client {
    /// This project's manager (`hil ota`), with its limits.
    Manager(ManagerSpec),
    /// Another program (a team's own flashing tool) updates the ECU, served on real sockets in
    /// real time (see [`ExternalClient`]).
    External(ExternalClient),
}

/// A flashing tool run as the OTA client: `sh -c COMMAND` with placeholders replaced (in
/// `command` and in `env` values):
///
/// | placeholder | value |
/// |---|---|
/// | `{host}` `{port}` | the ECU's DoIP entity (`transport: doip`) |
/// | `{ecu_address}` `{tester_address}` | DoIP logical addresses, `0x0010` style |
/// | `{pty}` | the slcan adapter's pseudo-terminal (`transport: can`) |
/// | `{tx_id}` `{rx_id}` | ISO-TP request and response ids, `0x7E0` style |
/// | `{image}` | the update image (a file) |
/// | `{version}` | the update's version |
/// | `{dir}` | the scenario file's directory |
///
/// The outcome: exit status 0 and the update running confirmed is `committed`; status 0
/// and the old image running after a revert is `rolled_back`; anything else is `failed`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalClient {
    pub command: String,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub env: std::collections::BTreeMap<String, String>,
    /// The client is killed (and the scenario fails) after this long.
    #[serde(default = "ExternalClient::default_timeout")]
    pub timeout_s: f64,
}

impl ExternalClient {
    fn default_timeout() -> f64 {
        300.0
    }
}

impl Default for Client {
    fn default() -> Self {
        Client::Manager(ManagerSpec::default())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ManagerSpec {
    pub download_attempts: u32,
    pub transfer_attempts: u32,
    /// Seconds a new image may stay on probation before the manager resets the ECU to make
    /// the bootloader revert it.
    pub confirm_timeout_s: f64,
    /// Seconds the ECU may stay silent after a reset.
    pub boot_timeout_s: f64,
}

impl Default for ManagerSpec {
    fn default() -> Self {
        ManagerSpec {
            download_attempts: 5,
            transfer_attempts: 3,
            confirm_timeout_s: 10.0,
            boot_timeout_s: 30.0,
        }
    }
}

/// A fault: when it fires, what it does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    pub when: Trigger,
    #[serde(rename = "do")]
    pub action: Action,
    /// How often the fault may fire (each time its trigger matches again).
    #[serde(default = "one")]
    pub times: u32,
    /// A fault whose trigger never matched fails the scenario, unless optional.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub optional: bool,
}

fn one() -> u32 {
    1
}

/// A flash region, by role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Region {
    Primary,
    Secondary,
    Scratch,
    /// The trailer sectors of both slots.
    Trailer,
    /// The swap journal sectors.
    Journal,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKindSpec {
    Erase,
    Write,
}

/// The n-th flash operation matching the filters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlashOpTrigger {
    /// 1-based count of matching operations.
    pub n: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<OpKindSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<Region>,
    /// Only operations of the bootloader during this boot (1 is the factory boot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot: Option<u64>,
    /// Only operations of the bootloader, any boot.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub in_boot: bool,
    /// Only operations of the firmware (the diagnostic server erasing and writing).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub in_firmware: bool,
}

/// What a probabilistic trigger counts as an opportunity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Opportunity {
    /// Every UDS request.
    Request,
    /// Every TransferData block.
    TransferBlock,
    /// Every downloaded chunk (16 KiB).
    DownloadChunk,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbabilityTrigger {
    pub p: f64,
    pub per: Opportunity,
}

/// When a fault fires.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Trigger {
    /// On entering an OTA job state: `downloading`, `transferring`, `transferring:erase`,
    /// `transferring:block`, `applying:await_boot`, … (see the job states table).
    State(String),
    /// When the download reaches this byte offset.
    DownloadBytes(u64),
    /// When the download reaches this percentage (0–100).
    DownloadPercent(f64),
    /// When TransferData block `n` (1-based, counted per programming sequence) is sent.
    TransferBlock(u32),
    /// When the transfer reaches this percentage of its blocks.
    TransferPercent(f64),
    /// At a flash operation (power cuts land inside the operation).
    FlashOp(FlashOpTrigger),
    /// When boot number `n` starts (1 is the factory boot, 2 the first after it).
    Boot(u64),
    /// Right after the ECU handled UDS request number `n` (1-based, counted over the run):
    /// its response is what a cut there loses.
    Request(u64),
    /// At this simulated time, milliseconds since the start.
    AtMs(u64),
    /// When an event of this name happens (an ECU event such as `swap_started`,
    /// `booted`, `revert_started`; a request such as `request:0x31`).
    Event(String),
    /// With probability `p` at each opportunity (seeded).
    Probability(ProbabilityTrigger),
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CutVariantSpec {
    Before,
    #[default]
    Torn,
    After,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PowerCut {
    /// At a flash operation: how the operation ends (ignored elsewhere).
    pub variant: CutVariantSpec,
    /// Power comes back after this long.
    pub restore_after_ms: u64,
    /// The OTA manager loses power too (in a vehicle, the telematics unit): it dies at the cut
    /// and starts again from its store when power comes back.
    pub kill_manager: bool,
}

impl Default for PowerCut {
    fn default() -> Self {
        PowerCut {
            variant: CutVariantSpec::Torn,
            restore_after_ms: 500,
            kill_manager: false,
        }
    }
}

/// What happens to CAN frames of the next exchange on the bus: the request the trigger fired
/// on (or, for triggers outside a request, the next one) and the ECU's answers to it. Every
/// form becomes a fault rule of the virtual bus ([`ecu_sim::can::fault`]); the README's
/// "CAN frame faults" table gives each form's frame and what the ISO-TP receiver does.
///
/// | form | the frame | what follows |
/// |---|---|---|
/// | `drop` | the request's last frame (its single frame, or its last consecutive frame) | lost: the ECU's receiver waits N_Cr (a segmented request) and drops the message; the tester hears nothing within P2 |
/// | `corrupt` | the request's first frame | a CRC error: an error frame, and the tester's controller sends the frame again (the request is late by one frame + 17 bits) |
/// | `{delay_ms: N}` | the request's first frame | arrives N ms late (past the tester's N_Bs of 1 s the tester gives up on a segmented request) |
/// | `duplicate` | the request's first consecutive frame (a single-frame request: its single frame) | arrives twice: the ECU sees a sequence number again and drops the message (a single frame twice: the ECU acts on the first copy) |
/// | `{drop\|corrupt\|duplicate: {frame, id, n}}` | the `n`-th (from 1) frame of the exchange of type `frame` and CAN id `id` (either or both) | as above for that frame |
/// | `{delay: {ms, frame, id, n}}` | the same selection | arrives `ms` late: past N_Cr (the last consecutive frame of a block or message; an earlier one is overtaken: a sequence error) or N_Bs (a flow control frame) the waiting side times out |
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CanFault {
    Drop,
    Corrupt,
    DelayMs(u64),
    Duplicate,
    /// `{drop: {...}}`: the selected frame is lost.
    DropFrame(FrameTarget),
    /// `{corrupt: {...}}`: the selected frame fails its CRC (error frame, retransmission).
    CorruptFrame(FrameTarget),
    /// `{delay: {...}}`: the selected frame arrives late.
    DelayFrame(CanDelay),
    /// `{duplicate: {...}}`: the selected frame arrives twice.
    DuplicateFrame(FrameTarget),
}

/// ISO-TP frame types (ISO 15765-2 N_PCI).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FrameKind {
    Single,
    First,
    Consecutive,
    FlowControl,
}

impl FrameKind {
    /// The N_PCI type nibble (the first data byte's high four bits).
    pub fn pci(self) -> u8 {
        match self {
            FrameKind::Single => 0x00,
            FrameKind::First => 0x10,
            FrameKind::Consecutive => 0x20,
            FrameKind::FlowControl => 0x30,
        }
    }

    /// The type of a frame whose first data byte is `b`.
    pub fn of(b: u8) -> Option<FrameKind> {
        match b >> 4 {
            0 => Some(FrameKind::Single),
            1 => Some(FrameKind::First),
            2 => Some(FrameKind::Consecutive),
            3 => Some(FrameKind::FlowControl),
            _ => None,
        }
    }

    /// Its name in the trace (`consecutive frame`).
    pub fn name(self) -> &'static str {
        match self {
            FrameKind::Single => "single frame",
            FrameKind::First => "first frame",
            FrameKind::Consecutive => "consecutive frame",
            FrameKind::FlowControl => "flow control frame",
        }
    }
}

/// Which frame of an exchange a CAN fault hits: the `n`-th (from 1) of those with type
/// `frame` and id `id` (at least one of the three given).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FrameTarget {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frame: Option<FrameKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<u32>,
    /// 1 when not given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
}

impl FrameTarget {
    /// The target of a kind's `n`-th frame.
    pub fn nth(frame: FrameKind, n: u32) -> FrameTarget {
        FrameTarget {
            frame: Some(frame),
            id: None,
            n: Some(n),
        }
    }
}

/// `{delay: {ms, frame, id, n}}`: the selected frame arrives `ms` late.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanDelay {
    pub ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame: Option<FrameKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
}

impl CanDelay {
    pub fn target(&self) -> FrameTarget {
        FrameTarget {
            frame: self.frame,
            id: self.id,
            n: self.n,
        }
    }
}

/// The names a `can:` fault may start with.
pub const CAN_FORMS: &[&str] = &["drop", "corrupt", "duplicate", "delay_ms", "delay"];

impl CanFault {
    /// The frame selection of a targeted form (None: a short form).
    pub fn target(&self) -> Option<FrameTarget> {
        match self {
            CanFault::DropFrame(t) | CanFault::CorruptFrame(t) | CanFault::DuplicateFrame(t) => {
                Some(t.clone())
            }
            CanFault::DelayFrame(d) => Some(d.target()),
            _ => None,
        }
    }

    /// The form's first word: `drop`, `delay_ms`, `delay`.
    pub fn form(&self) -> &'static str {
        match self {
            CanFault::Drop | CanFault::DropFrame(_) => "drop",
            CanFault::Corrupt | CanFault::CorruptFrame(_) => "corrupt",
            CanFault::DelayMs(_) => "delay_ms",
            CanFault::DelayFrame(_) => "delay",
            CanFault::Duplicate | CanFault::DuplicateFrame(_) => "duplicate",
        }
    }

    /// The fault in the scenario file's words: `drop`, `{delay_ms: 5}`,
    /// `{drop: {frame: consecutive, n: 3}}`.
    pub fn to_yaml_flow(&self) -> String {
        match self {
            CanFault::Drop | CanFault::Corrupt | CanFault::Duplicate => self.form().into(),
            _ => flow(&serde_json::to_value(self).unwrap_or_default()),
        }
    }
}

impl Serialize for CanFault {
    /// Short forms as a bare name, the others as a one-key map (as they are written).
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = match self {
            CanFault::Drop | CanFault::Corrupt | CanFault::Duplicate => {
                return s.serialize_str(self.form());
            }
            _ => s.serialize_map(Some(1))?,
        };
        match self {
            CanFault::DelayMs(ms) => m.serialize_entry(self.form(), ms)?,
            CanFault::DropFrame(t) | CanFault::CorruptFrame(t) | CanFault::DuplicateFrame(t) => {
                m.serialize_entry(self.form(), t)?
            }
            CanFault::DelayFrame(d) => m.serialize_entry(self.form(), d)?,
            CanFault::Drop | CanFault::Corrupt | CanFault::Duplicate => {}
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for CanFault {
    /// `drop`, `corrupt`, `duplicate` (bare names), or a one-key map: `{delay_ms: N}`,
    /// `{drop|corrupt|duplicate: {frame, id, n}}`, `{delay: {ms, frame, id, n}}`.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CanFaultVisitor)
    }
}

struct CanFaultVisitor;

impl<'de> serde::de::Visitor<'de> for CanFaultVisitor {
    type Value = CanFault;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(
            "a CAN fault: `drop`, `corrupt`, `duplicate`, `{delay_ms: N}`, `{drop: {frame, id, n}}` (also corrupt, duplicate) or `{delay: {ms, frame, id, n}}`",
        )
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<CanFault, E> {
        match v {
            "drop" => Ok(CanFault::Drop),
            "corrupt" => Ok(CanFault::Corrupt),
            "duplicate" => Ok(CanFault::Duplicate),
            "delay_ms" => Err(E::custom("`delay_ms` needs a value: `{delay_ms: N}`")),
            "delay" => Err(E::custom(
                "`delay` needs its frame and time: `{delay: {ms: N, frame: …}}`",
            )),
            other => Err(E::unknown_variant(other, CAN_FORMS)),
        }
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<CanFault, A::Error> {
        use serde::de::Error;
        let Some(key) = m.next_key::<String>()? else {
            return Err(A::Error::custom(
                "an empty map: write one of `drop`, `corrupt`, `duplicate`, `{delay_ms: N}`",
            ));
        };
        let fault = match key.as_str() {
            "drop" => CanFault::DropFrame(m.next_value()?),
            "corrupt" => CanFault::CorruptFrame(m.next_value()?),
            "duplicate" => CanFault::DuplicateFrame(m.next_value()?),
            "delay_ms" => CanFault::DelayMs(m.next_value()?),
            "delay" => CanFault::DelayFrame(m.next_value()?),
            other => return Err(A::Error::unknown_variant(other, CAN_FORMS)),
        };
        if let Some(k) = m.next_key::<String>()? {
            return Err(A::Error::custom(format!(
                "`{k}`: a CAN fault is one key (`{key}` was given already)"
            )));
        }
        Ok(fault)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum DownloadFault {
    /// The server closes the connection.
    Close,
    /// The server stops sending for this long (the client's idle timeout is 10 s).
    StallMs(u64),
    /// From now on the server sends at most this many bytes per second.
    Throttle(u64),
    /// The next request is answered with this status.
    HttpError(u16),
    /// The next request ignores its Range header (the client must start over from 0).
    IgnoreRange,
    /// The byte at the trigger's offset is sent with every bit flipped.
    FlipByte,
}

/// Answer a request with an NRC instead of (or, for 0x78, before) the ECU's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InjectNrc {
    /// The service id of the requests to answer.
    pub service: u8,
    pub nrc: u8,
    /// How many requests get it (for 0x78: how many pending responses precede the answer).
    #[serde(default = "one")]
    pub count: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorruptRequest {
    pub service: u8,
    /// Only requests whose second byte (the sub-function) is this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subfunction: Option<u8>,
    #[serde(default = "one")]
    pub count: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BitRot {
    pub region: Region,
    /// Offset into the region.
    #[serde(default)]
    pub offset: u32,
    #[serde(default = "bit0")]
    pub mask: u8,
}

fn bit0() -> u8 {
    0x01
}

/// What a fault does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Remove power (inside the flash operation for `flash_op` triggers), restore it later.
    PowerCut(PowerCut),
    /// ECU reset (the bootloader runs; power stays on).
    Reset,
    /// CAN frame faults on the next message.
    Can(CanFault),
    /// The DoIP TCP connection is closed by the ECU side.
    DropConnection,
    Download(DownloadFault),
    /// Flip these bits in the first data byte of the TransferData block being sent.
    FlipTransferBits(u8),
    /// Flip bits in flash (not a flash operation: radiation, retention loss).
    BitRot(BitRot),
    InjectNrc(InjectNrc),
    /// Flip the last byte of the next `count` requests to `service` (a security key that
    /// arrives wrong, a checksum that no longer matches).
    CorruptRequest(CorruptRequest),
    /// Kill the OTA manager (no cleanup) and start it again on its store.
    KillManager,
    /// From now on the artifact server serves another image under the update's URL (a
    /// compromised mirror): the manifest's hash no longer matches.
    SwapArtifact(ArtifactSwap),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArtifactSwap {
    /// The update with one payload byte changed after signing.
    Tampered,
    /// The update without a signature.
    Unsigned,
    /// An older version (major − 1), properly signed.
    Downgraded,
}

impl ArtifactSwap {
    /// Its name in a scenario file.
    pub fn name(self) -> &'static str {
        match self {
            ArtifactSwap::Tampered => "tampered",
            ArtifactSwap::Unsigned => "unsigned",
            ArtifactSwap::Downgraded => "downgraded",
        }
    }
}

/// A count that must fall in `min..=max`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Bounds {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<u64>,
}

impl Bounds {
    pub fn is_empty(&self) -> bool {
        self.min.is_none() && self.max.is_none()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeSpec {
    /// The new image runs, confirmed.
    Committed,
    /// The ECU reverted the new image; the old one runs.
    RolledBack,
    /// The ECU or the manager turned the image down (bad signature, unknown key, downgrade,
    /// wrong version); the old one runs.
    Rejected,
    /// The manager gave up (attempts exhausted, the ECU silent).
    Failed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlotSpec {
    Primary,
    Secondary,
}

/// What must hold at the end.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    pub outcome: OutcomeSpec,
    /// The version running at the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The slot it runs from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<SlotSpec>,
    /// Boots during the scenario (the factory boot included).
    #[serde(default, skip_serializing_if = "Bounds::is_empty")]
    pub boots: Bounds,
    /// Reverts performed by the bootloader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollbacks: Option<u64>,
    /// DTCs stored at the end (`D00300` style).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dtcs: Vec<String>,
    /// Event names that must appear, in this order (other events may come between).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<String>,
    /// Event names that must not appear.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub never: Vec<String>,
    /// The download was resumed (true) or never resumed (false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download_resumed: Option<bool>,
    /// The failure reason (failed, rejected, rolled back) contains this text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason_contains: Option<String>,
    /// Bounds on the simulated duration, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<DurationBounds>,
    /// For sweeps: ending rolled back (the old image running, confirmed) is also fine, as a
    /// cut while the new image is on probation makes the bootloader revert it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub or_rolled_back: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DurationBounds {
    pub min: Option<f64>,
    pub max: Option<f64>,
}

/// `D00300` → 0xD00300.
pub fn parse_dtc(s: &str) -> Option<u32> {
    let hex = s.strip_prefix("0x").unwrap_or(s);
    (hex.len() == 6)
        .then(|| u32::from_str_radix(hex, 16).ok())
        .flatten()
}
