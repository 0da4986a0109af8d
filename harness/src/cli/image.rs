//! `hil keys generate` and `hil image build`: test signing keys and MCUboot test images.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};
use ecu_sim::image::{
    AesKeySize, Behaviour, EncryptOptions, HashAlg, KeyFormat, SignOptions, Version,
};

use crate::exit;
use crate::imagetool::{self, Encrypt, ImageSpec, KeySource, KeyType, Signer};

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Write NAME.pem (PKCS#8 private key, mode 0600) and NAME.pub.pem (public key) into DIR.
    Generate {
        #[arg(long, default_value = "oem")]
        name: String,
        /// Key type, as `imgtool keygen -t`: ed25519, ecdsa-p256, ecdsa-p384, rsa-2048,
        /// rsa-3072, x25519 (x25519 is an encryption key: it signs nothing; images are also
        /// encrypted for ecdsa-p256 and rsa-2048 keys), or aes-kw-128 / aes-kw-256: an AES
        /// key-encryption key, written as NAME.b64 alone (base64, as MCUboot's enc-aes128kw.b64).
        #[arg(long = "type", value_name = "TYPE", default_value = "ed25519")]
        kind: KeyType,
        #[arg(long, value_name = "DIR", default_value = ".")]
        out: PathBuf,
        /// The simulator's development key of this name instead of a random one.
        #[arg(long, value_name = "NAME")]
        dev: Option<String>,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum BehaviourArg {
    Healthy,
    NeverConfirm,
    Crash,
    Hang,
}

/// imgtool's `--sha`.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum ShaArg {
    #[value(name = "256")]
    Sha256,
    #[value(name = "384")]
    Sha384,
    #[value(name = "512")]
    Sha512,
}

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Build a signed (or unsigned) image; prints its size, key hash and SHA-256.
    Build(BuildArgs),
}

#[derive(clap::Args, Debug)]
pub struct BuildArgs {
    #[arg(long)]
    version: Version,
    /// Payload bytes (deterministic filler derived from the version).
    #[arg(long, default_value_t = 32 * 1024)]
    size: usize,
    #[arg(long, value_enum, default_value_t = BehaviourArg::Healthy)]
    behaviour: BehaviourArg,
    /// Healthy images confirm themselves this long after booting.
    #[arg(long, default_value_t = 500)]
    confirm_after_ms: u32,
    /// Hanging images are reset by the watchdog after this long.
    #[arg(long, default_value_t = 1000)]
    watchdog_ms: u32,
    /// Sign with this private key PEM of any signing type (`hil keys generate`,
    /// `imgtool keygen`).
    #[arg(long, value_name = "PEM", conflicts_with_all = ["dev_key", "unsigned"])]
    key: Option<PathBuf>,
    /// Sign with the simulator's development key of this name (default "oem").
    #[arg(long, value_name = "NAME", conflicts_with = "unsigned")]
    dev_key: Option<String>,
    /// No signature (hash only).
    #[arg(long)]
    unsigned: bool,
    /// Image hash, as `imgtool sign --sha` (default: what imgtool pairs with the key: 384 for
    /// ecdsa-p384, 512 with --pure, 256 otherwise; ed25519 also takes 512).
    #[arg(long, value_enum)]
    sha: Option<ShaArg>,
    /// Sign the image itself rather than its hash (ed25519 only), as `imgtool sign --pure`.
    #[arg(long, conflicts_with = "unsigned")]
    pure: bool,
    /// Security counter (default: the major version).
    #[arg(long)]
    security_counter: Option<u32>,
    /// Encrypt the image for this key, as `imgtool sign --encrypt`: an X25519, EC P-256 or
    /// RSA-2048 public key PEM (`imgtool getpub -e pem`; a private key PEM works too) or an
    /// AES-KW key file (`hil keys generate --type aes-kw-128`). A fresh AES key each build.
    #[arg(long, value_name = "KEY")]
    encrypt: Option<PathBuf>,
    /// AES-256 rather than AES-128 (imgtool's `--encrypt-keylen 256`).
    #[arg(long, requires = "encrypt")]
    aes256: bool,
    /// ECIES-X25519 with HKDF and HMAC SHA-512: the ENC_X25519_SHA512 TLV (imgtool's
    /// `--hmac-sha 512`; X25519 keys only).
    #[arg(long, requires = "encrypt")]
    hmac_sha512: bool,
    #[arg(long)]
    out: PathBuf,
    /// Also write OUT with .yaml: an OTA manifest for the image served at this URL.
    #[arg(long, value_name = "URL")]
    manifest_url: Option<String>,
    /// Overwrite OUT.
    #[arg(long)]
    force: bool,
}

/// Exit 0 written, 2 a bad argument or a file that cannot be read or written.
pub fn keys(command: &KeysCommand) -> ExitCode {
    let KeysCommand::Generate {
        name,
        kind,
        out,
        dev,
        force,
    } = command;
    let kind = match kind {
        KeyType::Key(k) => *k,
        KeyType::AesKw(size) => {
            if dev.is_some() {
                return exit::error(
                    exit::INVALID,
                    "--dev: there are no development AES-KW keys (random ones only)",
                );
            }
            return match imagetool::generate_kw_key(name, out, *size, *force) {
                Ok(path) => {
                    println!("{} aes-kw-{}", path.display(), size.bits());
                    exit::OK.into()
                }
                Err(e) => exit::error(exit::INVALID, e),
            };
        }
    };
    let source = dev.clone().map_or(KeySource::Random, KeySource::Dev);
    match imagetool::generate_key(name, out, kind, &source, *force) {
        Ok(k) => {
            println!(
                "{} {} {} keyhash {}",
                k.private.display(),
                k.public.display(),
                k.kind,
                k.keyhash
            );
            exit::OK.into()
        }
        Err(e) => exit::error(exit::INVALID, e),
    }
}

/// Exit 0 written, 2 a bad argument or a file that cannot be read or written.
pub fn image(command: &ImageCommand) -> ExitCode {
    let ImageCommand::Build(a) = command;
    let signer = match (&a.key, &a.dev_key, a.unsigned) {
        (Some(k), _, _) => Signer::Key(k.clone()),
        (_, _, true) => Signer::Unsigned,
        (_, d, _) => Signer::Dev(d.clone().unwrap_or_else(|| "oem".into())),
    };
    let spec = ImageSpec {
        version: a.version,
        size: a.size,
        behaviour: match a.behaviour {
            BehaviourArg::Healthy => Behaviour::Healthy {
                confirm_after_ms: a.confirm_after_ms,
            },
            BehaviourArg::NeverConfirm => Behaviour::NeverConfirm,
            BehaviourArg::Crash => Behaviour::CrashOnBoot,
            BehaviourArg::Hang => Behaviour::Hang {
                watchdog_ms: a.watchdog_ms,
            },
        },
        security_counter: a.security_counter.unwrap_or(u32::from(a.version.major)),
        signer,
        sign: SignOptions {
            hash: a.sha.map(|s| match s {
                ShaArg::Sha256 => HashAlg::Sha256,
                ShaArg::Sha384 => HashAlg::Sha384,
                ShaArg::Sha512 => HashAlg::Sha512,
            }),
            pure: a.pure,
            key_format: KeyFormat::Hash,
        },
        encrypt: a.encrypt.as_ref().map(|key| Encrypt {
            key: key.clone(),
            aes: if a.aes256 {
                AesKeySize::Aes256
            } else {
                AesKeySize::Aes128
            },
            options: EncryptOptions {
                hmac_sha512: a.hmac_sha512,
            },
        }),
    };
    let built = match imagetool::build_image(&spec) {
        Ok(b) => b,
        Err(e) => return exit::error(exit::INVALID, e),
    };
    let manifest = match imagetool::write_image(
        &built,
        a.version,
        &a.out,
        a.manifest_url.as_deref(),
        a.force,
    ) {
        Ok(m) => m,
        Err(e) => return exit::error(exit::INVALID, e),
    };
    let key = match built.signature {
        None => "unsigned".to_string(),
        Some((signature, hash)) => {
            format!("key {} ({signature}, {hash})", &built.keyhash[..16])
        }
    };
    let encrypted = match built.encrypted {
        None => String::new(),
        Some((tlv, aes)) => format!(", encrypted {aes} ({tlv})"),
    };
    println!(
        "{}: {} bytes, v{}, counter {}, {key}{encrypted}, sha-256 {}",
        a.out.display(),
        built.bytes.len(),
        a.version,
        spec.security_counter,
        built.sha256
    );
    if let (Some(path), Some(url)) = (manifest, &a.manifest_url) {
        println!("{}: OTA manifest for {url}", path.display());
    }
    exit::OK.into()
}
