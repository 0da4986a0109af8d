//! Keys: the public keys the bootloader trusts, the private keys images are signed with, in
//! every PEM form imgtool reads and writes, and the bytes MCUboot hashes into KEYHASH.

use ed25519_dalek::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _};
use pkcs8::der::asn1::ObjectIdentifier;
use pkcs8::der::pem::LineEnding;
use pkcs8::der::{Decode as _, Encode as _};
use pkcs8::{EncodePrivateKey as _, EncodePublicKey as _};
use rand_core::{CryptoRng, RngCore};
use rsa::pkcs1::{DecodeRsaPublicKey as _, EncodeRsaPublicKey as _};
use rsa::traits::PublicKeyParts as _;
use sha2::{Digest as _, Sha256, Sha384, Sha512};

use super::ImageError;

/// `id-Ed25519` (RFC 8410).
const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
/// `id-X25519` (RFC 8410).
pub(super) const OID_X25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.110");
/// `id-ecPublicKey` (RFC 5480).
const OID_EC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
/// `secp256r1` / P-256.
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
/// `secp384r1` / P-384.
const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
/// `rsaEncryption` (RFC 8017).
const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// An image hash algorithm: the hash TLV's type, and what KEYHASH is computed with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HashAlg {
    /// TLV `0x10`, 32 bytes.
    Sha256,
    /// TLV `0x11`, 48 bytes.
    Sha384,
    /// TLV `0x12`, 64 bytes.
    Sha512,
}

impl HashAlg {
    pub const ALL: [HashAlg; 3] = [HashAlg::Sha256, HashAlg::Sha384, HashAlg::Sha512];

    /// The TLV type holding an image hash of this algorithm.
    pub const fn tlv(self) -> u16 {
        match self {
            HashAlg::Sha256 => super::TLV_SHA256,
            HashAlg::Sha384 => super::TLV_SHA384,
            HashAlg::Sha512 => super::TLV_SHA512,
        }
    }

    /// The algorithm whose hash TLV has type `tlv`.
    pub const fn from_tlv(tlv: u16) -> Option<HashAlg> {
        match tlv {
            super::TLV_SHA256 => Some(HashAlg::Sha256),
            super::TLV_SHA384 => Some(HashAlg::Sha384),
            super::TLV_SHA512 => Some(HashAlg::Sha512),
            _ => None,
        }
    }

    /// Digest size in bytes.
    pub const fn digest_len(self) -> usize {
        match self {
            HashAlg::Sha256 => 32,
            HashAlg::Sha384 => 48,
            HashAlg::Sha512 => 64,
        }
    }

    /// The digest of `data`.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            HashAlg::Sha256 => Sha256::digest(data).to_vec(),
            HashAlg::Sha384 => Sha384::digest(data).to_vec(),
            HashAlg::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    /// `256`, `384` or `512`: imgtool's `--sha` value.
    pub const fn bits(self) -> u16 {
        match self {
            HashAlg::Sha256 => 256,
            HashAlg::Sha384 => 384,
            HashAlg::Sha512 => 512,
        }
    }
}

impl std::fmt::Display for HashAlg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha{}", self.bits())
    }
}

/// What a key is. The names are `hil keys generate --type` values and imgtool's `keygen -t`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeyKind {
    Ed25519,
    EcdsaP256,
    EcdsaP384,
    Rsa2048,
    Rsa3072,
    /// An encryption key (ECIES-X25519); it signs nothing.
    X25519,
}

impl KeyKind {
    pub const ALL: [KeyKind; 6] = [
        KeyKind::Ed25519,
        KeyKind::EcdsaP256,
        KeyKind::EcdsaP384,
        KeyKind::Rsa2048,
        KeyKind::Rsa3072,
        KeyKind::X25519,
    ];

    /// imgtool's `keygen -t` name: `ed25519`, `ecdsa-p256`, `ecdsa-p384`, `rsa-2048`,
    /// `rsa-3072`, `x25519`.
    pub const fn name(self) -> &'static str {
        match self {
            KeyKind::Ed25519 => "ed25519",
            KeyKind::EcdsaP256 => "ecdsa-p256",
            KeyKind::EcdsaP384 => "ecdsa-p384",
            KeyKind::Rsa2048 => "rsa-2048",
            KeyKind::Rsa3072 => "rsa-3072",
            KeyKind::X25519 => "x25519",
        }
    }

    /// "an ed25519 key", "an ECDSA P-256 key", "an RSA-2048 key", ...: for messages.
    pub const fn described(self) -> &'static str {
        match self {
            KeyKind::Ed25519 => "an ed25519 key",
            KeyKind::EcdsaP256 => "an ECDSA P-256 key",
            KeyKind::EcdsaP384 => "an ECDSA P-384 key",
            KeyKind::Rsa2048 => "an RSA-2048 key",
            KeyKind::Rsa3072 => "an RSA-3072 key",
            KeyKind::X25519 => "an X25519 key",
        }
    }

    /// The signature TLV type this key's signatures go in (`None` for X25519).
    pub const fn signature_tlv(self) -> Option<u16> {
        match self {
            KeyKind::Ed25519 => Some(super::TLV_ED25519),
            KeyKind::EcdsaP256 | KeyKind::EcdsaP384 => Some(super::TLV_ECDSA_SIG),
            KeyKind::Rsa2048 => Some(super::TLV_RSA2048_PSS),
            KeyKind::Rsa3072 => Some(super::TLV_RSA3072_PSS),
            KeyKind::X25519 => None,
        }
    }

    /// The image hashes MCUboot pairs with this key's signatures (over the digest), the
    /// first one imgtool's default (`--sha auto`): what imgtool 2.5.0's `ALLOWED_KEY_SHA`
    /// allows for a private key. Pure ed25519 takes [`HashAlg::Sha512`] only.
    pub const fn hashes(self) -> &'static [HashAlg] {
        match self {
            KeyKind::Ed25519 => &[HashAlg::Sha256, HashAlg::Sha512],
            KeyKind::EcdsaP256 | KeyKind::Rsa2048 | KeyKind::Rsa3072 => &[HashAlg::Sha256],
            KeyKind::EcdsaP384 => &[HashAlg::Sha384],
            KeyKind::X25519 => &[],
        }
    }
}

impl std::fmt::Display for KeyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown `--type`.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error(
    "unknown key type {0:?} (expected ed25519, ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072 or x25519)"
)]
pub struct ParseKeyKindError(pub String);

impl std::str::FromStr for KeyKind {
    type Err = ParseKeyKindError;

    fn from_str(s: &str) -> Result<Self, ParseKeyKindError> {
        KeyKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| ParseKeyKindError(s.to_string()))
    }
}

/// A public key a bootloader can trust: one of the signature keys MCUboot verifies with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublicKey {
    Ed25519(ed25519_dalek::VerifyingKey),
    EcdsaP256(p256::ecdsa::VerifyingKey),
    EcdsaP384(p384::ecdsa::VerifyingKey),
    /// 2048 or 3072 bits (checked when made).
    Rsa(rsa::RsaPublicKey),
}

impl From<ed25519_dalek::VerifyingKey> for PublicKey {
    fn from(k: ed25519_dalek::VerifyingKey) -> Self {
        PublicKey::Ed25519(k)
    }
}

fn rsa_kind(bits: usize) -> Result<KeyKind, ImageError> {
    match bits {
        2048 => Ok(KeyKind::Rsa2048),
        3072 => Ok(KeyKind::Rsa3072),
        bits => Err(ImageError::UnsupportedRsaSize { bits }),
    }
}

fn bad_der(kind: &'static str) -> impl FnOnce(String) -> ImageError {
    move |message| ImageError::BadKeyDer { kind, message }
}

/// The curve OID in an `id-ecPublicKey` algorithm identifier's parameters.
fn curve(alg: &spki::AlgorithmIdentifierRef<'_>) -> Result<ObjectIdentifier, ImageError> {
    alg.parameters_oid()
        .map_err(|e| bad_der("an ECDSA key")(format!("no curve OID: {e}")))
}

fn unknown_curve(oid: ObjectIdentifier) -> ImageError {
    ImageError::UnsupportedCurve {
        oid: oid.to_string(),
    }
}

fn unknown_algorithm(oid: ObjectIdentifier) -> ImageError {
    ImageError::UnknownKeyAlgorithm {
        oid: oid.to_string(),
    }
}

impl PublicKey {
    /// What the key is.
    pub fn kind(&self) -> KeyKind {
        match self {
            PublicKey::Ed25519(_) => KeyKind::Ed25519,
            PublicKey::EcdsaP256(_) => KeyKind::EcdsaP256,
            PublicKey::EcdsaP384(_) => KeyKind::EcdsaP384,
            PublicKey::Rsa(k) => {
                if k.size() * 8 == 3072 {
                    KeyKind::Rsa3072
                } else {
                    KeyKind::Rsa2048
                }
            }
        }
    }

    /// A DER SubjectPublicKeyInfo: ed25519, ECDSA P-256/P-384 or RSA 2048/3072 bits.
    pub fn from_spki_der(der: &[u8]) -> Result<PublicKey, ImageError> {
        let info = spki::SubjectPublicKeyInfoRef::from_der(der)
            .map_err(|e| bad_der("a public key")(e.to_string()))?;
        let oid = info.algorithm.oid;
        if oid == OID_ED25519 {
            ed25519_dalek::VerifyingKey::from_public_key_der(der)
                .map(PublicKey::Ed25519)
                .map_err(|e| bad_der("an ed25519 key")(e.to_string()))
        } else if oid == OID_EC {
            match curve(&info.algorithm)? {
                c if c == OID_P256 => p256::ecdsa::VerifyingKey::from_public_key_der(der)
                    .map(PublicKey::EcdsaP256)
                    .map_err(|e| bad_der("an ECDSA P-256 key")(e.to_string())),
                c if c == OID_P384 => p384::ecdsa::VerifyingKey::from_public_key_der(der)
                    .map(PublicKey::EcdsaP384)
                    .map_err(|e| bad_der("an ECDSA P-384 key")(e.to_string())),
                c => Err(unknown_curve(c)),
            }
        } else if oid == OID_RSA {
            let key = rsa::RsaPublicKey::from_public_key_der(der)
                .map_err(|e| bad_der("an RSA key")(e.to_string()))?;
            Self::rsa(key)
        } else if oid == OID_X25519 {
            Err(ImageError::NotASigningKey {
                found: KeyKind::X25519,
            })
        } else {
            Err(unknown_algorithm(oid))
        }
    }

    fn rsa(key: rsa::RsaPublicKey) -> Result<PublicKey, ImageError> {
        rsa_kind(key.size() * 8)?;
        Ok(PublicKey::Rsa(key))
    }

    /// A public key from a PEM: `-----BEGIN PUBLIC KEY-----` (what `imgtool getpub -e pem`
    /// prints for every key type), `-----BEGIN RSA PUBLIC KEY-----` (PKCS#1), or the public
    /// half of a private key PEM ([`PrivateKey::from_pem`]: what `imgtool keygen` writes).
    pub fn from_pem(pem: &str) -> Result<PublicKey, ImageError> {
        let (label, der) = pem_decode(pem)?;
        match label.as_str() {
            "PUBLIC KEY" => Self::from_spki_der(&der),
            "RSA PUBLIC KEY" => {
                let key = rsa::RsaPublicKey::from_pkcs1_der(&der)
                    .map_err(|e| bad_der("an RSA key")(e.to_string()))?;
                Self::rsa(key)
            }
            "PRIVATE KEY" | "EC PRIVATE KEY" | "RSA PRIVATE KEY" => {
                let private = PrivateKey::from_pem(pem)?;
                private.public().ok_or(ImageError::NotASigningKey {
                    found: private.kind(),
                })
            }
            _ => Err(ImageError::UnsupportedPem { label }),
        }
    }

    /// The bytes imgtool's `get_public_bytes()` returns and MCUboot embeds, hashes into
    /// KEYHASH and carries in PUBKEY: DER SubjectPublicKeyInfo for ed25519 and ECDSA (44, 91
    /// and 120 bytes), DER PKCS#1 `RSAPublicKey` for RSA (270 and 398 bytes).
    pub fn mcuboot_bytes(&self) -> Vec<u8> {
        let der = match self {
            PublicKey::Ed25519(k) => k.to_public_key_der().map(|d| d.into_vec()),
            PublicKey::EcdsaP256(k) => k.to_public_key_der().map(|d| d.into_vec()),
            PublicKey::EcdsaP384(k) => k.to_public_key_der().map(|d| d.into_vec()),
            PublicKey::Rsa(k) => return k.to_pkcs1_der().map(|d| d.into_vec()).unwrap_or_default(),
        };
        der.unwrap_or_default()
    }

    /// The KEYHASH TLV value of an image hashed with `alg`: `alg` of
    /// [`PublicKey::mcuboot_bytes`] (imgtool hashes the key with the image's hash algorithm;
    /// `imgtool getpubhash` prints the SHA-256 one).
    pub fn keyhash(&self, alg: HashAlg) -> Vec<u8> {
        alg.digest(&self.mcuboot_bytes())
    }

    /// SubjectPublicKeyInfo PEM, LF line endings: what `imgtool getpub -e pem` prints.
    pub fn to_pem(&self) -> String {
        let pem = match self {
            PublicKey::Ed25519(k) => k.to_public_key_pem(LineEnding::LF),
            PublicKey::EcdsaP256(k) => k.to_public_key_pem(LineEnding::LF),
            PublicKey::EcdsaP384(k) => k.to_public_key_pem(LineEnding::LF),
            PublicKey::Rsa(k) => k.to_public_key_pem(LineEnding::LF),
        };
        pem.unwrap_or_default()
    }
}

/// The label and DER of a PEM document.
fn pem_decode(pem: &str) -> Result<(String, Vec<u8>), ImageError> {
    let (label, der) =
        pkcs8::der::pem::decode_vec(pem.trim().as_bytes()).map_err(|e| ImageError::BadPem {
            message: e.to_string(),
        })?;
    Ok((label.to_string(), der))
}

/// A private key: a signing key, or an X25519 encryption key (which `hil keys generate`
/// writes and nothing here signs with).
#[derive(Clone)]
pub enum PrivateKey {
    Ed25519(ed25519_dalek::SigningKey),
    EcdsaP256(p256::ecdsa::SigningKey),
    EcdsaP384(p384::ecdsa::SigningKey),
    Rsa(Box<rsa::RsaPrivateKey>),
    /// The 32-byte X25519 private scalar as stored (clamped on use).
    X25519([u8; 32]),
}

/// Only the kind: private key material stays out of logs.
impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PrivateKey({})", self.kind())
    }
}

impl From<ed25519_dalek::SigningKey> for PrivateKey {
    fn from(k: ed25519_dalek::SigningKey) -> Self {
        PrivateKey::Ed25519(k)
    }
}

/// The `OCTET STRING` wrapping of an RFC 8410 private key (`CurvePrivateKey`).
fn curve_private_key(bytes: &[u8]) -> Result<[u8; 32], ImageError> {
    match bytes {
        [0x04, 0x20, rest @ ..] => rest
            .try_into()
            .map_err(|_| bad_der("an X25519 key")("private key is not 32 bytes".into())),
        _ => Err(bad_der("an X25519 key")(
            "private key is not a 32-byte OCTET STRING".into(),
        )),
    }
}

impl PrivateKey {
    /// A fresh key of `kind` from `rng`.
    pub fn generate(kind: KeyKind, rng: &mut (impl RngCore + CryptoRng)) -> PrivateKey {
        match kind {
            KeyKind::Ed25519 => PrivateKey::Ed25519(ed25519_dalek::SigningKey::generate(rng)),
            KeyKind::EcdsaP256 => PrivateKey::EcdsaP256(p256::ecdsa::SigningKey::random(rng)),
            KeyKind::EcdsaP384 => PrivateKey::EcdsaP384(p384::ecdsa::SigningKey::random(rng)),
            KeyKind::Rsa2048 | KeyKind::Rsa3072 => {
                let bits = if kind == KeyKind::Rsa2048 { 2048 } else { 3072 };
                // Public exponent 65537, as imgtool's keygen.
                let key = rsa::RsaPrivateKey::new(rng, bits)
                    .expect("rsa key generation with a valid size succeeds");
                PrivateKey::Rsa(Box::new(key))
            }
            KeyKind::X25519 => {
                let mut scalar = [0u8; 32];
                rng.fill_bytes(&mut scalar);
                PrivateKey::X25519(scalar)
            }
        }
    }

    pub fn kind(&self) -> KeyKind {
        match self {
            PrivateKey::Ed25519(_) => KeyKind::Ed25519,
            PrivateKey::EcdsaP256(_) => KeyKind::EcdsaP256,
            PrivateKey::EcdsaP384(_) => KeyKind::EcdsaP384,
            PrivateKey::Rsa(k) => {
                if k.size() * 8 == 3072 {
                    KeyKind::Rsa3072
                } else {
                    KeyKind::Rsa2048
                }
            }
            PrivateKey::X25519(_) => KeyKind::X25519,
        }
    }

    /// The public half of a signing key (`None` for X25519: see
    /// [`PrivateKey::public_pem`]).
    pub fn public(&self) -> Option<PublicKey> {
        Some(match self {
            PrivateKey::Ed25519(k) => PublicKey::Ed25519(k.verifying_key()),
            PrivateKey::EcdsaP256(k) => PublicKey::EcdsaP256(*k.verifying_key()),
            PrivateKey::EcdsaP384(k) => PublicKey::EcdsaP384(*k.verifying_key()),
            PrivateKey::Rsa(k) => PublicKey::Rsa(k.to_public_key()),
            PrivateKey::X25519(_) => return None,
        })
    }

    /// The X25519 public key (RFC 7748 `X25519(k, 9)`).
    fn x25519_public(scalar: &[u8; 32]) -> [u8; 32] {
        x25519_dalek::x25519(*scalar, x25519_dalek::X25519_BASEPOINT_BYTES)
    }

    /// A private key PEM: PKCS#8 (`-----BEGIN PRIVATE KEY-----`, what `imgtool keygen` writes
    /// for every type), SEC1 (`-----BEGIN EC PRIVATE KEY-----`) or PKCS#1
    /// (`-----BEGIN RSA PRIVATE KEY-----`).
    pub fn from_pem(pem: &str) -> Result<PrivateKey, ImageError> {
        let (label, der) = pem_decode(pem)?;
        match label.as_str() {
            "PRIVATE KEY" => Self::from_pkcs8_der(&der),
            "EC PRIVATE KEY" => {
                // SEC1 names its curve inside; the curve whose decoder takes it is the one.
                if let Ok(k) = p256::SecretKey::from_sec1_der(&der) {
                    Ok(PrivateKey::EcdsaP256(k.into()))
                } else {
                    p384::SecretKey::from_sec1_der(&der)
                        .map(|k| PrivateKey::EcdsaP384(k.into()))
                        .map_err(|e| bad_der("an ECDSA P-256 or P-384 key")(e.to_string()))
                }
            }
            "RSA PRIVATE KEY" => {
                use rsa::pkcs1::DecodeRsaPrivateKey as _;
                let key = rsa::RsaPrivateKey::from_pkcs1_der(&der)
                    .map_err(|e| bad_der("an RSA key")(e.to_string()))?;
                rsa_kind(key.size() * 8)?;
                Ok(PrivateKey::Rsa(Box::new(key)))
            }
            "ENCRYPTED PRIVATE KEY" => Err(ImageError::EncryptedPrivateKey),
            "PUBLIC KEY" | "RSA PUBLIC KEY" => Err(ImageError::NotAPrivateKey),
            _ => Err(ImageError::UnsupportedPem { label }),
        }
    }

    fn from_pkcs8_der(der: &[u8]) -> Result<PrivateKey, ImageError> {
        let info = pkcs8::PrivateKeyInfo::try_from(der)
            .map_err(|e| bad_der("a private key")(e.to_string()))?;
        let oid = info.algorithm.oid;
        if oid == OID_ED25519 {
            ed25519_dalek::SigningKey::from_pkcs8_der(der)
                .map(PrivateKey::Ed25519)
                .map_err(|e| bad_der("an ed25519 key")(e.to_string()))
        } else if oid == OID_X25519 {
            curve_private_key(info.private_key).map(PrivateKey::X25519)
        } else if oid == OID_EC {
            match curve(&info.algorithm)? {
                c if c == OID_P256 => p256::ecdsa::SigningKey::from_pkcs8_der(der)
                    .map(PrivateKey::EcdsaP256)
                    .map_err(|e| bad_der("an ECDSA P-256 key")(e.to_string())),
                c if c == OID_P384 => p384::ecdsa::SigningKey::from_pkcs8_der(der)
                    .map(PrivateKey::EcdsaP384)
                    .map_err(|e| bad_der("an ECDSA P-384 key")(e.to_string())),
                c => Err(unknown_curve(c)),
            }
        } else if oid == OID_RSA {
            let key = rsa::RsaPrivateKey::from_pkcs8_der(der)
                .map_err(|e| bad_der("an RSA key")(e.to_string()))?;
            rsa_kind(key.size() * 8)?;
            Ok(PrivateKey::Rsa(Box::new(key)))
        } else {
            Err(unknown_algorithm(oid))
        }
    }

    /// PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`, LF): what `imgtool keygen` writes and
    /// `imgtool sign -k` reads. ed25519 and X25519 in PKCS#8 v1 (the private key alone; v2
    /// with the public key attached Python's cryptography refuses).
    pub fn to_pem(&self) -> String {
        let der = match self {
            PrivateKey::Ed25519(k) => ed25519_dalek::pkcs8::KeypairBytes {
                secret_key: k.to_bytes(),
                public_key: None,
            }
            .to_pkcs8_der(),
            PrivateKey::EcdsaP256(k) => k.to_pkcs8_der(),
            PrivateKey::EcdsaP384(k) => k.to_pkcs8_der(),
            PrivateKey::Rsa(k) => k.to_pkcs8_der(),
            PrivateKey::X25519(scalar) => {
                let mut wrapped = vec![0x04, 0x20];
                wrapped.extend_from_slice(scalar);
                let info = pkcs8::PrivateKeyInfo::new(
                    spki::AlgorithmIdentifierRef {
                        oid: OID_X25519,
                        parameters: None,
                    },
                    &wrapped,
                );
                info.to_der()
                    .map_err(pkcs8::Error::from)
                    .and_then(|d| Ok(pkcs8::SecretDocument::try_from(d.as_slice())?))
            }
        };
        der.and_then(|d| Ok(d.to_pem("PRIVATE KEY", LineEnding::LF)?))
            .map(|pem| pem.to_string())
            .expect("a valid key encodes")
    }

    /// The public key as SubjectPublicKeyInfo PEM (`imgtool getpub -e pem`), X25519 included.
    pub fn public_pem(&self) -> String {
        match self {
            PrivateKey::X25519(scalar) => {
                let public = Self::x25519_public(scalar);
                let info = spki::SubjectPublicKeyInfoRef {
                    algorithm: spki::AlgorithmIdentifierRef {
                        oid: OID_X25519,
                        parameters: None,
                    },
                    subject_public_key: pkcs8::der::asn1::BitStringRef::from_bytes(&public)
                        .expect("32 bytes are a bit string"),
                };
                let der = info.to_der().expect("an spki encodes");
                pkcs8::der::pem::encode_string("PUBLIC KEY", LineEnding::LF, &der)
                    .expect("pem encodes")
            }
            _ => self.public().map(|k| k.to_pem()).unwrap_or_default(),
        }
    }

    /// SHA-256 of the public key's MCUboot bytes, what `imgtool getpubhash -e raw` prints
    /// (for X25519, of its SubjectPublicKeyInfo DER, as imgtool's `get_public_bytes()`).
    pub fn public_hash_sha256(&self) -> Vec<u8> {
        match self {
            PrivateKey::X25519(scalar) => {
                let public = Self::x25519_public(scalar);
                let info = spki::SubjectPublicKeyInfoRef {
                    algorithm: spki::AlgorithmIdentifierRef {
                        oid: OID_X25519,
                        parameters: None,
                    },
                    subject_public_key: pkcs8::der::asn1::BitStringRef::from_bytes(&public)
                        .expect("32 bytes are a bit string"),
                };
                HashAlg::Sha256.digest(&info.to_der().expect("an spki encodes"))
            }
            _ => self
                .public()
                .map(|k| k.keyhash(HashAlg::Sha256))
                .unwrap_or_default(),
        }
    }
}
