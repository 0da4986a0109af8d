//! The tester's UDS client (ISO 14229-1) over any [`Transport`].
//!
//! ## One request
//!
//! | the ECU sends | the client |
//! |---|---|
//! | nothing within P2 + margin | [`ClientError::Timeout`] |
//! | `7F SID 78` (responsePending) | waits again, P2* + margin from now |
//! | `7F SID NRC` | [`ClientError::Negative`] with the NRC's ISO name |
//! | `SID+40 …` | returns the whole response |
//! | a response to another SID (a late answer to an earlier request) | drops it, keeps waiting |
//! | bytes that are no response | [`ClientError::Malformed`] |
//!
//! P2 and P2* start as ISO 14229-2's defaults (50 ms, 5 s) and follow the values of the last
//! DiagnosticSessionControl response. The margins (default 1 s and 5 s) absorb the network,
//! the scheduler and a busy test machine: a real ECU's P2 is a promise about its own
//! processing, not about the time until our socket sees the answer.
//!
//! ## Helpers
//!
//! | helper | request | checks |
//! |---|---|---|
//! | [`UdsClient::session`] | `10 ss` | `50 ss P2 P2*`; remembers session and timing |
//! | [`UdsClient::unlock`] | `27 ll`, `27 ll+1 key` | key from [`UdsConfig::key`]: SHA-256(secret ‖ seed)\[0..4\] or an external command; a zero seed means already unlocked |
//! | [`UdsClient::read_did`], [`UdsClient::read_dids`] | `22 id…` | echoed identifiers; values split by [`codec::did_len`] |
//! | [`UdsClient::tester_present`] | `3E 00` | `7E 00` |
//! | [`UdsClient::keep_alive`] | `3E 80` | nothing comes back |
//! | [`UdsClient::routine`] | `31 cc id…` | `71 cc id`; returns the status record |
//! | [`UdsClient::ecu_reset`] | `11 kk` | `51 kk`; back to the default session |
//! | [`UdsClient::request_download`] | `34 00 44 addr size` | `74 LFI max`; returns maxNumberOfBlockLength |
//! | [`UdsClient::transfer_data`] | `36 seq data` | `76 seq` |
//! | [`UdsClient::transfer_exit`] | `37` | `77` |
//! | [`UdsClient::idle`] | `3E 80` every [`UdsConfig::keep_alive`] outside the default session | reads (and drops) what arrives meanwhile |

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use ecu_sim::proto::uds::codec::{
    self, CodecError, MemoryRange, Nrc, Reply, Session, SessionTiming, sid,
};
use ecu_sim::proto::uds::security;

use crate::transport::{Transport, TransportError};

/// Settings of the UDS client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdsConfig {
    /// Added to the ECU's P2 for the first response.
    pub p2_margin: Duration,
    /// Added to the ECU's P2* after each responsePending.
    pub p2_star_margin: Duration,
    /// How SecurityAccess keys are computed.
    pub key: KeyAlgorithm,
    /// SecurityAccess secret per level (the odd requestSeed sub-function), for
    /// [`KeyAlgorithm::Builtin`].
    pub secrets: BTreeMap<u8, Vec<u8>>,
    /// TesterPresent interval while [`UdsClient::idle`] in a non-default session (S3 is 5 s).
    pub keep_alive: Duration,
    /// When requestSeed is answered `0x37` requiredTimeDelayNotExpired (a lockout after wrong
    /// keys), wait this long and ask once more; `None`: report the NRC at once.
    pub security_delay: Option<Duration>,
}

impl Default for UdsConfig {
    fn default() -> Self {
        UdsConfig {
            p2_margin: Duration::from_secs(1),
            p2_star_margin: Duration::from_secs(5),
            key: KeyAlgorithm::Builtin,
            secrets: security::default_secrets(),
            keep_alive: Duration::from_secs(2),
            security_delay: Some(Duration::from_secs(11)),
        }
    }
}

/// How the client turns a SecurityAccess seed into a key.
///
/// In bench files and YAML: `builtin` or `{command: "keygen --level {level} --seed {seed}"}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum KeyAlgorithm {
    /// This project's algorithm: SHA-256(secret ‖ seed)\[0..4\] with the level's secret from
    /// [`UdsConfig::secrets`] (what the virtual ECU expects).
    #[default]
    Builtin,
    /// An external program (e.g. a wrapper around an OEM's seed-key library), run as
    /// `sh -c COMMAND`:
    ///
    /// | input | where |
    /// |---|---|
    /// | the level (the odd requestSeed sub-function), decimal | `{level}` in the command, `HIL_SECURITY_LEVEL` |
    /// | the seed, lowercase hex without spaces | `{seed}` in the command, `HIL_SEED` |
    ///
    /// It must exit 0 within [`KEY_COMMAND_TIMEOUT`] and print the key in hex on stdout
    /// (whitespace between and around the digits is ignored).
    Command(String),
}

/// How long a [`KeyAlgorithm::Command`] may run.
pub const KEY_COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// The key for `seed` at `level` from `command` (see [`KeyAlgorithm::Command`]).
pub async fn command_key(command: &str, level: u8, seed: &[u8]) -> Result<Vec<u8>, ClientError> {
    let seed_hex: String = seed.iter().map(|b| format!("{b:02x}")).collect();
    let line = command
        .replace("{level}", &level.to_string())
        .replace("{seed}", &seed_hex);
    let fail = |problem: String| ClientError::KeyCommand {
        command: line.clone(),
        problem,
    };
    let run = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&line)
        .env("HIL_SECURITY_LEVEL", level.to_string())
        .env("HIL_SEED", &seed_hex)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = match tokio::time::timeout(KEY_COMMAND_TIMEOUT, run).await {
        Err(_) => {
            return Err(fail(format!(
                "did not finish within {KEY_COMMAND_TIMEOUT:?}"
            )));
        }
        Ok(Err(e)) => return Err(fail(format!("did not start: {e}"))),
        Ok(Ok(out)) => out,
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let said = [stderr.trim(), stdout.trim()]
            .into_iter()
            .find(|s| !s.is_empty())
            .map_or_else(|| "no output".to_string(), |s| format!("{:?}", clip(s)));
        return Err(fail(format!("failed ({}): {said}", out.status)));
    }
    parse_key(&stdout).map_err(|why| fail(format!("printed {:?}: {why}", clip(stdout.trim()))))
}

/// A key printed in hex: `de ad be ef`, `DEADBEEF\n`.
fn parse_key(text: &str) -> Result<Vec<u8>, &'static str> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if digits.is_empty() {
        return Err("no key (expected hex digits)");
    }
    if !digits.iter().all(u8::is_ascii_hexdigit) {
        return Err("not a key in hex");
    }
    if digits.len() % 2 == 1 {
        return Err("an odd number of hex digits");
    }
    Ok(digits
        .chunks(2)
        .map(|pair| {
            let hex = std::str::from_utf8(pair).expect("ascii hex digits");
            u8::from_str_radix(hex, 16).expect("checked hex digits")
        })
        .collect())
}

/// At most 200 characters of a program's output, for messages.
fn clip(s: &str) -> String {
    match s.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// Why a UDS exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("empty request")]
    EmptyRequest,
    #[error("no response to service 0x{sid:02x} within {waited:?} ({pending} responsePending)")]
    Timeout {
        sid: u8,
        waited: Duration,
        pending: u32,
    },
    #[error("service 0x{sid:02x} refused: nrc 0x{nrc:02x} {name}")]
    Negative {
        sid: u8,
        nrc: u8,
        name: &'static str,
    },
    #[error("malformed response to service 0x{sid:02x}: {source}")]
    Malformed { sid: u8, source: CodecError },
    #[error("unexpected response to service 0x{sid:02x}: {response} ({why})")]
    Unexpected {
        sid: u8,
        /// The response, hex.
        response: String,
        why: &'static str,
    },
    #[error("no secret for security level {level}")]
    NoSecret { level: u8 },
    /// A [`KeyAlgorithm::Command`] gave no key; `command` is the line as run.
    #[error("security key command `{command}` {problem}")]
    KeyCommand { command: String, problem: String },
}

impl ClientError {
    /// The NRC, if the ECU refused the request.
    pub fn nrc(&self) -> Option<u8> {
        match self {
            ClientError::Negative { nrc, .. } => Some(*nrc),
            _ => None,
        }
    }
}

/// The ISO 14229-1 name of a raw NRC.
pub fn nrc_name(nrc: u8) -> &'static str {
    Nrc::from_u8(nrc).map_or("unknown nrc", Nrc::name)
}

/// Bytes as `de ad be ef`.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// A UDS client on one transport.
#[derive(Debug)]
pub struct UdsClient<T> {
    transport: T,
    config: UdsConfig,
    timing: SessionTiming,
    session: Session,
}

impl<T: Transport> UdsClient<T> {
    pub fn new(transport: T, config: UdsConfig) -> Self {
        UdsClient {
            transport,
            config,
            timing: SessionTiming {
                p2_us: 50_000,
                p2_star_us: 5_000_000,
            },
            session: Session::Default,
        }
    }

    pub fn config(&self) -> &UdsConfig {
        &self.config
    }
    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }
    pub fn into_transport(self) -> T {
        self.transport
    }
    /// The session the ECU was last put in (as far as this client knows).
    pub fn active_session(&self) -> Session {
        self.session
    }
    /// The ECU's P2/P2* (from the last session response, else the ISO defaults).
    pub fn timing(&self) -> SessionTiming {
        self.timing
    }

    /// How long to wait for a first response: P2 + margin.
    pub fn p2(&self) -> Duration {
        Duration::from_micros(self.timing.p2_us) + self.config.p2_margin
    }
    /// How long to wait after a responsePending: P2* + margin.
    pub fn p2_star(&self) -> Duration {
        Duration::from_micros(self.timing.p2_star_us) + self.config.p2_star_margin
    }

    /// Send `request` and return the positive response (all of it, response SID first).
    pub async fn request(&mut self, request: &[u8]) -> Result<Vec<u8>, ClientError> {
        self.request_within(request, self.p2()).await
    }

    /// [`UdsClient::request`] with `p2` as the wait for the first response (polls use short
    /// ones); responsePending still extends it to P2*.
    pub async fn request_within(
        &mut self,
        request: &[u8],
        p2: Duration,
    ) -> Result<Vec<u8>, ClientError> {
        let &sid = request.first().ok_or(ClientError::EmptyRequest)?;
        self.transport.send(request).await?;
        let start = Instant::now();
        let mut deadline = start + p2;
        let mut pending = 0;
        loop {
            let Some(response) = self.transport.recv(deadline).await? else {
                return Err(ClientError::Timeout {
                    sid,
                    waited: start.elapsed(),
                    pending,
                });
            };
            match codec::parse_reply(&response) {
                Ok(Reply::Positive { sid: s, .. }) if s == sid => return Ok(response),
                Ok(Reply::Negative { sid: s, nrc }) if s == sid => {
                    if nrc == Nrc::ResponsePending as u8 {
                        pending += 1;
                        deadline = Instant::now() + self.p2_star();
                        continue;
                    }
                    return Err(ClientError::Negative {
                        sid,
                        nrc,
                        name: nrc_name(nrc),
                    });
                }
                Ok(_) => tracing::debug!(
                    "uds: dropped {} while waiting for 0x{sid:02x}",
                    hex(&response)
                ),
                Err(source) => return Err(ClientError::Malformed { sid, source }),
            }
        }
    }

    /// Send a request that expects no response (suppressPosRspMsgIndicationBit set).
    pub async fn send_only(&mut self, request: &[u8]) -> Result<(), ClientError> {
        if request.is_empty() {
            return Err(ClientError::EmptyRequest);
        }
        Ok(self.transport.send(request).await?)
    }

    /// DiagnosticSessionControl; returns (and from now on uses) the ECU's P2/P2*.
    pub async fn session(&mut self, session: Session) -> Result<SessionTiming, ClientError> {
        let r = self
            .request(&[sid::DIAGNOSTIC_SESSION_CONTROL, session as u8])
            .await?;
        expect_prefix(&r, &[0x50, session as u8], "session echo")?;
        let timing = SessionTiming::decode(&r[2..]).map_err(|source| ClientError::Malformed {
            sid: sid::DIAGNOSTIC_SESSION_CONTROL,
            source,
        })?;
        self.timing = timing;
        self.session = session;
        Ok(timing)
    }

    /// SecurityAccess at `level` (odd) with the configured [`KeyAlgorithm`].
    pub async fn unlock(&mut self, level: u8) -> Result<(), ClientError> {
        let algorithm = match &self.config.key {
            KeyAlgorithm::Builtin => KeySource::Secret(
                self.config
                    .secrets
                    .get(&level)
                    .cloned()
                    .ok_or(ClientError::NoSecret { level })?,
            ),
            KeyAlgorithm::Command(command) => KeySource::Command(command.clone()),
        };
        let r = match self.request(&[sid::SECURITY_ACCESS, level]).await {
            Err(e) if e.nrc() == Some(Nrc::RequiredTimeDelayNotExpired as u8) => {
                let Some(delay) = self.config.security_delay else {
                    return Err(e);
                };
                tracing::debug!("security access locked out; asking again in {delay:?}");
                // Keep the session alive through the wait (it is longer than S3).
                self.idle(delay).await?;
                match self.request(&[sid::SECURITY_ACCESS, level]).await {
                    // The session was lost all the same (the ECU reset, or missed the
                    // keep-alives): enter it again before asking once more.
                    Err(e) if session_lost(&e) && self.session != Session::Default => {
                        let session = self.session;
                        tracing::debug!("session lost while waiting; entering {session:?} again");
                        self.session(session).await?;
                        self.request(&[sid::SECURITY_ACCESS, level]).await?
                    }
                    other => other?,
                }
            }
            other => other?,
        };
        expect_prefix(&r, &[0x67, level], "requestSeed echo")?;
        let seed = &r[2..];
        if seed.is_empty() {
            return Err(unexpected(sid::SECURITY_ACCESS, &r, "no seed"));
        }
        if seed.iter().all(|&b| b == 0) {
            return Ok(());
        }
        let key = match algorithm {
            KeySource::Secret(secret) => security::compute_key(&secret, seed).to_vec(),
            KeySource::Command(command) => command_key(&command, level, seed).await?,
        };
        let mut req = vec![sid::SECURITY_ACCESS, level + 1];
        req.extend_from_slice(&key);
        let r = self.request(&req).await?;
        expect_exact(&r, &[0x67, level + 1], "sendKey echo")
    }

    /// The value of one data identifier.
    pub async fn read_did(&mut self, id: u16) -> Result<Vec<u8>, ClientError> {
        let [hi, lo] = id.to_be_bytes();
        let r = self
            .request(&[sid::READ_DATA_BY_IDENTIFIER, hi, lo])
            .await?;
        expect_prefix(&r, &[0x62, hi, lo], "identifier echo")?;
        Ok(r[3..].to_vec())
    }

    /// Several data identifiers in one request; the ECU leaves out the ones it does not know.
    /// All but the last DID requested need a fixed length ([`codec::did_len`]).
    pub async fn read_dids(&mut self, ids: &[u16]) -> Result<Vec<(u16, Vec<u8>)>, ClientError> {
        let mut req = vec![sid::READ_DATA_BY_IDENTIFIER];
        for id in ids {
            req.extend_from_slice(&id.to_be_bytes());
        }
        let r = self.request(&req).await?;
        let mut rest = &r[1..];
        let mut out = Vec::new();
        while !rest.is_empty() {
            let bad = |why| unexpected(sid::READ_DATA_BY_IDENTIFIER, &r, why);
            let [hi, lo, tail @ ..] = rest else {
                return Err(bad("truncated identifier"));
            };
            let id = u16::from_be_bytes([*hi, *lo]);
            if !ids.contains(&id) {
                return Err(bad("identifier not requested"));
            }
            let len = match codec::did_len(id) {
                Some(n) if n <= tail.len() => n,
                Some(_) => return Err(bad("value shorter than its identifier's length")),
                None if ids.last() == Some(&id) => tail.len(),
                None => return Err(bad("variable-length identifier before the last")),
            };
            out.push((id, tail[..len].to_vec()));
            rest = &tail[len..];
        }
        Ok(out)
    }

    /// TesterPresent with a response.
    pub async fn tester_present(&mut self) -> Result<(), ClientError> {
        let r = self.request(&[sid::TESTER_PRESENT, 0x00]).await?;
        expect_exact(&r, &[0x7E, 0x00], "tester present")
    }

    /// TesterPresent without a response (`3E 80`): keeps a non-default session alive.
    pub async fn keep_alive(&mut self) -> Result<(), ClientError> {
        self.send_only(&[sid::TESTER_PRESENT, codec::SUPPRESS_POSITIVE_RESPONSE])
            .await
    }

    /// RoutineControl; returns the routine status record (after `71 cc id`).
    pub async fn routine(
        &mut self,
        control: u8,
        id: u16,
        record: &[u8],
    ) -> Result<Vec<u8>, ClientError> {
        let [hi, lo] = id.to_be_bytes();
        let mut req = vec![sid::ROUTINE_CONTROL, control, hi, lo];
        req.extend_from_slice(record);
        let r = self.request(&req).await?;
        expect_prefix(&r, &[0x71, control, hi, lo], "routine echo")?;
        Ok(r[4..].to_vec())
    }

    /// ECUReset; afterwards the ECU is in the default session.
    pub async fn ecu_reset(&mut self, kind: u8) -> Result<(), ClientError> {
        let r = self.request(&[sid::ECU_RESET, kind]).await;
        self.after_reset();
        expect_exact(&r?, &[0x51, kind], "reset echo")
    }

    /// Forget the session: the ECU reset (or was reset) and is in the default session.
    pub fn after_reset(&mut self) {
        self.session = Session::Default;
    }

    /// RequestDownload of `range` (no compression or encryption, 4-byte address and size);
    /// returns maxNumberOfBlockLength (SID and counter included).
    pub async fn request_download(&mut self, range: MemoryRange) -> Result<u32, ClientError> {
        let mut req = vec![sid::REQUEST_DOWNLOAD, 0x00];
        req.extend_from_slice(&codec::encode_memory(range));
        let r = self.request(&req).await?;
        let bad = |why| unexpected(sid::REQUEST_DOWNLOAD, &r, why);
        let [0x74, lfi, len @ ..] = &r[..] else {
            return Err(bad("no lengthFormatIdentifier"));
        };
        let n = usize::from(lfi >> 4);
        if !(1..=4).contains(&n) || len.len() != n {
            return Err(bad("maxNumberOfBlockLength is not 1 to 4 bytes"));
        }
        Ok(len.iter().fold(0, |acc, &b| (acc << 8) | u32::from(b)))
    }

    /// TransferData block `seq`.
    pub async fn transfer_data(&mut self, seq: u8, data: &[u8]) -> Result<(), ClientError> {
        let mut req = Vec::with_capacity(2 + data.len());
        req.extend_from_slice(&[sid::TRANSFER_DATA, seq]);
        req.extend_from_slice(data);
        let r = self.request(&req).await?;
        expect_exact(&r, &[0x76, seq], "block sequence counter echo")
    }

    pub async fn transfer_exit(&mut self) -> Result<(), ClientError> {
        let r = self.request(&[sid::REQUEST_TRANSFER_EXIT]).await?;
        expect_exact(&r, &[0x77], "transfer exit")
    }

    /// Let `duration` pass: keep a non-default session alive with `3E 80` every
    /// [`UdsConfig::keep_alive`], and read (and drop) whatever arrives meanwhile, so that a
    /// transport's own keep-alives (DoIP alive checks) are answered.
    pub async fn idle(&mut self, duration: Duration) -> Result<(), ClientError> {
        let end = Instant::now() + duration;
        let mut next_keep_alive = Instant::now() + self.config.keep_alive;
        loop {
            let now = Instant::now();
            if now >= end {
                return Ok(());
            }
            if self.session != Session::Default && now >= next_keep_alive {
                self.keep_alive().await?;
                next_keep_alive = now + self.config.keep_alive;
            }
            let until = if self.session == Session::Default {
                end
            } else {
                end.min(next_keep_alive)
            };
            if let Some(r) = self.transport.recv(until).await? {
                tracing::debug!("uds: dropped {} while idle", hex(&r));
            }
        }
    }
}

/// Whether an error says the ECU is no longer in the session the tester entered (S3 expired,
/// or it reset): NRC `0x7F` serviceNotSupportedInActiveSession or `0x7E`
/// subFunctionNotSupportedInActiveSession.
pub fn session_lost(e: &ClientError) -> bool {
    matches!(
        e.nrc(),
        Some(n) if n == Nrc::ServiceNotSupportedInActiveSession as u8
            || n == Nrc::SubFunctionNotSupportedInActiveSession as u8
    )
}

/// Where [`UdsClient::unlock`] gets its key, settled before the seed is requested.
enum KeySource {
    Secret(Vec<u8>),
    Command(String),
}

fn unexpected(sid: u8, response: &[u8], why: &'static str) -> ClientError {
    ClientError::Unexpected {
        sid,
        response: hex(response),
        why,
    }
}

fn expect_prefix(r: &[u8], prefix: &[u8], why: &'static str) -> Result<(), ClientError> {
    if r.starts_with(prefix) {
        Ok(())
    } else {
        Err(unexpected(
            prefix[0] - codec::POSITIVE_RESPONSE_OFFSET,
            r,
            why,
        ))
    }
}

fn expect_exact(r: &[u8], want: &[u8], why: &'static str) -> Result<(), ClientError> {
    if r == want {
        Ok(())
    } else {
        Err(unexpected(
            want[0] - codec::POSITIVE_RESPONSE_OFFSET,
            r,
            why,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A scripted ECU: each request pops the responses queued for it.
    #[derive(Debug, Default)]
    struct Script {
        sent: Vec<Vec<u8>>,
        replies: VecDeque<Vec<Vec<u8>>>,
        inbox: VecDeque<Vec<u8>>,
    }

    impl Transport for Script {
        async fn send(&mut self, request: &[u8]) -> Result<(), TransportError> {
            self.sent.push(request.to_vec());
            self.inbox
                .extend(self.replies.pop_front().unwrap_or_default());
            Ok(())
        }
        async fn recv(&mut self, _deadline: Instant) -> Result<Option<Vec<u8>>, TransportError> {
            Ok(self.inbox.pop_front())
        }
        async fn reconnect(&mut self) -> Result<(), TransportError> {
            Ok(())
        }
    }

    fn client(replies: Vec<Vec<Vec<u8>>>) -> UdsClient<Script> {
        UdsClient::new(
            Script {
                replies: replies.into(),
                ..Script::default()
            },
            UdsConfig::default(),
        )
    }

    #[tokio::test]
    async fn pending_then_positive_and_stale_responses_dropped() {
        let mut c = client(vec![vec![
            vec![0x7e, 0x00],
            vec![0x7f, 0x31, 0x78],
            vec![0x7f, 0x31, 0x78],
            vec![0x71, 0x01, 0xff, 0x00, 0x00],
        ]]);
        let status = c.routine(0x01, 0xFF00, &[0x44]).await.unwrap();
        assert_eq!(status, [0x00]);
        assert_eq!(c.transport_mut().sent, [vec![0x31, 0x01, 0xff, 0x00, 0x44]]);
    }

    /// A lockout (0x37) is waited out; when the session is gone all the same afterwards
    /// (0x7F), the client enters it again and asks for the seed once more.
    #[tokio::test]
    async fn a_session_lost_during_the_lockout_wait_is_entered_again() {
        let mut c = UdsClient::new(
            Script {
                replies: vec![
                    vec![vec![0x50, 0x02, 0x00, 0x32, 0x01, 0xF4]],
                    vec![vec![0x7f, 0x27, 0x37]],
                    vec![vec![0x7f, 0x27, 0x7f]],
                    vec![vec![0x50, 0x02, 0x00, 0x32, 0x01, 0xF4]],
                    // An all-zero seed: already unlocked.
                    vec![vec![0x67, 0x01, 0x00, 0x00, 0x00, 0x00]],
                ]
                .into(),
                ..Script::default()
            },
            UdsConfig {
                security_delay: Some(Duration::from_millis(20)),
                // No keep-alive within the short wait here (the script answers in order).
                keep_alive: Duration::from_secs(60),
                ..UdsConfig::default()
            },
        );
        c.session(Session::Programming).await.unwrap();
        c.unlock(1).await.unwrap();
        assert_eq!(
            c.transport_mut().sent,
            [
                vec![0x10, 0x02],
                vec![0x27, 0x01],
                vec![0x27, 0x01],
                vec![0x10, 0x02],
                vec![0x27, 0x01]
            ]
        );
        assert_eq!(c.active_session(), Session::Programming);
    }

    #[tokio::test]
    async fn negative_responses_are_named() {
        let mut c = client(vec![vec![vec![0x7f, 0x27, 0x35]]]);
        let e = c.request(&[0x27, 0x02, 1, 2, 3, 4]).await.unwrap_err();
        assert!(matches!(
            e,
            ClientError::Negative {
                sid: 0x27,
                nrc: 0x35,
                name: "invalidKey"
            }
        ));
        assert_eq!(e.to_string(), "service 0x27 refused: nrc 0x35 invalidKey");
    }

    #[tokio::test]
    async fn session_timing_is_adopted_and_timeouts_are_reported() {
        let mut c = client(vec![vec![vec![0x50, 0x02, 0x00, 0x19, 0x00, 0x64]]]);
        let t = c.session(Session::Programming).await.unwrap();
        assert_eq!((t.p2_us, t.p2_star_us), (25_000, 1_000_000));
        assert_eq!(c.p2(), Duration::from_millis(1025));
        assert_eq!(c.active_session(), Session::Programming);
        let e = c.tester_present().await.unwrap_err();
        assert!(matches!(e, ClientError::Timeout { sid: 0x3e, .. }), "{e}");
    }

    #[tokio::test]
    async fn unlock_computes_the_documented_key() {
        let seed = [0x11, 0x22, 0x33, 0x44];
        let key = security::compute_key(b"ecu-sim level 1 secret", &seed);
        let mut c = client(vec![
            vec![vec![0x67, 0x01, 0x11, 0x22, 0x33, 0x44]],
            vec![vec![0x67, 0x02]],
        ]);
        c.unlock(1).await.unwrap();
        let mut send_key = vec![0x27, 0x02];
        send_key.extend_from_slice(&key);
        assert_eq!(c.transport_mut().sent[1], send_key);
        assert!(matches!(
            c.unlock(5).await,
            Err(ClientError::NoSecret { level: 5 })
        ));
    }

    fn command_client(command: &str, replies: Vec<Vec<Vec<u8>>>) -> UdsClient<Script> {
        let config = UdsConfig {
            key: KeyAlgorithm::Command(command.into()),
            secrets: BTreeMap::new(),
            ..UdsConfig::default()
        };
        UdsClient::new(
            Script {
                replies: replies.into(),
                ..Script::default()
            },
            config,
        )
    }

    const SEED: [u8; 6] = [0x67, 0x01, 0x11, 0x22, 0x3a, 0xbc];

    #[tokio::test]
    async fn unlock_with_a_key_command() {
        // Level and seed arrive in the line and in the environment; the key may be spaced
        // and in either case.
        let mut c = command_client(
            r#"[ "$HIL_SECURITY_LEVEL" = {level} ] && [ "$HIL_SEED" = {seed} ] && [ {seed} = 11223abc ] && printf 'DE AD\n be ef\n'"#,
            vec![vec![SEED.to_vec()], vec![vec![0x67, 0x02]]],
        );
        c.unlock(1).await.unwrap();
        assert_eq!(
            c.transport_mut().sent[1],
            [0x27, 0x02, 0xde, 0xad, 0xbe, 0xef]
        );
        // A key of another length is sent as printed.
        let mut c = command_client(
            "printf %s {seed}00",
            vec![vec![SEED.to_vec()], vec![vec![0x67, 0x02]]],
        );
        c.unlock(1).await.unwrap();
        assert_eq!(
            c.transport_mut().sent[1],
            [0x27, 0x02, 0x11, 0x22, 0x3a, 0xbc, 0x00]
        );
    }

    #[tokio::test]
    async fn key_command_failures_name_the_command_and_its_output() {
        let cases = [
            (
                "echo no licence for {level} >&2; exit 3",
                "security key command `echo no licence for 1 >&2; exit 3` failed (exit status: 3): \"no licence for 1\"",
            ),
            (
                "exit 1",
                "security key command `exit 1` failed (exit status: 1): no output",
            ),
            (
                "echo key: {seed}",
                "security key command `echo key: 11223abc` printed \"key: 11223abc\": not a key in hex",
            ),
            (
                "true",
                "security key command `true` printed \"\": no key (expected hex digits)",
            ),
            (
                "echo abc",
                "security key command `echo abc` printed \"abc\": an odd number of hex digits",
            ),
        ];
        for (command, want) in cases {
            let mut c = command_client(command, vec![vec![SEED.to_vec()]]);
            let e = c.unlock(1).await.unwrap_err();
            assert!(matches!(e, ClientError::KeyCommand { .. }), "{e:?}");
            assert_eq!(e.to_string(), want);
            // No key was sent.
            assert_eq!(c.transport_mut().sent.len(), 1, "{command}");
        }
    }

    #[test]
    fn printed_keys_parse_as_hex() {
        assert_eq!(
            parse_key(" de AD\tbe\nef \n"),
            Ok(vec![0xde, 0xad, 0xbe, 0xef])
        );
        assert_eq!(parse_key("0x12"), Err("not a key in hex"));
        assert_eq!(parse_key("\n"), Err("no key (expected hex digits)"));
        assert_eq!(clip(&"é".repeat(300)).chars().count(), 201);
    }

    #[tokio::test]
    async fn multi_did_responses_split_by_length() {
        let mut resp = vec![0x62, 0xf1, 0x86, 0x02, 0xf1, 0x89];
        resp.extend_from_slice(b"2.0.0");
        let mut c = client(vec![vec![resp], vec![vec![0x62, 0xf1, 0x89, 0x31]]]);
        let v = c.read_dids(&[0xF186, 0x1234, 0xF189]).await.unwrap();
        assert_eq!(v, [(0xF186, vec![2]), (0xF189, b"2.0.0".to_vec())]);
        // A variable-length DID that is not the last requested cannot be split.
        let e = c.read_dids(&[0xF189, 0xF186]).await.unwrap_err();
        assert!(e.to_string().contains("variable-length"), "{e}");
    }

    #[tokio::test]
    async fn request_download_parses_the_block_length() {
        let mut c = client(vec![
            vec![vec![0x74, 0x20, 0x40, 0x02]],
            vec![vec![0x74, 0x40, 0x00, 0x01, 0x00, 0x00]],
            vec![vec![0x74, 0x20, 0x40]],
        ]);
        let range = MemoryRange {
            address: 0x1000,
            size: 0x20,
        };
        assert_eq!(c.request_download(range).await.unwrap(), 0x4002);
        assert_eq!(c.request_download(range).await.unwrap(), 0x1_0000);
        assert!(matches!(
            c.request_download(range).await,
            Err(ClientError::Unexpected { sid: 0x34, .. })
        ));
        assert_eq!(
            c.transport_mut().sent[0],
            [0x34, 0x00, 0x44, 0, 0, 0x10, 0, 0, 0, 0, 0x20]
        );
    }
}
