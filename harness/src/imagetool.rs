//! `hil keys generate` and `hil image build`: test keys and test images by hand.
//!
//! Keys are of every type imgtool makes (`--type ed25519|ecdsa-p256|ecdsa-p384|rsa-2048|
//! rsa-3072|x25519`): the private key as PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`, what
//! `imgtool keygen -t TYPE` writes and `imgtool sign -k` reads), the public key as
//! SubjectPublicKeyInfo PEM (what `imgtool getpub -e pem` prints and `ecu-sim --key` reads).
//! Images are MCUboot images with the simulator's behaviour TLV, hashed and signed as imgtool
//! does for the key's type; the same arguments give the same bytes. `--encrypt KEY` encrypts
//! them as `imgtool sign --encrypt` does (`ecu_sim::image::encrypt_image`), and `--type
//! aes-kw-128|aes-kw-256` makes the AES-KW key files imgtool does not make.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use ecu_sim::image::{
    AesKeySize, Behaviour, EncKeyError, EncPublicKey, EncTlvKind, EncryptOptions, ImageBuilder,
    ImageError, ImageKey, KeyKind, KwKey, PrivateKey, SignOptions, SignatureKind, Version, dev_key,
    dev_private_key,
};

/// Why a key or an image could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("{path}: exists (use --force to overwrite)")]
    Exists { path: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a private key imgtool writes: {source}")]
    BadKey { path: PathBuf, source: ImageError },
    #[error("signing with {path}: {source}")]
    Sign { path: PathBuf, source: ImageError },
    #[error("{path}: not a key images are encrypted for: {source}")]
    BadEncKey { path: PathBuf, source: EncKeyError },
    #[error("encrypting for {path}: {source}")]
    Encrypt { path: PathBuf, source: ImageError },
    /// A manifest URL `hil ota submit` would refuse (checked before anything is written).
    #[error("--manifest-url {url:?} is not a usable url: {source}")]
    BadUrl {
        url: String,
        source: crate::http::UrlError,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ToolError + '_ {
    move |source| ToolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where a key comes from.
#[derive(Clone, Debug)]
pub enum KeySource {
    /// Fresh from the operating system's randomness.
    Random,
    /// The simulator's development key of this name (`ecu_sim::image::dev_private_key`; for
    /// ed25519 `dev_key`, the key `ecu-sim --dev-key NAME` trusts).
    Dev(String),
}

/// A generated key pair on disk.
#[derive(Clone, Debug)]
pub struct KeyFiles {
    pub private: PathBuf,
    pub public: PathBuf,
    pub kind: KeyKind,
    /// SHA-256 of the public key's MCUboot bytes (what `imgtool getpubhash` prints and a
    /// SHA-256 image's KEYHASH TLV holds), hex.
    pub keyhash: String,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Write `NAME.pem` (private, mode 0600) and `NAME.pub.pem` into `dir`.
pub fn generate_key(
    name: &str,
    dir: &Path,
    kind: KeyKind,
    source: &KeySource,
    force: bool,
) -> Result<KeyFiles, ToolError> {
    let private = dir.join(format!("{name}.pem"));
    let public = dir.join(format!("{name}.pub.pem"));
    for p in [&private, &public] {
        if p.exists() && !force {
            return Err(ToolError::Exists { path: p.clone() });
        }
    }
    let key = match source {
        KeySource::Random => PrivateKey::generate(kind, &mut rand::rngs::OsRng),
        KeySource::Dev(n) => dev_private_key(kind, n),
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let private_pem = key.to_pem();
    let public_pem = key.public_pem();
    write_private(&private, private_pem.as_bytes())?;
    std::fs::write(&public, public_pem).map_err(io(&public))?;
    Ok(KeyFiles {
        private,
        public,
        kind,
        keyhash: hex(&key.public_hash_sha256()),
    })
}

/// A key type `hil keys generate --type` makes: a key imgtool makes, or an AES-KW key, which
/// imgtool does not make (MCUboot keeps its test ones as base64 files, `enc-aes128kw.b64`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyType {
    Key(KeyKind),
    /// `aes-kw-128` or `aes-kw-256`.
    AesKw(AesKeySize),
}

impl std::fmt::Display for KeyType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyType::Key(k) => write!(f, "{k}"),
            KeyType::AesKw(a) => write!(f, "aes-kw-{}", a.bits()),
        }
    }
}

/// An unknown `--type`.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error(
    "unknown key type {0:?} (expected ed25519, ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072, x25519, aes-kw-128 or aes-kw-256)"
)]
pub struct ParseKeyTypeError(pub String);

impl std::str::FromStr for KeyType {
    type Err = ParseKeyTypeError;

    fn from_str(s: &str) -> Result<Self, ParseKeyTypeError> {
        match s {
            "aes-kw-128" => Ok(KeyType::AesKw(AesKeySize::Aes128)),
            "aes-kw-256" => Ok(KeyType::AesKw(AesKeySize::Aes256)),
            _ => s
                .parse()
                .map(KeyType::Key)
                .map_err(|_| ParseKeyTypeError(s.to_string())),
        }
    }
}

/// Write `NAME.b64` into `dir`: a random AES key-encryption key of `size`, base64 as MCUboot's
/// `enc-aes128kw.b64` (mode 0600); the ECU's `--enc-key` and `hil image build --encrypt` both
/// take this one file (the key is symmetric).
pub fn generate_kw_key(
    name: &str,
    dir: &Path,
    size: AesKeySize,
    force: bool,
) -> Result<PathBuf, ToolError> {
    let path = dir.join(format!("{name}.b64"));
    if path.exists() && !force {
        return Err(ToolError::Exists { path });
    }
    let key = ImageKey::generate(size, &mut rand::rngs::OsRng);
    let kw = KwKey::from_bytes(key.as_bytes()).expect("16 or 32 bytes");
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    write_private(&path, kw.to_base64().as_bytes())?;
    Ok(path)
}

/// Write a secret file, mode 0600 (also when it existed).
fn write_private(path: &Path, contents: &[u8]) -> Result<(), ToolError> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(path).map_err(io(path))?;
    // An existing file (--force) keeps its mode on open: make it private either way.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io(path))?;
    }
    f.write_all(contents).map_err(io(path))
}

/// Read the key an image is encrypted for: a public key PEM (`imgtool getpub -e pem`), a
/// private one, or an AES-KW key file.
pub fn read_enc_key(path: &Path) -> Result<EncPublicKey, ToolError> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    EncPublicKey::from_file(&bytes).map_err(|source| ToolError::BadEncKey {
        path: path.to_path_buf(),
        source,
    })
}

/// Read a private key PEM (PKCS#8 as imgtool writes it; SEC1 and PKCS#1 too).
pub fn read_key(path: &Path) -> Result<PrivateKey, ToolError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    PrivateKey::from_pem(&text).map_err(|source| ToolError::BadKey {
        path: path.to_path_buf(),
        source,
    })
}

/// How to sign an image.
#[derive(Clone, Debug)]
pub enum Signer {
    /// A private key PEM of any signing type.
    Key(PathBuf),
    /// The simulator's ed25519 development key of this name.
    Dev(String),
    Unsigned,
}

/// What `hil image build` makes.
#[derive(Clone, Debug)]
pub struct ImageSpec {
    pub version: Version,
    pub size: usize,
    pub behaviour: Behaviour,
    pub security_counter: u32,
    pub signer: Signer,
    /// Hash and pure (imgtool's `--sha`, `--pure`); the default pairs the hash with the key.
    pub sign: SignOptions,
    /// Encrypt the image (imgtool's `--encrypt`).
    pub encrypt: Option<Encrypt>,
}

/// imgtool's `--encrypt KEY`, `--encrypt-keylen`, `--hmac-sha`.
#[derive(Clone, Debug)]
pub struct Encrypt {
    /// The key the image is encrypted for ([`read_enc_key`]).
    pub key: PathBuf,
    pub aes: AesKeySize,
    pub options: EncryptOptions,
}

/// A built image.
#[derive(Clone, Debug)]
pub struct Built {
    pub bytes: Vec<u8>,
    pub sha256: String,
    /// The image's KEYHASH TLV, hex (empty for unsigned images).
    pub keyhash: String,
    /// What signed it (`None`: unsigned).
    pub signature: Option<(SignatureKind, ecu_sim::image::HashAlg)>,
    /// How it is encrypted (`None`: not).
    pub encrypted: Option<(EncTlvKind, AesKeySize)>,
}

/// Build an image: the payload is a filler derived from the version, so the same arguments
/// give the same bytes — unless encrypted: then, as imgtool does, the AES key (and an ECIES
/// ephemeral key, an OAEP seed) are fresh from the operating system's randomness each time,
/// and the same arguments give the same plaintext.
pub fn build_image(spec: &ImageSpec) -> Result<Built, ToolError> {
    let recipient = match &spec.encrypt {
        Some(e) => Some((read_enc_key(&e.key)?, e)),
        None => None,
    };
    let mut built = build_plain(spec)?;
    if let Some((recipient, e)) = recipient {
        let bytes = ecu_sim::image::encrypt_image(
            &built.bytes,
            &recipient,
            e.options,
            &mut rand::rngs::OsRng,
        )
        .map_err(|source| ToolError::Encrypt {
            path: e.key.clone(),
            source,
        })?;
        let parsed = ecu_sim::image::parse(&bytes).expect("an image we just built parses");
        let kind = parsed
            .tlvs()
            .find_map(|t| EncTlvKind::from_tlv(t.kind))
            .expect("encrypt_image adds an ENC tlv");
        built.sha256 = hex(&Sha256::digest(&bytes));
        built.bytes = bytes;
        built.encrypted = Some((kind, e.aes));
    }
    Ok(built)
}

/// The image before encryption (flagged and padded for it when it will be encrypted).
fn build_plain(spec: &ImageSpec) -> Result<Built, ToolError> {
    let seed = Sha256::digest(spec.version.to_string().as_bytes());
    let mut payload = Vec::with_capacity(spec.size);
    let mut block = seed.to_vec();
    while payload.len() < spec.size {
        block = Sha256::digest(&block).to_vec();
        payload.extend_from_slice(&block);
    }
    payload.truncate(spec.size);
    let mut builder = ImageBuilder::new(spec.version, payload)
        .security_counter(spec.security_counter)
        .behaviour(spec.behaviour);
    if let Some(e) = &spec.encrypt {
        builder = builder.encrypted(e.aes);
    }
    let (key, path) = match &spec.signer {
        Signer::Unsigned => {
            let bytes = builder.build_unsigned();
            return Ok(Built {
                sha256: hex(&Sha256::digest(&bytes)),
                bytes,
                keyhash: String::new(),
                signature: None,
                encrypted: None,
            });
        }
        Signer::Dev(name) => (
            PrivateKey::Ed25519(dev_key(name)),
            PathBuf::from(format!("dev key {name}")),
        ),
        Signer::Key(path) => (read_key(path)?, path.clone()),
    };
    let sign_error = |source| ToolError::Sign {
        path: path.clone(),
        source,
    };
    let bytes = builder.sign_with(&key, &spec.sign).map_err(sign_error)?;
    let signature = SignatureKind::of(key.kind(), spec.sign.pure)
        .ok_or(ImageError::NotASigningKey { found: key.kind() })
        .map_err(sign_error)?;
    let hash = spec.sign.hash.unwrap_or(signature.hashes()[0]);
    let public = key
        .public()
        .ok_or(ImageError::NotASigningKey { found: key.kind() });
    let keyhash = hex(&public.map_err(sign_error)?.keyhash(hash));
    Ok(Built {
        sha256: hex(&Sha256::digest(&bytes)),
        bytes,
        keyhash,
        signature: Some((signature, hash)),
        encrypted: None,
    })
}

/// Write the image to `out`, and with `manifest_url` its OTA manifest next to it (`out` with
/// `.yaml`); refuses to overwrite either without `force`, and a URL the manifest parser would
/// refuse, before writing anything. Returns the manifest's path.
pub fn write_image(
    built: &Built,
    version: Version,
    out: &Path,
    manifest_url: Option<&str>,
    force: bool,
) -> Result<Option<PathBuf>, ToolError> {
    if let Some(url) = manifest_url
        && let Err(source) = crate::http::parse_url(url)
    {
        return Err(ToolError::BadUrl {
            url: url.to_string(),
            source,
        });
    }
    let manifest_path = manifest_url.map(|_| out.with_extension("yaml"));
    if manifest_path.as_deref() == Some(out) {
        return Err(ToolError::Io {
            path: out.to_path_buf(),
            source: std::io::Error::other("the image and its manifest would be the same file"),
        });
    }
    for p in std::iter::once(out).chain(manifest_path.as_deref()) {
        if p.exists() && !force {
            return Err(ToolError::Exists {
                path: p.to_path_buf(),
            });
        }
    }
    std::fs::write(out, &built.bytes).map_err(io(out))?;
    if let (Some(path), Some(url)) = (&manifest_path, manifest_url) {
        std::fs::write(path, manifest(built, version, url)).map_err(io(path))?;
    }
    Ok(manifest_path)
}

/// The OTA manifest (`hil ota submit`) for `built` served at `url`.
pub fn manifest(built: &Built, version: Version, url: &str) -> String {
    // A single-quoted YAML scalar: any URL stays one string.
    let url = format!("'{}'", url.replace('\'', "''"));
    let mut m = format!(
        "artifact:\n  url: {url}\n  size: {}\n  sha256: {}\nversion: {version}\ntarget:\n  transport: doip\n  host: 127.0.0.1\n  port: 13400\n",
        built.bytes.len(),
        built.sha256
    );
    if !built.keyhash.is_empty() {
        m.push_str(&format!("key_id: {}\n", &built.keyhash[..16]));
    }
    m
}
