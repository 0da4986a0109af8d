//! HTTPS: the artifact server over rustls (`--tls-cert/--tls-key`) and the downloader with a CA
//! file, certificates made here with `rcgen`: a resume over TLS after a cut, a wrong or missing
//! CA, a certificate for another name and a plain-HTTP server are each a named error that
//! keeps the partial file; curl (`--cacert`) checks our TLS server independently, and `hil ota`
//! commits an https:// manifest with `ca_file` and refuses one with the wrong CA without
//! touching the ECU.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Bench, submit, text};
use ecu_sim::image::Behaviour;
use hil::artifact::{ArtifactEvent, ArtifactServer, FaultKind, Faults, ServerTls};
use hil::download::{
    DownloadConfig, DownloadError, DownloadEvent, DownloadReport, TlsFailure, download,
};
use rand::{RngCore as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc::UnboundedReceiver;

const LEN: usize = 200 * 1024;
const CUT: u64 = 50_000;

/// A CA and a server certificate it signed for `names` (IP addresses become IP SANs), as PEM
/// files in `dir`: `PREFIX-ca.pem`, `PREFIX-cert.pem`, `PREFIX-key.pem`.
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn pki(dir: &Path, prefix: &str, names: &[&str]) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("{prefix} test ca"));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "artifact server");
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let out = Pki {
        ca: dir.join(format!("{prefix}-ca.pem")),
        cert: dir.join(format!("{prefix}-cert.pem")),
        key: dir.join(format!("{prefix}-key.pem")),
    };
    std::fs::write(&out.ca, ca.pem()).unwrap();
    std::fs::write(&out.cert, cert.pem()).unwrap();
    std::fs::write(&out.key, key.serialize_pem()).unwrap();
    out
}

fn artifact(len: usize, seed: u64) -> Vec<u8> {
    let mut data = vec![0u8; len];
    ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut data);
    data
}

fn sha(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

fn fast(ca_file: Option<&Path>) -> DownloadConfig {
    DownloadConfig {
        retries: 3,
        backoff_base_ms: 10,
        backoff_max_ms: 40,
        jitter_seed: 1,
        idle_timeout_ms: 1_000,
        connect_timeout_ms: 2_000,
        ca_file: ca_file.map(Path::to_path_buf),
        ..DownloadConfig::default()
    }
}

/// An HTTPS server for `www/a.bin` with the `good` PKI (for 127.0.0.1 and localhost), and a
/// second, unrelated CA (`other`).
struct Fixture {
    dir: tempfile::TempDir,
    server: ArtifactServer,
    events: UnboundedReceiver<ArtifactEvent>,
    data: Vec<u8>,
    good: Pki,
    other: Pki,
}

impl Fixture {
    async fn new(faults: Faults) -> Fixture {
        Fixture::with_names(faults, &["127.0.0.1", "localhost"]).await
    }

    async fn with_names(faults: Faults, names: &[&str]) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let data = artifact(LEN, 7);
        std::fs::create_dir(dir.path().join("www")).unwrap();
        std::fs::write(dir.path().join("www/a.bin"), &data).unwrap();
        let good = pki(dir.path(), "good", names);
        let other = pki(dir.path(), "other", &["127.0.0.1"]);
        let tls = ServerTls::from_pem_files(&good.cert, &good.key).unwrap();
        let (server, events) =
            ArtifactServer::bind_with("127.0.0.1:0", dir.path().join("www"), faults, Some(tls))
                .await
                .unwrap();
        Fixture {
            dir,
            server,
            events,
            data,
            good,
            other,
        }
    }

    fn dest(&self) -> PathBuf {
        self.dir.path().join("a.bin")
    }

    async fn get(
        &self,
        url: &str,
        config: &DownloadConfig,
    ) -> (Result<DownloadReport, DownloadError>, Vec<DownloadEvent>) {
        let mut seen = Vec::new();
        let r = download(
            url,
            &self.dest(),
            LEN as u64,
            &sha(&self.data),
            config,
            |e: &DownloadEvent| seen.push(e.clone()),
        )
        .await;
        (r, seen)
    }

    fn drain(&mut self) -> Vec<ArtifactEvent> {
        let mut out = Vec::new();
        while let Ok(e) = self.events.try_recv() {
            out.push(e);
        }
        out
    }
}

fn req(range: Option<&str>, status: u16) -> ArtifactEvent {
    ArtifactEvent::Request {
        method: "GET".into(),
        path: "/a.bin".into(),
        range: range.map(str::to_string),
        status,
    }
}

#[tokio::test]
async fn an_https_download_resumes_after_a_cut_at_n_bytes() {
    let mut f = Fixture::new(Faults {
        close_after_bytes: Some(CUT),
        ..Faults::default()
    })
    .await;
    let url = f.server.url("a.bin");
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let (r, events) = f.get(&url, &fast(Some(&f.good.ca))).await;
    let report = r.unwrap();
    assert_eq!(std::fs::read(f.dest()).unwrap(), f.data);
    assert_eq!(report.requests, 2);
    assert!(!report.restarted_from_zero);
    // Each byte over the wire once: the resume asked for exactly the rest.
    assert_eq!(report.bytes_received, LEN as u64);
    assert_eq!(f.server.body_bytes_sent(), LEN as u64);
    assert!(events.contains(&DownloadEvent::Started {
        offset: CUT,
        resumed: true
    }));
    let retried: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            DownloadEvent::Retrying { reason, .. } => Some(reason.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        retried,
        [format!("the connection closed at byte {CUT} of {LEN}").as_str()]
    );
    let range = format!("bytes={CUT}-");
    assert_eq!(
        f.drain(),
        [
            req(None, 200),
            ArtifactEvent::FaultFired {
                kind: FaultKind::CloseAfter,
                offset: CUT
            },
            req(Some(&range), 206)
        ]
    );
    // localhost is in the certificate too.
    std::fs::remove_file(f.dest()).unwrap();
    f.server.set_faults(Faults::default());
    let port = f.server.local_addr().port();
    let (r, _) = f
        .get(
            &format!("https://localhost:{port}/a.bin"),
            &fast(Some(&f.good.ca)),
        )
        .await;
    assert_eq!(r.unwrap().bytes, LEN as u64);
}

/// A wrong CA: a named error at the first attempt (no retries: it will not get better), the
/// partial file untouched, the server saw a refused handshake and no request.
#[tokio::test]
async fn a_wrong_ca_is_a_named_tls_error_and_the_partial_file_is_kept() {
    let mut f = Fixture::new(Faults::default()).await;
    std::fs::write(f.dest(), &f.data[..CUT as usize]).unwrap();
    let url = f.server.url("a.bin");
    let (r, events) = f.get(&url, &fast(Some(&f.other.ca))).await;
    let e = r.unwrap_err();
    let port = f.server.local_addr().port();
    assert!(
        matches!(&e, DownloadError::Tls { host, failure: TlsFailure::UnknownCa } if *host == format!("127.0.0.1:{port}")),
        "{e:?}"
    );
    assert!(
        e.to_string().starts_with(&format!(
            "tls handshake with 127.0.0.1:{port} failed: unknown certificate authority"
        )),
        "{e}"
    );
    assert!(!e.is_retryable());
    assert_eq!(
        events,
        [DownloadEvent::Started {
            offset: CUT,
            resumed: true
        }]
    );
    assert_eq!(std::fs::read(f.dest()).unwrap(), f.data[..CUT as usize]);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let seen = f.drain();
    assert!(
        matches!(&seen[..], [ArtifactEvent::TlsFailed { reason }] if reason.contains("UnknownCA")),
        "{seen:?}"
    );

    // Without a CA file the roots are Mozilla's: a private CA is just as unknown.
    let (r, _) = f.get(&url, &fast(None)).await;
    assert!(
        matches!(
            r,
            Err(DownloadError::Tls {
                failure: TlsFailure::UnknownCa,
                ..
            })
        ),
        "{r:?}"
    );

    // The right CA resumes from the kept bytes.
    let (r, _) = f.get(&url, &fast(Some(&f.good.ca))).await;
    let report = r.unwrap();
    assert_eq!(
        (report.resumed_from, report.bytes_received),
        (CUT, LEN as u64 - CUT)
    );
    assert_eq!(std::fs::read(f.dest()).unwrap(), f.data);
}

#[tokio::test]
async fn a_certificate_for_another_name_is_a_bad_certificate() {
    let f = Fixture::with_names(Faults::default(), &["artifacts.example"]).await;
    let (r, _) = f.get(&f.server.url("a.bin"), &fast(Some(&f.good.ca))).await;
    let e = r.unwrap_err();
    assert!(
        matches!(&e, DownloadError::Tls { failure: TlsFailure::BadCertificate(why), .. } if why.contains("NotValidForName")),
        "{e:?}"
    );
    assert!(!e.is_retryable());
    assert!(!f.dest().exists() || std::fs::read(f.dest()).unwrap().is_empty());
}

#[tokio::test]
async fn https_to_a_plain_http_server_is_a_handshake_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.bin"), b"x").unwrap();
    let (server, _events) = ArtifactServer::bind("127.0.0.1:0", dir.path(), Faults::default())
        .await
        .unwrap();
    let ca = pki(dir.path(), "ca", &["127.0.0.1"]).ca;
    let url = server.url("a.bin").replace("http://", "https://");
    let e = download(
        &url,
        &dir.path().join("dl"),
        1,
        &sha(b"x"),
        &fast(Some(&ca)),
        |_: &DownloadEvent| {},
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            &e,
            DownloadError::Tls {
                failure: TlsFailure::Handshake(_),
                ..
            }
        ),
        "{e:?}"
    );
    assert!(!e.is_retryable());
}

#[tokio::test]
async fn a_bad_ca_file_is_named_before_any_request() {
    let mut f = Fixture::new(Faults::default()).await;
    let garbage = f.dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    for (path, want) in [
        (garbage.clone(), "no CERTIFICATE in the file"),
        (f.dir.path().join("missing.pem"), "No such file"),
    ] {
        let (r, events) = f.get(&f.server.url("a.bin"), &fast(Some(&path))).await;
        let e = r.unwrap_err();
        assert!(
            matches!(&e, DownloadError::CaFile { path: p, .. } if *p == path),
            "{e:?}"
        );
        assert!(e.to_string().contains(want), "{e}");
        assert!(!e.is_retryable());
        assert!(events.is_empty());
    }
    assert_eq!(f.drain(), []);
}

/// curl, an independent TLS client, trusts our server with `--cacert` and gets ranges.
#[tokio::test]
async fn interop_curl_fetches_ranges_over_https() {
    assert!(
        Path::new("/usr/bin/curl").exists(),
        "/usr/bin/curl is missing: run ci/install.sh"
    );
    let mut f = Fixture::new(Faults::default()).await;
    let url = f.server.url("a.bin");
    let ca = f.good.ca.clone();
    let fetch = |args: Vec<String>| {
        let ca = ca.clone();
        tokio::task::spawn_blocking(move || {
            Command::new("/usr/bin/curl")
                .arg("--cacert")
                .arg(ca)
                .args(args)
                .output()
                .unwrap()
        })
    };
    let out = fetch(vec![
        "-sS".into(),
        "-r".into(),
        "1000-1999".into(),
        url.clone(),
    ])
    .await
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, f.data[1000..2000]);
    let out = fetch(vec!["-sS".into(), url.clone()]).await.unwrap();
    assert_eq!(out.stdout, f.data);
    assert_eq!(
        f.drain(),
        [req(Some("bytes=1000-1999"), 206), req(None, 200)]
    );
    // curl without our CA refuses the server (exit 60: peer certificate cannot be authenticated).
    let out = tokio::task::spawn_blocking(move || {
        Command::new("/usr/bin/curl")
            .args(["-sS", &url])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(60), "{out:?}");
}

#[test]
fn cli_serve_artifacts_over_tls_and_its_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path(), "good", &["127.0.0.1"]);
    std::fs::create_dir(dir.path().join("www")).unwrap();
    let hil = || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hil"));
        cmd.arg("serve-artifacts")
            .arg(dir.path().join("www"))
            .args(["--addr", "127.0.0.1:0"]);
        cmd
    };
    // Key without certificate, a key file that is no key: exit 2 with the file named.
    let o = hil().arg("--tls-key").arg(&p.key).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--tls-cert"), "{}", text(&o));
    let o = hil()
        .arg("--tls-cert")
        .arg(&p.cert)
        .arg("--tls-key")
        .arg(&p.ca)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).starts_with(&format!("error: tls key {}: ", p.ca.display())),
        "{}",
        text(&o)
    );
}

/// `hil ota` end to end over HTTPS: the manifest's `ca_file` (relative to the manifest) makes
/// the job commit; a manifest whose CA does not match fails its job with the named TLS error,
/// and the ECU keeps running the committed image.
#[test]
fn ota_commits_an_https_manifest_and_a_wrong_ca_fails_without_touching_the_ecu() {
    let certs = tempfile::tempdir().unwrap();
    let good = pki(certs.path(), "good", &["127.0.0.1"]);
    let other = pki(certs.path(), "other", &["127.0.0.1"]);
    let (cert, key) = (good.cert.to_str().unwrap(), good.key.to_str().unwrap());
    let b = Bench::start("max", &["--tls-cert", cert, "--tls-key", key]);
    std::fs::copy(&good.ca, b.dir.path().join("ca.pem")).unwrap();
    std::fs::copy(&other.ca, b.dir.path().join("other-ca.pem")).unwrap();
    let https = |manifest: &Path, ca: &str| {
        let text = std::fs::read_to_string(manifest).unwrap();
        let text = text
            .replace("url: http://", "url: https://")
            .replace("  size:", &format!("  ca_file: {ca}\n  size:"));
        std::fs::write(manifest, text).unwrap();
    };
    let v2 = b.publish(
        2,
        Behaviour::Healthy {
            confirm_after_ms: 200,
        },
        40_000,
    );
    https(&v2, "ca.pem");
    assert_eq!(submit(&b, &v2), "job-0001");
    let o = b.hil(&["ota", "run", "--confirm-timeout", "3"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("job-0001: COMMITTED v2.0.0"), "{out}");

    let v3 = b.publish(
        3,
        Behaviour::Healthy {
            confirm_after_ms: 200,
        },
        30_000,
    );
    https(&v3, "other-ca.pem");
    assert_eq!(submit(&b, &v3), "job-0002");
    let o = b.hil(&["ota", "run", "--confirm-timeout", "3"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("failed: unknown certificate authority"),
        "no named tls error in:\n{out}"
    );
    assert!(!out.contains("job-0002: COMMITTED"), "{out}");
    let o = b.hil(&["ota", "status", "--json"]);
    let jobs: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(jobs[0]["state"]["state"], "committed");
    assert_eq!(jobs[1]["state"]["state"], "failed", "{jobs:#}");
    // Nothing was lost: the ECU still runs the committed v2, confirmed.
    let (status, slot) = b.ecu_state();
    let v2 = Some(ecu_sim::image::Version::new(2, 0, 0));
    assert_eq!((status.version, slot.version), (v2, v2), "{status:?}");
    assert!(status.confirmed && !status.on_probation, "{status:?}");
}
