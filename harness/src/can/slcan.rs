//! The host side of an slcan adapter (placeholder while being written).
