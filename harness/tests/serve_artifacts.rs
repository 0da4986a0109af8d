//! `hil serve-artifacts DIR` as a process, probed over real HTTP on loopback: nothing outside DIR
//! is served (symlinks resolved, `..` refused), a FIFO in DIR neither hangs a request nor keeps
//! SIGTERM from stopping the server, and a symlink that stays inside DIR still works.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// The server process, killed when dropped.
struct Server {
    child: Child,
    stdout: BufReader<ChildStdout>,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(dir: &Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hil"))
        .arg("serve-artifacts")
        .arg(dir)
        .args(["--addr", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let port = first
        .trim_end()
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .unwrap_or_else(|| panic!("no port in {first:?}"));
    Server {
        child,
        stdout,
        port,
    }
}

/// `GET target`: (status, body). A server that does not answer within 20 s is hung.
fn get(port: u16, target: &str) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(s, "GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    if let Err(e) = s.read_to_end(&mut raw) {
        panic!("GET {target}: no complete answer ({e}); got {raw:?}");
    }
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("GET {target}: no head in {raw:?}"));
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("GET {target}: bad status line in {head:?}"));
    (status, raw[split + 4..].to_vec())
}

/// DIR/www with `inside.bin`, a link to it, and links to a file and a folder outside DIR.
fn layout() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let (www, outside) = (dir.path().join("www"), dir.path().join("outside"));
    std::fs::create_dir_all(www.join("sub")).unwrap();
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(www.join("inside.bin"), b"inside").unwrap();
    std::fs::write(outside.join("secret.txt"), b"secret").unwrap();
    std::fs::write(dir.path().join("top.txt"), b"top").unwrap();
    symlink(outside.join("secret.txt"), www.join("secret-link")).unwrap();
    symlink(&outside, www.join("outside-dir")).unwrap();
    symlink("../inside.bin", www.join("sub/back-inside")).unwrap();
    symlink("inside.bin", www.join("inside-link")).unwrap();
    dir
}

#[test]
fn symlinks_out_of_the_directory_are_refused_with_403() {
    let dir = layout();
    let server = serve(&dir.path().join("www"));
    for target in ["/secret-link", "/outside-dir/secret.txt", "/outside-dir/"] {
        let (status, body) = get(server.port, target);
        assert_eq!(status, 403, "{target}: {}", String::from_utf8_lossy(&body));
        assert!(!body.windows(6).any(|w| w == b"secret"), "{target}");
    }
}

#[test]
fn dot_dot_traversal_is_refused() {
    let dir = layout();
    let server = serve(&dir.path().join("www"));
    for target in ["/../top.txt", "/sub/../../top.txt", "/%2e%2e/top.txt"] {
        let (status, body) = get(server.port, target);
        assert_eq!(status, 400, "{target}");
        assert!(!body.starts_with(b"top"), "{target}");
    }
}

#[test]
fn symlinks_that_stay_inside_the_directory_still_work() {
    let dir = layout();
    let server = serve(&dir.path().join("www"));
    assert_eq!(get(server.port, "/inside-link"), (200, b"inside".to_vec()));
    assert_eq!(
        get(server.port, "/sub/back-inside"),
        (200, b"inside".to_vec())
    );
    assert_eq!(get(server.port, "/inside.bin"), (200, b"inside".to_vec()));
}

#[test]
fn a_fifo_is_refused_at_once_and_sigterm_still_stops_the_server() {
    let dir = layout();
    let www = dir.path().join("www");
    nix::unistd::mkfifo(&www.join("pipe"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    let mut server = serve(&www);
    // Twice: a request blocked on the FIFO would also hold a worker thread.
    for _ in 0..2 {
        let (status, _) = get(server.port, "/pipe");
        assert_eq!(status, 404);
    }
    // The server still answers other requests.
    assert_eq!(get(server.port, "/inside.bin"), (200, b"inside".to_vec()));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    // Stopping is not timed for speed: 20 s only tells "stops" from "hangs".
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the server ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
    let mut rest = String::new();
    server.stdout.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("GET /pipe -> 404"), "{rest}");
    assert!(rest.ends_with("stopping on SIGTERM\n"), "{rest}");
}
