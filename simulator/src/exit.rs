//! Exit codes, one table for every verb of `ecu-sim` and `hil` (the README's exit-code table).
//!
//! | code | name        | meaning                                                                     |
//! |------|-------------|-----------------------------------------------------------------------------|
//! | 0    | [`OK`]      | done: every scenario or point passed, the update committed, the command worked |
//! | 1    | [`FAILED`]  | a test failed: a scenario or sweep point failed, an update rolled back or was refused, a job did not commit, no bootable image |
//! | 2    | [`INVALID`] | invalid input or usage: a bad argument or file (scenario, manifest, image, key, job file), a target that does not exist, a store another runner holds |
//! | 3    | [`BROKEN`]  | the harness, the engine, the link or the ECU broke while working           |
//!
//! Usage errors clap reports itself also exit 2.

use std::process::ExitCode;

/// Done: passed, committed, worked.
pub const OK: Code = Code(0);
/// A test failed (the thing under test did not do what it should).
pub const FAILED: Code = Code(1);
/// Invalid input or usage; nothing was run (or, for several inputs, the invalid ones were not).
pub const INVALID: Code = Code(2);
/// The harness, the engine, the link or the ECU broke.
pub const BROKEN: Code = Code(3);

/// One of the codes above.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Code(u8);

impl Code {
    pub fn value(self) -> u8 {
        self.0
    }
}

impl From<Code> for ExitCode {
    fn from(c: Code) -> ExitCode {
        ExitCode::from(c.0)
    }
}

/// Prints `error: {e}` to stderr and returns `code`: the one way a verb reports the error that
/// ends it.
pub fn error(code: Code, e: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {e}");
    code.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_the_documented_numbers() {
        assert_eq!([OK, FAILED, INVALID, BROKEN].map(Code::value), [0, 1, 2, 3]);
    }
}
