//! MCUboot-style bootloader: slot layout, trailer, swap journal, boot decisions, and the
//! firmware-side updater.

mod crypt;
mod journal;
mod layout;
mod loader;
mod swap;
mod trailer;
mod updater;

pub use crypt::{PayloadKey, SwapKeys, key_field, slot_key, verify_image};
pub use journal::{
    KeyRecord, Record, Step, SwapState, read_counter, record_size, records_needed, swap_state,
};
pub use layout::{
    BootMode, ENC_KEY_SIZE, Layout, LayoutError, LayoutSpec, Region, Slot, SlotArea, TrailerMap,
    UnknownBootMode, mcuboot_trailer_len,
};
pub use loader::{
    BootConfig, BootDecision, BootError, Booted, Bootloader, Defect, Sink, image_base, slot_bytes,
    verify_slot,
};
pub use trailer::{
    BOOT_MAGIC, BOOT_MAGIC_ALIGNED, Field, Flag, MAX_ATTEMPTS, SwapType, Trailer, boot_magic,
};
pub use updater::{UpdateError, Updater};

/// Trailer access (reading and writing single fields), for tests and tools.
pub mod trailers {
    pub use super::trailer::{
        Complete, encode_field, erase, field_location, read, write_complete, write_field,
    };
}
