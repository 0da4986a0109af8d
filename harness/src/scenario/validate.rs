//! Reading scenario files: every problem as `file:line:col: message`, with a hint where one
//! helps (the valid names when one is misspelt).
//!
//! Three passes. A key written twice in one mapping is reported at the second one
//! ([`duplicate_key`]). Serde (with `deny_unknown_fields`, enums as one-key maps) reports the
//! first syntax, type, unknown-field or unknown-variant error with its position. A scenario that
//! parses is then checked as a whole (versions, state names, ranges, faults the chosen
//! transport can realise), and each problem is located by walking the YAML to its path.

mod located;

pub use located::{
    DuplicateKey, Invalid, Problem, closest, dotted, duplicate_key, locate, locate_or_parent,
    located, strip_location, with_hint,
};

use super::place::{NO_DOWNLOAD, PlaceKind, action_gap, trigger_gap};
pub use super::schema::parse_dtc;
use super::schema::{
    Action, CanFault, Client, ExternalClient, Fault, OutcomeSpec, Region, Scenario, TransportSpec,
    Trigger,
};
use super::trace::EVENTS;
use ecu_sim::boot::{Layout, MAX_ATTEMPTS};
use ecu_sim::image::Version;

/// The OTA job states a `state` trigger (and a `state:NAME` event) may name: each state the
/// job enters, and the states with steps on their own (matching any of their steps).
pub const STATES: &[&str] = &[
    "submitted",
    "downloading",
    "downloaded",
    "verifying",
    "transferring",
    "transferring:session",
    "transferring:security",
    "transferring:erase",
    "transferring:request_download",
    "transferring:block",
    "transferring:exit",
    "transferring:check",
    "applying",
    "applying:reset",
    "applying:await_boot",
    "applying:await_confirm",
    "committed",
    "rolled_back",
    "failed",
];

/// The largest scenario text read (bytes).
pub const MAX_TEXT: usize = 1 << 20;
/// The deepest nesting of flow collections (`[`, `{`) read; a scenario needs about 4.
pub const MAX_DEPTH: usize = 32;

/// Text that is too large or too deeply nested to hand to the YAML parser (100 000 nested
/// `[` took it 46 s): the position of the first character beyond the limit.
fn too_deep(text: &str) -> Option<(usize, usize, String)> {
    if text.len() > MAX_TEXT {
        return Some((
            1,
            1,
            format!(
                "{} bytes: a scenario file is at most {MAX_TEXT} bytes",
                text.len()
            ),
        ));
    }
    let (mut line, mut col, mut depth) = (1, 0, 0usize);
    let mut quote: Option<char> = None;
    let mut comment = false;
    let mut prev = '\n';
    for c in text.chars() {
        col += 1;
        if c == '\n' {
            (line, col, comment) = (line + 1, 0, false);
            prev = c;
            continue;
        }
        match (quote, c) {
            _ if comment => {}
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') if prev.is_whitespace() || "[{,:".contains(prev) => quote = Some(c),
            (None, '#') if prev.is_whitespace() => comment = true,
            (None, '[' | '{') => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Some((
                        line,
                        col,
                        format!(
                            "nested more than {MAX_DEPTH} levels deep: a scenario needs a few (refused before parsing)"
                        ),
                    ));
                }
            }
            (None, ']' | '}') => depth = depth.saturating_sub(1),
            _ => {}
        }
        prev = c;
    }
    // Block-style nesting: indentation deeper than MAX_DEPTH levels of two spaces.
    for (i, l) in text.lines().enumerate() {
        let indent = l.len() - l.trim_start_matches([' ', '-']).len();
        if indent > 4 * MAX_DEPTH {
            return Some((
                i + 1,
                indent + 1,
                format!(
                    "indented {indent} columns deep: a scenario needs a few levels (refused before parsing)"
                ),
            ));
        }
    }
    None
}

/// Parse and check `text` (from `file`).
pub fn parse(text: &str, file: &str) -> Result<Scenario, Invalid> {
    if let Some((line, column, message)) = too_deep(text) {
        return Err(Invalid(vec![Problem {
            file: file.into(),
            line,
            column,
            message,
        }]));
    }
    // Each pass adds what it finds: a duplicate key, then serde's first error (unless it is
    // that duplicate again, which serde puts at the start of the mapping), then the checks.
    let mut problems: Vec<Problem> = duplicate_key(text)
        .map(|d| d.problem(file))
        .into_iter()
        .collect();
    let de = serde_yaml::Deserializer::from_str(text);
    let mut scenario: Scenario = match serde_yaml::with::singleton_map_recursive::deserialize(de) {
        Ok(s) => s,
        Err(e) => {
            let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
            let message = strip_location(&e.to_string());
            let message = with_hint(&message);
            if problems.is_empty() || !message.contains("duplicate field") {
                problems.push(Problem {
                    file: file.into(),
                    line,
                    column,
                    message,
                });
            }
            problems.sort_by_key(|p| (p.line, p.column));
            return Err(Invalid(problems));
        }
    };
    // Set before the checks: files the scenario names (ecu.enc_key) are relative to it.
    let dir = std::path::Path::new(file).parent();
    scenario.dir = Some(dir.filter(|d| !d.as_os_str().is_empty()).map_or_else(
        || std::path::PathBuf::from("."),
        std::path::Path::to_path_buf,
    ));
    problems.extend(
        check(&scenario)
            .into_iter()
            .map(|(path, message)| located(file, text, &path, &message)),
    );
    problems.sort_by_key(|p| (p.line, p.column));
    if problems.is_empty() {
        scenario.origin = Some(super::schema::Origin {
            file: file.into(),
            faults: (0..scenario.faults.len())
                .map(|i| locate_or_parent(text, &["faults".into(), i.to_string()]))
                .collect(),
        });
        Ok(scenario)
    } else {
        Err(Invalid(problems))
    }
}

/// Problems found by the checks: the path of the value, and what is wrong with it.
type Found = Vec<(Vec<String>, String)>;

fn path(segs: &[&str]) -> Vec<String> {
    segs.iter().map(|s| s.to_string()).collect()
}

/// Problems of a scenario that parsed: (path, message).
fn check(s: &Scenario) -> Found {
    let mut found = Found::new();
    let mut version = |segs: &[&str], v: &str| {
        if v.parse::<Version>().is_err() {
            found.push((
                path(segs),
                format!("{v:?} is not a version (major.minor.revision[+build], e.g. 2.1.0)"),
            ));
        }
    };
    version(&["installed", "version"], &s.installed.version);
    version(&["update", "version"], &s.update.version);
    if let Some(v) = &s.expect.version {
        version(&["expect", "version"], v);
    }
    let e = &s.ecu;
    if ![1u8, 2, 4, 8, 16, 32].contains(&e.align) {
        found.push((
            path(&["ecu", "align"]),
            format!(
                "{} is not a write unit the flash model has (1, 2, 4, 8, 16 or 32)",
                e.align
            ),
        ));
    }
    if e.sector_size < 512 || !e.sector_size.is_power_of_two() {
        found.push((
            path(&["ecu", "sector_size"]),
            format!(
                "{} must be a power of two of at least 512 bytes",
                e.sector_size
            ),
        ));
    }
    if !(2..=1024).contains(&e.slot_sectors) {
        found.push((
            path(&["ecu", "slot_sectors"]),
            format!("{} must be between 2 and 1024", e.slot_sectors),
        ));
    }
    if e.max_boot_attempts == 0 {
        found.push((
            path(&["ecu", "max_boot_attempts"]),
            "must be at least 1".into(),
        ));
    }
    if e.max_boot_attempts > MAX_ATTEMPTS {
        found.push((
            path(&["ecu", "max_boot_attempts"]),
            format!(
                "{} is above the {MAX_ATTEMPTS} boot attempts the trailer can count (use 1..={MAX_ATTEMPTS})",
                e.max_boot_attempts
            ),
        ));
    }
    let geometry_ok = found.is_empty();
    let layout = if geometry_ok {
        check_layout(e, &mut found)
    } else {
        None
    };
    if let Some(l) = &layout {
        check_image_sizes(s, l, &mut found);
    }
    if e.block_len < 3 {
        found.push((
            path(&["ecu", "block_len"]),
            "must leave room for data (at least 3)".into(),
        ));
    }
    if e.keys.is_empty() {
        found.push((
            path(&["ecu", "keys"]),
            "the bootloader must trust at least one key".into(),
        ));
    }
    if let Err(problem) = e.load_enc_key(s.dir.as_deref()) {
        found.push((path(&["ecu", "enc_key"]), problem.to_string()));
    }
    if s.installed.encrypt.is_some() {
        found.push((
            path(&["installed", "encrypt"]),
            "the installed image lies decrypted in the primary slot, as the bootloader leaves it: only the update is encrypted".into(),
        ));
    }
    if matches!(e.transport, TransportSpec::Can | TransportSpec::Canfd) && e.bitrate == 0
        || e.transport == TransportSpec::Canfd && e.data_bitrate == 0
    {
        found.push((path(&["ecu", "bitrate"]), "must be above 0".into()));
    }
    if s.download.bandwidth == 0 {
        found.push((
            path(&["download", "bandwidth"]),
            "must be above 0 bytes per second".into(),
        ));
    }
    for (i, fault) in s.faults.iter().enumerate() {
        check_fault(s, i, fault, layout.as_ref(), &mut found);
    }
    let x = &s.expect;
    if let (Some(min), Some(max)) = (x.boots.min, x.boots.max)
        && min > max
    {
        found.push((
            path(&["expect", "boots"]),
            format!("min {min} is above max {max}"),
        ));
    }
    if let Some(d) = &x.duration_s {
        for (field, v) in [("min", d.min), ("max", d.max)] {
            if let Some(v) = v
                && !(v >= 0.0 && v.is_finite())
            {
                found.push((
                    path(&["expect", "duration_s", field]),
                    format!("{v} is not a duration (seconds, 0 or more)"),
                ));
            }
        }
        if let (Some(min), Some(max)) = (d.min, d.max)
            && min > max
        {
            found.push((
                path(&["expect", "duration_s"]),
                format!("min {min} is above max {max}: no run can pass (swap them?)"),
            ));
        }
    }
    for (field, names) in [("events", &x.events), ("never", &x.never)] {
        for (i, name) in names.iter().enumerate() {
            if let Some(problem) = event_problem(name, false) {
                found.push((vec!["expect".into(), field.into(), i.to_string()], problem));
            }
        }
    }
    for (i, d) in x.dtcs.iter().enumerate() {
        if parse_dtc(d).is_none() {
            found.push((
                vec!["expect".into(), "dtcs".into(), i.to_string()],
                format!("{d:?} is not a DTC (six hex digits like D00300)"),
            ));
        }
    }
    if x.outcome == OutcomeSpec::Committed && x.reason_contains.is_some() {
        found.push((
            path(&["expect", "reason_contains"]),
            "a committed update has no reason".into(),
        ));
    }
    if let Client::External(c) = &s.client {
        check_external(s, c, &mut found);
    }
    found
}

/// The placeholders an external client's command and environment may use.
pub const PLACEHOLDERS: &[&str] = &[
    "host",
    "port",
    "ecu_address",
    "tester_address",
    "pty",
    "tx_id",
    "rx_id",
    "image",
    "version",
    "dir",
];

/// The `{name}`s in `text` that are not placeholders.
fn unknown_placeholders(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else { break };
        let name = &after[..close];
        // `${VAR}` is the shell's, not ours.
        let shell = open > 0 && rest.as_bytes()[open - 1] == b'$';
        if !shell && !PLACEHOLDERS.contains(&name) {
            out.push(name.to_string());
        }
        rest = &after[close + 1..];
    }
    out
}

/// A targeted CAN fault (`{drop: {frame, id, n}}`, `{delay: {ms, …}}`): it must select a
/// frame that can be on the bus.
fn check_can_fault(f: &CanFault, at: &dyn Fn(&[&str]) -> Vec<String>, found: &mut Found) {
    let Some(t) = f.target() else {
        return;
    };
    let form = f.form();
    if let CanFault::DelayFrame(d) = f
        && d.ms == 0
    {
        found.push((at(&["do", "can", form, "ms"]), "must be above 0".into()));
    }
    if t.frame.is_none() && t.id.is_none() && t.n.is_none() {
        found.push((
            at(&["do", "can", form]),
            format!(
                "say which frame: `frame` (single, first, consecutive, flow_control), `id` or `n` (e.g. `{{{form}: {{frame: consecutive, n: 3}}}}`), or write the short form `can: {}`",
                if form == "delay" { "{delay_ms: N}" } else { form }
            ),
        ));
    }
    if t.n == Some(0) {
        found.push((
            at(&["do", "can", form, "n"]),
            "frames count from 1 (n: 1 is the first matching frame of the exchange)".into(),
        ));
    }
    let ids = ecu_sim::proto::uds_can::CanIds::default();
    if let Some(id) = t.id
        && id != ids.request
        && id != ids.response
    {
        found.push((
            at(&["do", "can", form, "id"]),
            format!(
                "no frame on the bus has id {id:#05x}: the tester sends on {:#05x}, the ECU on {:#05x}",
                ids.request, ids.response
            ),
        ));
    }
}

/// An external client has no OTA job and no download: what needs the project's manager.
fn check_external(s: &Scenario, c: &ExternalClient, found: &mut Found) {
    let at = |segs: &[&str]| {
        let mut p = vec!["client".to_string(), "external".to_string()];
        p.extend(segs.iter().map(|s| s.to_string()));
        p
    };
    if c.command.trim().is_empty() {
        found.push((at(&["command"]), "must not be empty".into()));
    }
    let texts = std::iter::once((at(&["command"]), &c.command))
        .chain(c.env.iter().map(|(k, v)| (at(&["env", k]), v)));
    for (p, text) in texts {
        for name in unknown_placeholders(text) {
            let hint = closest(&name, PLACEHOLDERS)
                .map(|b| format!(" (did you mean `{{{b}}}`?)"))
                .unwrap_or_default();
            found.push((
                p.clone(),
                format!(
                    "unknown placeholder `{{{name}}}`{hint}; placeholders: {}",
                    PLACEHOLDERS
                        .iter()
                        .map(|p| format!("{{{p}}}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
    }
    if c.timeout_s.is_nan() || c.timeout_s <= 0.0 {
        found.push((at(&["timeout_s"]), "must be above 0".into()));
    }
    if s.ecu.transport == TransportSpec::Canfd {
        found.push((
            path(&["ecu", "transport"]),
            "an external client reaches the ECU over DoIP or an slcan pty, which carries classic CAN only: use `doip` or `can`".into(),
        ));
    }
    for (i, fault) in s.faults.iter().enumerate() {
        let gaps = [
            trigger_gap(PlaceKind::External, &fault.when),
            action_gap(PlaceKind::External, &fault.action),
        ];
        for gap in gaps.into_iter().flatten() {
            let mut p = vec!["faults".to_string(), i.to_string()];
            p.extend(gap.at.iter().map(|s| s.to_string()));
            found.push((p, gap.why.into()));
        }
    }
    if s.expect.download_resumed.is_some() {
        found.push((path(&["expect", "download_resumed"]), NO_DOWNLOAD.into()));
    }
}

/// The event names a `when: {event: NAME}` trigger may name: the virtual ECU's events (the
/// other names in [`EVENTS`] are the harness's own and trigger nothing).
pub fn trigger_events() -> Vec<&'static str> {
    EVENTS
        .iter()
        .filter(|e| e.ecu_kind)
        .map(|e| e.name)
        .collect()
}

/// Why `name` is not an event name `expect.events`/`never` (`trigger: false`) or a
/// `when: {event}` trigger (`trigger: true`) may use; `None` when it is one.
pub fn event_problem(name: &str, trigger: bool) -> Option<String> {
    if let Some(state) = name.strip_prefix("state:") {
        if STATES.contains(&state) {
            return None;
        }
        let hint = closest(state, STATES)
            .map(|b| format!("did you mean `state:{b}`? "))
            .unwrap_or_default();
        return Some(format!(
            "unknown job state `{state}` in `{name}`; {hint}states: {}",
            STATES.join(", ")
        ));
    }
    if let Some(sid) = name.strip_prefix("request:") {
        if !trigger {
            return Some(format!(
                "`{name}` is a trigger (`when: {{event: {name}}}`), not an event a trace holds: name the ECU's answer instead (e.g. `negative_response`, `routine_finished`)"
            ));
        }
        let parsed = sid
            .strip_prefix("0x")
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        return match parsed {
            Some(v) if sid == format!("{v:#04x}") => None,
            Some(v) => Some(format!(
                "write the service as two lowercase hex digits: `request:{v:#04x}`"
            )),
            None => Some(format!(
                "`{sid}` is not a service id: write `request:0x` and two hex digits, e.g. `request:0x31`"
            )),
        };
    }
    let names: Vec<&str> = if trigger {
        trigger_events()
    } else {
        EVENTS.iter().map(|e| e.name).collect()
    };
    if names.contains(&name) {
        return None;
    }
    if trigger && EVENTS.iter().any(|e| e.name == name) {
        return Some(format!(
            "`{name}` is the harness's own event, not the ECU's: a `when: {{event}}` trigger fires on ECU events, `state:NAME` and `request:0xNN` only"
        ));
    }
    let hint = closest(name, &names)
        .map(|b| format!(" (did you mean `{b}`?)"))
        .unwrap_or_default();
    Some(format!(
        "unknown event `{name}`{hint}; the event names are listed in the README's event table, plus `state:<job state>`{}",
        if trigger { " and `request:0xNN`" } else { "" }
    ))
}

/// The layout the runner's ECU will have, or the problem that stops it (a journal too small
/// for the swap, a device beyond the simulator's limits), found by the simulator's own rules.
fn check_layout(e: &super::schema::EcuSpec, found: &mut Found) -> Option<Layout> {
    let geometry = match e.geometry() {
        Ok(g) => g,
        Err(err) => {
            found.push((
                path(&["ecu", "sector_size"]),
                format!(
                    "{err} (the device is 3 + 2 × slot_sectors{} sectors of sector_size bytes): use a smaller sector_size or fewer slot_sectors",
                    if e.mode().extra_sectors() == (0, 0, 0) { "" } else { " + 1" }
                ),
            ));
            return None;
        }
    };
    match Layout::auto(&geometry, e.mode()) {
        Ok(l) => Some(l),
        Err(err) => {
            // The smallest sector size (a power of two) whose journal holds the swap.
            let fits = (e.sector_size.trailing_zeros() + 1..=20)
                .map(|b| 1u32 << b)
                .find(|&size| {
                    let bigger = super::schema::EcuSpec {
                        sector_size: size,
                        ..e.clone()
                    };
                    bigger.layout().is_ok()
                });
            let hint = match (&err, fits) {
                (ecu_sim::boot::LayoutError::StatusTooSmall { .. }, Some(size)) => format!(
                    ": the swap journal is one sector; use `sector_size: {size}` or fewer slot_sectors"
                ),
                (ecu_sim::boot::LayoutError::StatusTooSmall { .. }, None) => {
                    ": the swap journal is one sector; use fewer slot_sectors".into()
                }
                (ecu_sim::boot::LayoutError::TrailerTooLarge { .. }, Some(size)) => format!(
                    ": MCUboot's trailer grows with slot_sectors and align; use `sector_size: {size}`, fewer slot_sectors or a smaller align"
                ),
                (ecu_sim::boot::LayoutError::TrailerTooLarge { .. }, None) => {
                    ": MCUboot's trailer grows with slot_sectors and align; use fewer slot_sectors or a smaller align".into()
                }
                _ => String::new(),
            };
            found.push((
                path(&["ecu", "sector_size"]),
                format!("this ECU's layout does not resolve: {err}{hint}"),
            ));
            None
        }
    }
}

/// An installed or update image (header, payload, TLVs) larger than a slot's image area: the
/// runner would allocate it before finding out (`size: 18446744073709551615`).
fn check_image_sizes(s: &Scenario, l: &Layout, found: &mut Found) {
    let capacity = l.primary.image_capacity();
    let enc_key = s.ecu.load_enc_key(s.dir.as_deref()).ok().flatten();
    for (what, spec) in [("installed", &s.installed), ("update", &s.update)] {
        // The image's size without payload, built as the runner builds it.
        let empty = super::schema::ImageSpec {
            size: 0,
            // an encrypted installed image is reported on its own
            encrypt: spec.encrypt.filter(|_| what == "update"),
            ..spec.clone()
        };
        let overhead =
            match super::prepare::build_image(&empty, s.seed, "an empty image", enc_key.as_ref()) {
                Ok(b) => b.len() as u64,
                Err(super::outcome::RunError::Encrypt { problem, .. }) => {
                    found.push((path(&[what, "encrypt"]), problem.to_string()));
                    continue;
                }
                Err(_) => continue, // a bad version: reported on its own
            };
        let room = u64::from(capacity).saturating_sub(overhead);
        if spec.size as u64 > room {
            found.push((
                path(&[what, "size"]),
                format!(
                    "{} payload bytes do not fit the slot: its image area holds {capacity} bytes, {overhead} of them header and TLVs, so at most {room} (raise ecu.slot_sectors or ecu.sector_size)",
                    spec.size
                ),
            ));
        }
    }
}

fn check_fault(s: &Scenario, i: usize, fault: &Fault, layout: Option<&Layout>, found: &mut Found) {
    let at = |segs: &[&str]| {
        let mut p = vec!["faults".to_string(), i.to_string()];
        p.extend(segs.iter().map(|s| s.to_string()));
        p
    };
    let percent = |v: f64| (0.0..=100.0).contains(&v);
    match &fault.when {
        Trigger::State(name) if !STATES.contains(&name.as_str()) => {
            let hint = closest(name, STATES)
                .map(|b| format!("did you mean `{b}`? "))
                .unwrap_or_default();
            found.push((
                at(&["when", "state"]),
                format!(
                    "unknown job state `{name}`; {hint}states: {}",
                    STATES.join(", ")
                ),
            ));
        }
        Trigger::DownloadPercent(p) | Trigger::TransferPercent(p) if !percent(*p) => {
            found.push((at(&["when"]), format!("{p} is not a percentage (0–100)")));
        }
        Trigger::Request(0) | Trigger::Boot(0) => {
            found.push((at(&["when"]), "counts from 1".into()));
        }
        Trigger::TransferBlock(0) => {
            found.push((
                at(&["when", "transfer_block"]),
                "blocks count from 1".into(),
            ));
        }
        Trigger::FlashOp(op) => {
            if op.n == 0 {
                found.push((
                    at(&["when", "flash_op", "n"]),
                    "operations count from 1".into(),
                ));
            }
            if op.in_boot && op.in_firmware {
                found.push((
                    at(&["when", "flash_op"]),
                    "in_boot and in_firmware exclude each other".into(),
                ));
            }
            if op.region == Some(Region::Scratch) && s.ecu.mode().extra_sectors().0 == 0 {
                found.push((
                    at(&["when", "flash_op", "region"]),
                    no_scratch(s.ecu.mode()),
                ));
            }
        }
        Trigger::Probability(p) if !(0.0..=1.0).contains(&p.p) => {
            found.push((
                at(&["when", "probability", "p"]),
                format!("{} is not a probability (0–1)", p.p),
            ));
        }
        Trigger::Event(name) if name.is_empty() => {
            found.push((at(&["when", "event"]), "empty event name".into()));
        }
        Trigger::Event(name) => {
            if let Some(problem) = event_problem(name, true) {
                found.push((at(&["when", "event"]), problem));
            }
        }
        _ => {}
    }
    let can = matches!(s.ecu.transport, TransportSpec::Can | TransportSpec::Canfd);
    match &fault.action {
        Action::Can(_) if !can => found.push((
            at(&["do", "can"]),
            "CAN frame faults need `ecu.transport: can` or `canfd`".into(),
        )),
        Action::DropConnection if can => found.push((
            at(&["do"]),
            "drop_connection is a DoIP fault; on CAN use `can: drop`".into(),
        )),
        Action::Can(f)
            if matches!(s.client, Client::External(_))
                && !matches!(f, CanFault::Drop | CanFault::Duplicate | CanFault::DelayMs(_)) =>
        {
            found.push((
                at(&["do", "can"]),
                format!(
                    "`can: {}` needs the project's OTA manager: an external client's frames travel on a real slcan pty, which the scenario cannot reach frame by frame (with an external client `can: drop` and `can: duplicate` lose the whole request, `can: {{delay_ms: N}}` delays it)",
                    f.to_yaml_flow()
                ),
            ))
        }
        Action::Can(CanFault::DelayMs(0)) => {
            found.push((at(&["do", "can", "delay_ms"]), "must be above 0".into()))
        }
        Action::Can(f) => check_can_fault(f, &|segs| at(segs), found),
        Action::BitRot(b) if b.region == Region::Scratch && s.ecu.mode().extra_sectors().0 == 0 => {
            found.push((
                at(&["do", "bit_rot", "region"]),
                no_scratch(s.ecu.mode()),
            ))
        }
        Action::BitRot(b) if layout.is_some() => {
            let ranges = layout.map(|l| super::world::region_ranges(l, b.region));
            let size = ranges
                .as_ref()
                .and_then(|r| r.first())
                .map_or(0, |r| r.end - r.start);
            if b.offset >= size {
                found.push((
                    at(&["do", "bit_rot", "offset"]),
                    format!(
                        "{:#x} is outside the {} region ({size:#x} bytes): use an offset below {size:#x}",
                        b.offset,
                        region_word(b.region)
                    ),
                ));
            }
        }
        Action::PowerCut(_) if !matches!(fault.when, Trigger::FlashOp(_)) && fault.times > 1000 => {
            found.push((at(&["times"]), "at most 1000".into()))
        }
        _ => {}
    }
    if fault.times == 0 {
        found.push((at(&["times"]), "a fault fires at least once".into()));
    }
}

fn region_word(r: Region) -> &'static str {
    match r {
        Region::Primary => "primary",
        Region::Secondary => "secondary",
        Region::Scratch => "scratch",
        Region::Trailer => "trailer",
        Region::Journal => "journal",
    }
}

/// Why a scratch region is refused: only swap-scratch has a scratch sector.
fn no_scratch(mode: ecu_sim::boot::BootMode) -> String {
    match mode {
        ecu_sim::boot::BootMode::DirectXip => "A/B mode has no scratch sector".into(),
        m => format!("{m} mode has no scratch sector (only swap-scratch has one)"),
    }
}
