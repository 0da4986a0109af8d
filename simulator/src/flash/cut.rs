//! Injected power cuts: where a cut lands, which operations it matches, what fired.

use std::fmt;

/// Where a power cut lands relative to its operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CutVariant {
    Before,
    Torn,
    After,
}

impl CutVariant {
    pub const ALL: [CutVariant; 3] = [CutVariant::Before, CutVariant::Torn, CutVariant::After];
}

impl fmt::Display for CutVariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CutVariant::Before => "before",
            CutVariant::Torn => "torn",
            CutVariant::After => "after",
        })
    }
}

/// Kind of a counted operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpKind {
    Erase,
    Write,
}

/// One counted operation (the most recent is kept for diagnostics and fault reports).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Op {
    pub index: u64,
    pub kind: OpKind,
    pub addr: u32,
    pub len: u32,
}

/// A cut that fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FiredCut {
    pub op: Op,
    pub variant: CutVariant,
}

/// Who is using the flash: the bootloader (during boot number `n`) or the firmware and its
/// diagnostic server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum OpContext {
    Boot(u64),
    #[default]
    Firmware,
}

/// A power cut that fires at the `nth` (1-based) operation matching every given filter;
/// operations before that count down. Scenario triggers such as "the 3rd erase of the
/// secondary slot" or "the 10th write during boot 2" become rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CutRule {
    /// The caller's name for the rule (to tell which one fired).
    pub id: u64,
    pub kind: Option<OpKind>,
    /// Only operations starting inside one of these address ranges (none: anywhere).
    pub ranges: Vec<std::ops::Range<u32>>,
    /// `Some(Some(n))`: during boot `n`; `Some(None)`: during any boot; `None`: any context.
    pub boot: Option<Option<u64>>,
    /// Only operations outside any boot (the firmware's).
    pub firmware_only: bool,
    pub nth: u64,
    pub variant: CutVariant,
}

impl CutRule {
    pub(super) fn matches(&self, op: &Op, context: OpContext) -> bool {
        self.kind.is_none_or(|k| k == op.kind)
            && (self.ranges.is_empty() || self.ranges.iter().any(|r| r.contains(&op.addr)))
            && match (self.boot, context) {
                (None, OpContext::Firmware) => true,
                (None, OpContext::Boot(_)) => !self.firmware_only,
                (Some(None), OpContext::Boot(_)) => true,
                (Some(Some(n)), OpContext::Boot(b)) => n == b,
                (Some(_), OpContext::Firmware) => false,
            }
    }
}

/// A power cut waiting for an event instead of an operation count: the first event of a boot
/// that `matches` arms it at the next flash operation of that boot (a cut "on
/// `revert_started`" lands inside the revert's work, not after the boot). The ECU keeps the
/// waiting ones ([`Ecu::add_event_cut`](crate::ecu::Ecu::add_event_cut)); once armed it is a
/// [`CutRule`] with the same `id` (matching that boot's next operation), gone when it fired.
#[derive(Clone)]
pub struct EventCut {
    /// The caller's name for the cut (the id of the rule it becomes).
    pub id: u64,
    pub matches: std::sync::Arc<dyn Fn(&crate::event::EventKind) -> bool + Send + Sync>,
    pub variant: CutVariant,
}

impl fmt::Debug for EventCut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventCut")
            .field("id", &self.id)
            .field("variant", &self.variant)
            .finish_non_exhaustive()
    }
}

impl EventCut {
    /// The rule this cut becomes when an event of boot `boot` arms it: that boot's next
    /// operation.
    pub fn rule(&self, boot: u64) -> CutRule {
        CutRule {
            id: self.id,
            kind: None,
            ranges: Vec::new(),
            boot: Some(Some(boot)),
            firmware_only: false,
            nth: 1,
            variant: self.variant,
        }
    }
}
