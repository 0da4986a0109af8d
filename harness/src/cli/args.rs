//! Argument parsers and value enums more than one verb uses.

use clap::ValueEnum;

use crate::ui::UiMode;

/// `--ui`: tui (the dashboard), plain, or json (one event per line).
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum UiArg {
    Tui,
    Plain,
    Json,
}

impl From<UiArg> for UiMode {
    fn from(u: UiArg) -> UiMode {
        match u {
            UiArg::Tui => UiMode::Tui,
            UiArg::Plain => UiMode::Plain,
            UiArg::Json => UiMode::Json,
        }
    }
}

/// A 16-bit number, hex with `0x` or decimal (logical addresses).
pub fn parse_u16(s: &str) -> Result<u16, String> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u16::from_str_radix(hex, 16),
        None => s.parse(),
    };
    r.map_err(|e| format!("{s:?}: {e}"))
}

/// A 32-bit number, hex with `0x` or decimal (CAN ids).
pub fn parse_u32(s: &str) -> Result<u32, String> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => s.parse(),
    };
    r.map_err(|e| format!("{s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_parse_in_hex_and_decimal_and_name_the_bad_input() {
        assert_eq!(parse_u16("0x0E00"), Ok(0x0E00));
        assert_eq!(parse_u16("16"), Ok(16));
        assert_eq!(parse_u32("0X7e8"), Ok(0x7E8));
        let e = parse_u16("0x10000").unwrap_err();
        assert!(e.starts_with("\"0x10000\": "), "{e}");
    }
}
