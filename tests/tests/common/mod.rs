//! What the imgtool interop tests share: the project's imgtool (from `ci/install.sh`'s
//! virtualenv, or `HIL_IMGTOOL`), running it, and deterministic payloads.

#![allow(dead_code)] // each test binary uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A program of the project's virtualenv.
pub fn venv_bin(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../.venv/bin")
        .join(name)
}

/// imgtool: `HIL_IMGTOOL`, else the virtualenv's; it must exist.
pub fn imgtool() -> PathBuf {
    let path = std::env::var_os("HIL_IMGTOOL")
        .map(PathBuf::from)
        .unwrap_or_else(|| venv_bin("imgtool"));
    assert!(
        path.exists(),
        "imgtool not found at {}: run ci/install.sh",
        path.display()
    );
    path
}

/// Run imgtool in `dir`, whatever its status.
pub fn imgtool_output(args: &[&str], dir: &Path) -> Output {
    Command::new(imgtool())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("imgtool runs")
}

/// Run `program` in `dir`; it must succeed. Returns its stdout.
pub fn run_program(program: &Path, args: &[&str], dir: &Path) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{} {args:?} failed: {}{}",
        program.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run imgtool in `dir`; it must succeed. Returns its stdout.
pub fn run(args: &[&str], dir: &Path) -> String {
    run_program(&imgtool(), args, dir)
}

/// Deterministic pseudo-random bytes (splitmix64 of `seed`).
pub fn payload(n: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)) as u8
        })
        .collect()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
