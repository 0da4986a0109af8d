//! Every shell command the README shows is run: the `sh` blocks are extracted from README.md
//! and executed in order, in one scratch directory, with `hil` and `ecu-sim` from this build
//! first on `PATH`. A block fails the test when it exits with anything but what it declares.
//!
//! An HTML comment on the line before a block says how to run it (nothing: run it, expect
//! exit 0):
//!
//! | directive | meaning |
//! |---|---|
//! | `<!-- readme-test: exit N -->` | the block's last command exits `N` |
//! | `<!-- readme-test: serve -->` | each line is a server: it must still run after 2 s, then it is stopped |
//! | `<!-- readme-test: skip REASON -->` | not run here (hardware, or the test suite itself); the reason is printed |
//!
//! In a block, `cargo run --release -p hil --` is this build's `hil` (the same program, without
//! a release build in the middle of the tests), commands ending in `&` are stopped with the
//! block's process group when it ends, the project's `.venv/bin` is on `PATH` after them (as
//! after `. .venv/bin/activate`), and the scratch directory holds `scenarios/` and `tests/`
//! (links into the repository) and whatever earlier blocks wrote. Each block is bounded in time.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// How a block is run.
#[derive(Debug, PartialEq, Eq)]
enum Directive {
    Run { exit: i32 },
    Serve,
    Skip(String),
}

#[derive(Debug)]
struct Block {
    /// 1-based line of the opening fence.
    line: usize,
    directive: Directive,
    script: String,
}

/// The `sh` blocks of `text` with their directives; malformed directives are errors.
fn blocks(text: &str) -> Result<Vec<Block>, String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim_end() != "```sh" {
            i += 1;
            continue;
        }
        let line = i + 1;
        let directive = match i.checked_sub(1).map(|p| lines[p].trim()) {
            Some(d) if d.starts_with("<!-- readme-test:") => {
                let body = d
                    .trim_start_matches("<!-- readme-test:")
                    .trim_end_matches("-->")
                    .trim();
                match body.split_once(' ').unwrap_or((body, "")) {
                    ("serve", "") => Directive::Serve,
                    ("skip", reason) if !reason.is_empty() => Directive::Skip(reason.into()),
                    ("exit", n) => Directive::Run {
                        exit: n
                            .parse()
                            .map_err(|_| format!("README.md:{i}: bad exit code {n:?}"))?,
                    },
                    _ => return Err(format!("README.md:{i}: unknown directive {d:?}")),
                }
            }
            _ => Directive::Run { exit: 0 },
        };
        let end = lines[i + 1..]
            .iter()
            .position(|l| l.trim_end() == "```")
            .ok_or_else(|| format!("README.md:{line}: unclosed block"))?;
        let script = lines[i + 1..i + 1 + end].join("\n");
        out.push(Block {
            line,
            directive,
            script,
        });
        i += end + 2;
    }
    Ok(out)
}

/// What the README's commands mean here: this build's `hil` for the release build's.
fn localise(script: &str) -> String {
    script.replace("cargo run --release -p hil --", "hil")
}

struct Scratch {
    dir: tempfile::TempDir,
    path: String,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        std::os::unix::fs::symlink(repo.join("scenarios"), dir.path().join("scenarios")).unwrap();
        std::os::unix::fs::symlink(repo.join("tests"), dir.path().join("tests")).unwrap();
        let hil = PathBuf::from(env!("CARGO_BIN_EXE_hil"));
        let ecu_sim = common::workspace_bin("ecu-sim");
        let mut path = vec![
            hil.parent().unwrap().to_path_buf(),
            ecu_sim.parent().unwrap().to_path_buf(),
            // The virtualenv `ci/install.sh` makes (imgtool, python with udsoncan), as after
            // `. .venv/bin/activate`.
            repo.join(".venv/bin"),
        ];
        path.extend(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        ));
        Scratch {
            dir,
            path: std::env::join_paths(path)
                .unwrap()
                .to_string_lossy()
                .into_owned(),
        }
    }

    /// `bash -c SCRIPT` in its own process group; `-e`: stop at the first failing command.
    fn command(&self, script: &str, errexit: bool) -> Command {
        let mut cmd = Command::new("bash");
        if errexit {
            cmd.arg("-e");
        }
        cmd.arg("-c")
            .arg(script)
            .current_dir(self.dir.path())
            .env("PATH", &self.path)
            .env("CI", "true")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        cmd
    }
}

/// Run `cmd` for at most `limit`; returns the exit code (None: still running when stopped)
/// and the output. The whole process group is stopped afterwards.
fn run_bounded(
    mut cmd: Command,
    limit: Duration,
    stop_at: Option<Duration>,
) -> (Option<i32>, String) {
    let mut child = cmd.spawn().unwrap();
    let group = Pid::from_raw(child.id() as i32);
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let started = Instant::now();
    let deadline = stop_at.unwrap_or(limit);
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status.code().unwrap_or(-1));
        }
        if started.elapsed() >= deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // Background servers of the block (and a server that is still running) go now.
    let _ = killpg(group, Signal::SIGTERM);
    std::thread::sleep(Duration::from_millis(100));
    let _ = killpg(group, Signal::SIGKILL);
    let _ = child.wait();
    let text = format!("{}{}", out.join().unwrap(), err.join().unwrap());
    if code.is_none() && stop_at.is_none() {
        panic!("still running after {limit:?}:\n{text}");
    }
    (code, text)
}

#[test]
fn every_command_in_the_readme_runs() {
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let text = std::fs::read_to_string(&readme).unwrap();
    let blocks = blocks(&text).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        blocks.len() >= 8,
        "only {} sh blocks in the README",
        blocks.len()
    );
    let scratch = Scratch::new();
    let mut ran = 0;
    for b in &blocks {
        let script = localise(&b.script);
        match &b.directive {
            Directive::Skip(reason) => {
                eprintln!("README.md:{}: skipped: {reason}", b.line);
            }
            Directive::Serve => {
                for line in script.lines().filter(|l| !l.trim().is_empty()) {
                    let (code, out) = run_bounded(
                        scratch.command(line, false),
                        Duration::from_secs(10),
                        Some(Duration::from_secs(2)),
                    );
                    assert_eq!(
                        code, None,
                        "README.md:{}: `{line}` exited instead of serving:\n{out}",
                        b.line
                    );
                    eprintln!("README.md:{}: `{line}` serves", b.line);
                    ran += 1;
                }
            }
            Directive::Run { exit } => {
                // With `exit N` only the last command may fail: run the rest with -e.
                let errexit = *exit == 0;
                let (code, out) = run_bounded(
                    scratch.command(&script, errexit),
                    Duration::from_secs(300),
                    None,
                );
                assert_eq!(
                    code,
                    Some(*exit),
                    "README.md:{}: the block exited {code:?}, the README says {exit}:\n{script}\n--- output:\n{out}",
                    b.line
                );
                eprintln!("README.md:{}: exit {exit} as documented", b.line);
                ran += 1;
            }
        }
    }
    assert!(ran >= 6, "only {ran} README blocks ran");
}

#[test]
fn directives_are_parsed_strictly() {
    let text = "a\n<!-- readme-test: exit 1 -->\n```sh\nfalse\n```\n```sh\ntrue\n```\n<!-- readme-test: skip needs a CAN adapter -->\n```sh\nhil flash --slcan /dev/ttyACM0 v2.bin\n```\n<!-- readme-test: serve -->\n```sh\necu-sim serve\n```\n";
    let b = blocks(text).unwrap();
    let d: Vec<_> = b.iter().map(|b| (&b.directive, b.line)).collect();
    assert_eq!(
        d,
        [
            (&Directive::Run { exit: 1 }, 3),
            (&Directive::Run { exit: 0 }, 6),
            (&Directive::Skip("needs a CAN adapter".into()), 10),
            (&Directive::Serve, 14),
        ]
    );
    assert_eq!(
        blocks("<!-- readme-test: sometimes -->\n```sh\ntrue\n```\n").unwrap_err(),
        "README.md:1: unknown directive \"<!-- readme-test: sometimes -->\""
    );
    assert_eq!(
        blocks("```sh\ntrue\n").unwrap_err(),
        "README.md:1: unclosed block"
    );
    assert_eq!(
        localise("cargo run --release -p hil -- run scenarios/"),
        "hil run scenarios/"
    );
}
