//! MCUboot-style bootloader: slot layout, trailer, swap journal, boot decisions, and the
//! firmware-side updater.

mod journal;
mod layout;
mod loader;
mod trailer;
mod updater;

pub use journal::{Record, Step, SwapState, read_counter, record_size, records_needed, swap_state};
pub use layout::{BootMode, Layout, LayoutError, LayoutSpec, Region, Slot, SlotArea};
pub use loader::{
    BootConfig, BootDecision, BootError, Booted, Bootloader, Defect, Sink, slot_bytes, verify_slot,
};
pub use trailer::{BOOT_MAGIC, Field, Flag, MAX_ATTEMPTS, SwapType, Trailer};
pub use updater::{UpdateError, Updater};

/// Trailer access (reading and writing single fields), for tests and tools.
pub mod trailers {
    pub use super::trailer::{
        encode_field, erase, field_location, read, write_complete, write_field,
    };
}
