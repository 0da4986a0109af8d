//! Benchmark (not a timed test): downloading a 64 MiB artifact from `serve-artifacts`'
//! server (hyper) on loopback, over HTTP and HTTPS (rustls, a CA made with rcgen).
//!
//! `cargo bench -p hil --bench download` prints a markdown table: our downloader (reqwest,
//! streaming SHA-256, the partial file appended and `fdatasync`ed every 256 KiB as a job does,
//! and once at the end only) against `curl -o` on the same server, median of 3 runs each.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use hil::artifact::{ArtifactServer, Faults, ServerTls};
use hil::download::{DownloadConfig, DownloadEvent, download};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use sha2::{Digest, Sha256};

const LEN: usize = 64 * 1024 * 1024;
const RUNS: usize = 3;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn rate(d: Duration) -> String {
    format!(
        "{:.2} s ({:.0} MiB/s)",
        d.as_secs_f64(),
        LEN as f64 / 1048576.0 / d.as_secs_f64()
    )
}

/// A CA and a certificate for 127.0.0.1 in `dir`: (ca, cert, key) paths.
fn pki(dir: &Path) -> [std::path::PathBuf; 3] {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // Distinct names: OpenSSL (curl) takes a leaf whose issuer is its own subject as self-signed.
    ca.distinguished_name.push(DnType::CommonName, "bench ca");
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, "artifact server");
    let cert = leaf.signed_by(&key, &ca, &ca_key).unwrap();
    let paths = [
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    ];
    std::fs::write(&paths[0], ca.pem()).unwrap();
    std::fs::write(&paths[1], cert.pem()).unwrap();
    std::fs::write(&paths[2], key.serialize_pem()).unwrap();
    paths
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let www = dir.path().join("www");
    std::fs::create_dir(&www).unwrap();
    let data: Vec<u8> = (0..LEN).map(|i| (i * 31 + 7) as u8).collect();
    std::fs::write(www.join("a.bin"), &data).unwrap();
    let digest: [u8; 32] = Sha256::digest(&data).into();
    let [ca, cert, key] = pki(dir.path());
    let curl = Path::new("/usr/bin/curl").exists();
    println!(
        "| {} MiB on loopback | ours, fdatasync every 256 KiB | ours, fdatasync at the end | curl -o |",
        LEN >> 20
    );
    println!("|---|---|---|---|");
    for tls in [false, true] {
        let tls_config = tls.then(|| ServerTls::from_pem_files(&cert, &key).unwrap());
        let (server, _events) = runtime
            .block_on(ArtifactServer::bind_with(
                "127.0.0.1:0",
                &www,
                Faults::default(),
                tls_config,
            ))
            .unwrap();
        let url = server.url("a.bin");
        let dest = dir.path().join("dl.bin");
        let ours = |sync_every_bytes: u64| {
            let config = DownloadConfig {
                sync_every_bytes,
                ca_file: Some(ca.clone()),
                ..DownloadConfig::default()
            };
            median(
                (0..RUNS)
                    .map(|_| {
                        let _ = std::fs::remove_file(&dest);
                        let started = Instant::now();
                        let report = runtime
                            .block_on(download(
                                &url,
                                &dest,
                                LEN as u64,
                                &digest,
                                &config,
                                |_: &DownloadEvent| {},
                            ))
                            .unwrap();
                        assert_eq!(report.bytes, LEN as u64);
                        started.elapsed()
                    })
                    .collect(),
            )
        };
        let synced = ours(256 * 1024);
        let at_end = ours(u64::MAX);
        let by_curl = if curl {
            let runs = (0..RUNS)
                .map(|_| {
                    let _ = std::fs::remove_file(&dest);
                    let started = Instant::now();
                    let out = Command::new("/usr/bin/curl")
                        .args(["-sS", "--cacert"])
                        .arg(&ca)
                        .arg("-o")
                        .arg(&dest)
                        .arg(&url)
                        .status()
                        .unwrap();
                    assert!(out.success());
                    started.elapsed()
                })
                .collect();
            rate(median(runs))
        } else {
            "(no curl)".into()
        };
        let scheme = if tls {
            "https (rustls, TLS 1.3)"
        } else {
            "http"
        };
        println!(
            "| {scheme} | {} | {} | {by_curl} |",
            rate(synced),
            rate(at_end)
        );
    }
}
