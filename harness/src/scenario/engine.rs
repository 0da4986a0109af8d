//! The fault engine: which of a scenario's faults fire, when, and in which words.
//!
//! Sans-IO and shared by every place an ECU lives — the in-process simulation in virtual time
//! ([`World`](super::world::World)), the ECU served to an external client (the same world on
//! real sockets), a real bench (`bench::run`). A place turns what it saw into an
//! [`Observation`] and asks [`Engine::matches`] which faults it triggers; it applies the
//! actions it can and records each with [`Engine::fire`], which counts the firing and writes
//! the trace's text. Faults a place carries out by itself at the exact moment (a cut armed at
//! a flash operation, a server fault armed at a byte offset) are [`Engine::arm`]ed: matching
//! skips them and the place reports them with [`Engine::fire`] when they happened.
//!
//! ## Trigger rules (one table for every place)
//!
//! | trigger | fires on | rule |
//! |---|---|---|
//! | `state: S` | [`Observation::State`] | the state entered is `S` or one of its steps (`transferring` matches `transferring:erase`); also `event: state:S` |
//! | `download_bytes: B` | [`Observation::Download`] | the download stands at byte `B` (`B` bytes in) or passed it since the last observation; a threshold at or beyond the end acts at the last byte; a place must stop at every [`Engine::download_stops`] |
//! | `download_percent: P` | [`Observation::Download`] | as `download_bytes` at byte ⌊total · P / 100⌋ |
//! | `transfer_block: N` | [`Observation::TransferBlock`] | block `N` goes out |
//! | `transfer_percent: P` | [`Observation::TransferBlock`] | the first block at or past `P` % of the blocks (`0`: block 1) |
//! | `request: N` | [`Observation::Answered`] | request `N` (1-based, over the run) was handled |
//! | `event: request:0xSS` | [`Observation::Request`] | a request to service `SS` arrives |
//! | `boot: N` | [`Observation::Boot`] | boot `N` starts |
//! | `event: NAME` | [`Observation::EcuEvent`] | the ECU emitted `NAME` |
//! | `at_ms: T` | [`Observation::Tick`] | the clock is at or past `T` ms ([`Engine::next_deadline_us`]) |
//! | `probability: {p, per}` | the opportunity `per` names | a seeded draw per opportunity: every [`Observation::Request`], [`Observation::TransferBlock`], [`Observation::Download`] |
//! | `flash_op: …` | — | armed in the flash model by the place that has one |
//!
//! A fault fires at most `times` times; one that never fired fails the run unless it is
//! `optional` ([`Engine::unfired`]), with the reason when its trigger matched but its action
//! could do nothing ([`Engine::idle`]).

use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::schema::{Action, Opportunity, Scenario, Trigger};

/// What a place saw, fed to [`Engine::matches`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Observation<'a> {
    /// The job entered a state (`downloading`, `transferring:erase`, ...); transitions that
    /// only report progress are [`Observation::Download`] and [`Observation::TransferBlock`].
    State(&'a str),
    /// The download stands at byte `at` of `total`: the bytes before it are in.
    Download { at: u64, total: u64 },
    /// TransferData block `n` of `of` (1-based, counted per programming sequence) goes out.
    TransferBlock { n: u32, of: u32 },
    /// UDS request `index` (1-based, over the run) to service `sid` reaches the ECU.
    Request { index: u64, sid: u8 },
    /// The ECU handled request `index`.
    Answered { index: u64 },
    /// Boot `n` starts (1 is the factory boot).
    Boot(u64),
    /// The ECU emitted the event of this name (`swap_started`, `revert_started`, ...).
    EcuEvent(&'a str),
    /// Time passed: the clock reads `now_us` (µs since the start).
    Tick { now_us: u64 },
}

impl Observation<'_> {
    /// The probability opportunity this observation is, if any.
    fn opportunity(&self) -> Option<Opportunity> {
        match self {
            Observation::Request { .. } => Some(Opportunity::Request),
            Observation::TransferBlock { .. } => Some(Opportunity::TransferBlock),
            Observation::Download { .. } => Some(Opportunity::DownloadChunk),
            _ => None,
        }
    }
}

/// A fault whose trigger matched: what the place may now carry out.
#[derive(Clone, Debug, PartialEq)]
pub struct Match {
    /// Index into the scenario's faults.
    pub fault: usize,
    pub action: Action,
    /// Where it fired, in the trace's words: `at download byte 50000`, `on entering
    /// transferring:erase`, `by chance`.
    pub what: String,
    /// The download byte a download trigger acted at.
    pub at_byte: Option<u64>,
}

/// The engine's record of one scenario's faults.
#[derive(Clone, Debug)]
pub struct Engine {
    scenario: Arc<Scenario>,
    fired: Vec<u32>,
    idle: Vec<Option<String>>,
    armed: Vec<bool>,
    rng: ChaCha8Rng,
    /// Where the download stood at the last observation of this pass.
    download_at: Option<u64>,
}

impl Engine {
    pub fn new(scenario: Arc<Scenario>) -> Engine {
        let n = scenario.faults.len();
        Engine {
            fired: vec![0; n],
            idle: vec![None; n],
            armed: vec![false; n],
            rng: ChaCha8Rng::seed_from_u64(scenario.seed ^ 0x5ce7_a210),
            scenario,
            download_at: None,
        }
    }

    /// The same engine for `scenario`, a superset of this one's faults (a sweep's fork adds
    /// its own at the end).
    pub fn extend_to(&mut self, scenario: Arc<Scenario>) {
        let n = scenario.faults.len();
        self.fired.resize(n, 0);
        self.idle.resize(n, None);
        self.armed.resize(n, false);
        self.scenario = scenario;
    }

    pub fn scenario(&self) -> &Arc<Scenario> {
        &self.scenario
    }

    /// Times each fault fired, by index.
    pub fn fired(&self) -> &[u32] {
        &self.fired
    }

    /// Why a fault whose trigger matched did nothing, by index.
    pub fn idle_reasons(&self) -> &[Option<String>] {
        &self.idle
    }

    /// Whether fault `i` may still fire.
    pub fn has_times_left(&self, i: usize) -> bool {
        self.scenario
            .faults
            .get(i)
            .is_some_and(|f| self.fired[i] < f.times)
    }

    /// Fault `i` is carried out by the place itself: [`Engine::matches`] skips it.
    pub fn arm(&mut self, i: usize) {
        self.armed[i] = true;
    }

    /// The faults `obs` triggers now, in file order, that have firings left and are not
    /// armed in the place. A download observation moves the engine's download position; a
    /// probability trigger draws once per opportunity. Nothing is counted until
    /// [`Engine::fire`].
    pub fn matches(&mut self, obs: &Observation<'_>) -> Vec<Match> {
        let window = match *obs {
            Observation::Download { at, total } => {
                let from = match self.download_at {
                    // Passed since the last observation (a place that could not stop there).
                    Some(prev) if prev < at => prev + 1,
                    // A new pass (the first request, a resume, a restart from 0).
                    _ => at,
                };
                self.download_at = Some(at);
                Some((from, at, total))
            }
            _ => None,
        };
        let opportunity = obs.opportunity();
        let scenario = Arc::clone(&self.scenario);
        let mut out = Vec::new();
        for (i, f) in scenario.faults.iter().enumerate() {
            if self.armed[i] || self.fired[i] >= f.times {
                continue;
            }
            let mut at_byte = None;
            let what = match (&f.when, obs) {
                (Trigger::State(s), Observation::State(name)) if state_matches(s, name) => {
                    format!("on entering {name}")
                }
                (Trigger::Event(e), Observation::State(name))
                    if e.strip_prefix("state:")
                        .is_some_and(|wanted| state_matches(wanted, name)) =>
                {
                    format!("on entering {name}")
                }
                (Trigger::DownloadBytes(_) | Trigger::DownloadPercent(_), _) => {
                    let Some((from, to, total)) = window else {
                        continue;
                    };
                    let Some(b) = download_threshold(&f.when, total) else {
                        continue;
                    };
                    if !(from..=to).contains(&b) {
                        continue;
                    }
                    at_byte = Some(b);
                    format!("at download byte {b}")
                }
                (Trigger::TransferBlock(b), Observation::TransferBlock { n, of }) if b == n => {
                    format!("at transfer block {n}/{of}")
                }
                (Trigger::TransferPercent(p), Observation::TransferBlock { n, of })
                    if transfer_percent_reached(*p, *n, *of) =>
                {
                    format!("at transfer block {n}/{}", (*of).max(1))
                }
                (Trigger::Request(r), Observation::Answered { index }) if r == index => {
                    format!("after request {index}")
                }
                (Trigger::Event(e), Observation::Request { sid, .. })
                    if *e == format!("request:{sid:#04x}") =>
                {
                    format!("on {e}")
                }
                (Trigger::Boot(b), Observation::Boot(n)) if b == n => format!("at boot {n}"),
                (Trigger::Event(e), Observation::EcuEvent(name)) if e == name => {
                    format!("on {name}")
                }
                (Trigger::AtMs(ms), Observation::Tick { now_us }) if ms * 1000 <= *now_us => {
                    format!("at {ms} ms")
                }
                (Trigger::Probability(p), _)
                    if Some(p.per) == opportunity && self.rng.gen_bool(p.p.clamp(0.0, 1.0)) =>
                {
                    "by chance".to_string()
                }
                _ => continue,
            };
            out.push(Match {
                fault: i,
                action: f.action.clone(),
                what,
                at_byte,
            });
        }
        out
    }

    /// When the next `at_ms` trigger is due (µs), if one has firings left.
    pub fn next_deadline_us(&self) -> Option<u64> {
        self.scenario
            .faults
            .iter()
            .enumerate()
            .filter(|&(i, _)| self.fired[i] < self.scenario.faults[i].times && !self.armed[i])
            .filter_map(|(_, f)| match f.when {
                Trigger::AtMs(ms) => Some(ms * 1000),
                _ => None,
            })
            .min()
    }

    /// The download bytes past `offset` a place must stop at and observe (the thresholds of
    /// the download triggers with firings left, armed ones included), ascending.
    pub fn download_stops(&self, offset: u64, total: u64) -> Vec<u64> {
        let mut stops: Vec<u64> = self
            .scenario
            .faults
            .iter()
            .zip(&self.fired)
            .filter(|(f, n)| **n < f.times)
            .filter_map(|(f, _)| download_threshold(&f.when, total))
            .filter(|&b| b > offset && b < total)
            .collect();
        stops.sort_unstable();
        stops.dedup();
        stops
    }

    /// Fault `i` fired `what` (a match the place carried out, or an armed fault it reports):
    /// counted, and the trace's text returned (`fault 2 fired at transfer block 5/10: power
    /// cut (torn), restored after 500 ms`).
    pub fn fire(&mut self, i: usize, what: &str) -> String {
        self.fired[i] += 1;
        self.describe(i, what)
    }

    /// The trace's text for fault `i` firing `what`, not counted (its action did nothing).
    pub fn describe(&self, i: usize, what: &str) -> String {
        let action = describe_action(&self.scenario.faults[i].action);
        match what {
            "" => format!("fault {} fired: {action}", i + 1),
            what => format!("fault {} fired {what}: {action}", i + 1),
        }
    }

    /// Fault `i`'s trigger matched but its action could do nothing (`why`): it did not fire.
    pub fn idle(&mut self, i: usize, why: String) {
        self.idle[i] = Some(why);
    }

    /// Fault `i` fired, but its action turned out to do nothing (`why`: a CAN frame fault
    /// whose frame never came): the firing is taken back.
    pub fn did_nothing(&mut self, i: usize, why: String) {
        self.fired[i] = self.fired[i].saturating_sub(1);
        self.idle[i] = Some(why);
    }

    /// A failure for every fault that never fired, unless optional (see
    /// [`unfired_or_idle`](super::outcome::unfired_or_idle)).
    pub fn unfired(&self) -> Vec<String> {
        super::outcome::unfired_or_idle(&self.scenario, &self.fired, &self.idle)
    }
}

/// Whether a `state` trigger naming `wanted` matches entering state `name`: the state itself
/// or one of its steps (`transferring` matches `transferring:erase`).
pub fn state_matches(wanted: &str, name: &str) -> bool {
    wanted == name
        || name
            .strip_prefix(wanted)
            .is_some_and(|r| r.starts_with(':'))
}

/// Whether block `n` of `of` is the first at or past `p` % (block 1 for `p` up to its share).
fn transfer_percent_reached(p: f64, n: u32, of: u32) -> bool {
    let of = f64::from(of.max(1));
    let pct = f64::from(n) * 100.0 / of;
    let prev = f64::from(n.saturating_sub(1)) * 100.0 / of;
    n > 0 && pct >= p && (prev < p || n == 1)
}

/// The byte a download trigger acts at: `download_percent` is that share of `total` rounded
/// down; a threshold at or beyond the end acts at the last byte.
pub fn download_threshold(t: &Trigger, total: u64) -> Option<u64> {
    let b = match t {
        Trigger::DownloadBytes(b) => *b,
        Trigger::DownloadPercent(p) => (total as f64 * p / 100.0) as u64,
        _ => return None,
    };
    Some(b.min(total.saturating_sub(1)))
}

/// A fault's action in the trace's words.
pub fn describe_action(a: &Action) -> String {
    match a {
        Action::PowerCut(p) => format!(
            "power cut ({:?}), restored after {} ms",
            p.variant, p.restore_after_ms
        )
        .to_lowercase(),
        Action::Reset => "ecu reset".into(),
        Action::Can(f) => format!("can {}", f.to_yaml_flow()),
        Action::DropConnection => "doip connection dropped".into(),
        Action::Download(f) => format!("download {f:?}").to_lowercase(),
        Action::FlipTransferBits(m) => format!("bits {m:#04x} flipped in a TransferData block"),
        Action::BitRot(b) => {
            format!("bit rot in {:?} at +{:#x}", b.region, b.offset).to_lowercase()
        }
        Action::InjectNrc(n) => format!(
            "NRC {:#04x} injected for service {:#04x} ({}x)",
            n.nrc, n.service, n.count
        ),
        Action::CorruptRequest(c) => format!(
            "request to service {:#04x} corrupted ({}x)",
            c.service, c.count
        ),
        Action::KillManager => "OTA manager killed".into(),
        Action::SwapArtifact(kind) => {
            format!("the server now serves a {kind:?} image").to_lowercase()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(faults: &str) -> Engine {
        let text = format!(
            "description: x\nupdate: {{version: 2.0.0}}\nfaults:\n{faults}expect: {{outcome: committed}}\n"
        );
        Engine::new(Arc::new(
            crate::scenario::validate::parse(&text, "x.yaml").unwrap(),
        ))
    }

    fn fire_all(e: &mut Engine, obs: Observation<'_>) -> Vec<String> {
        let ms = e.matches(&obs);
        ms.into_iter().map(|m| e.fire(m.fault, &m.what)).collect()
    }

    const CUT: &str = "    do: {power_cut: {restore_after_ms: 5}}\n";

    #[test]
    fn download_triggers_fire_at_their_byte_whether_the_place_stops_there_or_passes_it() {
        let mut e = engine(&format!(
            "  - when: {{download_bytes: 50000}}\n{CUT}  - when: {{download_percent: 50}}\n{CUT}"
        ));
        let at = |at| Observation::Download { at, total: 200_000 };
        assert_eq!(e.download_stops(0, 200_000), vec![50_000, 100_000]);
        assert!(fire_all(&mut e, at(0)).is_empty());
        assert!(fire_all(&mut e, at(49_999)).is_empty());
        assert_eq!(
            fire_all(&mut e, at(50_000)),
            ["fault 1 fired at download byte 50000: power cut (torn), restored after 5 ms"]
        );
        // A place that passed the byte (no stop there) still fires it, at the byte.
        let m = e.matches(&at(120_000));
        assert_eq!((m.len(), m[0].at_byte), (1, Some(100_000)));
        assert_eq!(m[0].what, "at download byte 100000");
    }

    #[test]
    fn a_new_download_pass_fires_again_where_it_starts_while_times_are_left() {
        let mut e = engine(&format!(
            "  - when: {{download_bytes: 30000}}\n    times: 2\n{CUT}"
        ));
        let at = |at| Observation::Download { at, total: 90_000 };
        assert_eq!(fire_all(&mut e, at(30_000)).len(), 1);
        assert!(fire_all(&mut e, at(60_000)).is_empty());
        // Resumed at the byte it was closed at.
        assert_eq!(fire_all(&mut e, at(30_000)).len(), 1);
        assert!(fire_all(&mut e, at(30_000)).is_empty());
        assert_eq!(e.fired(), [2]);
    }

    #[test]
    fn a_threshold_at_or_past_the_end_acts_at_the_last_byte() {
        let t = Trigger::DownloadPercent(100.0);
        assert_eq!(download_threshold(&t, 1000), Some(999));
        assert_eq!(
            download_threshold(&Trigger::DownloadBytes(5000), 1000),
            Some(999)
        );
        assert_eq!(
            download_threshold(&Trigger::DownloadBytes(5), 1000),
            Some(5)
        );
    }

    #[test]
    fn transfer_percent_zero_fires_at_block_one_and_percentages_at_the_first_block_past_them() {
        let mut e = engine(&format!(
            "  - when: {{transfer_percent: 0}}\n{CUT}  - when: {{transfer_percent: 50}}\n{CUT}  - when: {{transfer_block: 4}}\n{CUT}"
        ));
        let at = |e: &mut Engine, n| {
            e.matches(&Observation::TransferBlock { n, of: 4 })
                .into_iter()
                .map(|m| m.fault)
                .collect::<Vec<_>>()
        };
        assert_eq!(at(&mut e, 1), [0]);
        assert_eq!(at(&mut e, 2), [1]);
        assert_eq!(at(&mut e, 3), Vec::<usize>::new());
        assert_eq!(at(&mut e, 4), [2]);
    }

    #[test]
    fn states_match_their_steps_and_armed_faults_are_left_to_the_place() {
        let mut e = engine(&format!(
            "  - when: {{state: transferring}}\n{CUT}  - when: {{event: 'state:transferring:erase'}}\n{CUT}  - when: {{download_bytes: 10}}\n    do: {{download: close}}\n"
        ));
        e.arm(2);
        let m = e.matches(&Observation::State("transferring:erase"));
        assert_eq!(m.iter().map(|m| m.fault).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(m[0].what, "on entering transferring:erase");
        assert!(e.matches(&Observation::State("transferring:block")).len() == 1);
        assert!(
            e.matches(&Observation::Download { at: 10, total: 100 })
                .is_empty()
        );
        // The place reports it (at its byte): counted, in the same words.
        assert_eq!(
            e.fire(2, "at download byte 10"),
            "fault 3 fired at download byte 10: download close"
        );
        assert_eq!(e.unfired().len(), 2);
    }

    #[test]
    fn clock_triggers_are_due_at_their_time_and_the_deadline_moves_on() {
        let mut e = engine(&format!(
            "  - when: {{at_ms: 200}}\n{CUT}  - when: {{at_ms: 100}}\n{CUT}"
        ));
        assert_eq!(e.next_deadline_us(), Some(100_000));
        assert!(e.matches(&Observation::Tick { now_us: 99_999 }).is_empty());
        assert_eq!(
            fire_all(&mut e, Observation::Tick { now_us: 100_000 }).len(),
            1
        );
        assert_eq!(e.next_deadline_us(), Some(200_000));
        assert_eq!(
            fire_all(&mut e, Observation::Tick { now_us: 250_000 }).len(),
            1
        );
        assert_eq!(e.next_deadline_us(), None);
        assert!(e.unfired().is_empty());
    }

    #[test]
    fn requests_boots_and_ecu_events_match_by_number_and_name() {
        let mut e = engine(&format!(
            "  - when: {{request: 3}}\n{CUT}  - when: {{event: 'request:0x31'}}\n{CUT}  - when: {{boot: 2}}\n{CUT}  - when: {{event: swap_started}}\n{CUT}"
        ));
        let faults = |e: &mut Engine, o| {
            e.matches(&o)
                .into_iter()
                .map(|m| m.fault)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            faults(&mut e, Observation::Answered { index: 2 }),
            Vec::<usize>::new()
        );
        assert_eq!(faults(&mut e, Observation::Answered { index: 3 }), [0]);
        assert_eq!(
            faults(
                &mut e,
                Observation::Request {
                    index: 9,
                    sid: 0x31
                }
            ),
            [1]
        );
        assert_eq!(
            faults(
                &mut e,
                Observation::Request {
                    index: 9,
                    sid: 0x34
                }
            ),
            Vec::<usize>::new()
        );
        assert_eq!(faults(&mut e, Observation::Boot(2)), [2]);
        assert_eq!(faults(&mut e, Observation::EcuEvent("swap_started")), [3]);
    }

    #[test]
    fn chance_draws_once_per_opportunity_from_the_seed() {
        let faults =
            "  - when: {probability: {p: 0.5, per: request}}\n    times: 1000\n    do: reset\n";
        let draws = |e: &mut Engine| {
            (1..=64)
                .map(|index| !fire_all(e, Observation::Request { index, sid: 0x22 }).is_empty())
                .collect::<Vec<_>>()
        };
        let (a, b) = (draws(&mut engine(faults)), draws(&mut engine(faults)));
        assert_eq!(a, b, "the same seed, the same draws");
        assert!(a.iter().any(|x| *x) && a.iter().any(|x| !*x));
        // Not an opportunity of this kind: no draw.
        let mut e = engine(faults);
        assert!(
            e.matches(&Observation::TransferBlock { n: 1, of: 2 })
                .is_empty()
        );
    }
}
