//! The ECU's decryption keys and the keys images are encrypted for: every PEM form imgtool
//! writes, AES-KW key files, and the key wraps of each ENC TLV.

use super::*;
use rand_core::{CryptoRng, RngCore};
use sha2::Sha256;

/// An AES key-encryption key (MCUboot's `enc-aes128kw.b64`, `enc-aes256kw.b64`).
#[derive(Clone, PartialEq, Eq)]
pub struct KwKey {
    bytes: [u8; 32],
    size: AesKeySize,
}

impl KwKey {
    /// 16 or 32 raw bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<KwKey, EncKeyError> {
        let size = match bytes.len() {
            16 => AesKeySize::Aes128,
            32 => AesKeySize::Aes256,
            len => return Err(EncKeyError::BadKwKey { len }),
        };
        let mut b = [0u8; 32];
        b[..bytes.len()].copy_from_slice(bytes);
        Ok(KwKey { bytes: b, size })
    }

    /// A key file's contents: base64 text of 16 or 32 bytes (MCUboot's form, one line, the
    /// newline optional) or the raw bytes.
    pub fn from_file(contents: &[u8]) -> Result<KwKey, EncKeyError> {
        use base64ct::Encoding as _;
        if let Ok(text) = std::str::from_utf8(contents)
            && let Ok(decoded) = base64ct::Base64::decode_vec(text.trim())
            && matches!(decoded.len(), 16 | 32)
        {
            return Self::from_bytes(&decoded);
        }
        Self::from_bytes(contents)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.size.key_len()]
    }

    pub fn size(&self) -> AesKeySize {
        self.size
    }

    /// The key file MCUboot keeps: base64 and a newline.
    pub fn to_base64(&self) -> String {
        use base64ct::Encoding as _;
        format!("{}\n", base64ct::Base64::encode_string(self.as_bytes()))
    }

    /// RFC 3394 wrap of `key` (as long as this key: MCUboot's rule).
    pub fn wrap(&self, key: &ImageKey) -> Result<Vec<u8>, EncError> {
        if self.size != key.size {
            return Err(EncError::KwKeySize {
                kek: self.size.key_len(),
                image: key.size,
            });
        }
        let mut out = vec![0u8; key.size.key_len() + KW_OVERHEAD];
        let done = match self.size {
            AesKeySize::Aes128 => {
                aes_kw::KekAes128::new(self.as_bytes().into()).wrap(key.as_bytes(), &mut out)
            }
            AesKeySize::Aes256 => {
                aes_kw::KekAes256::new(self.as_bytes().into()).wrap(key.as_bytes(), &mut out)
            }
        };
        done.expect("a 16- or 32-byte key wraps into 8 more bytes");
        Ok(out)
    }

    /// RFC 3394 unwrap of an image key of `aes`.
    pub fn unwrap(&self, wrapped: &[u8], aes: AesKeySize) -> Result<ImageKey, EncError> {
        if self.size != aes {
            return Err(EncError::KwKeySize {
                kek: self.size.key_len(),
                image: aes,
            });
        }
        let mut out = [0u8; 32];
        let out = &mut out[..aes.key_len()];
        let done = match self.size {
            AesKeySize::Aes128 => {
                aes_kw::KekAes128::new(self.as_bytes().into()).unwrap(wrapped, out)
            }
            AesKeySize::Aes256 => {
                aes_kw::KekAes256::new(self.as_bytes().into()).unwrap(wrapped, out)
            }
        };
        done.map_err(|_| EncError::UnwrapFailed {
            tlv: EncTlvKind::Kw,
            reason: UnwrapFailure::KwIntegrity,
        })?;
        ImageKey::from_bytes(out)
    }
}

/// Only the size: key material stays out of logs.
impl fmt::Debug for KwKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KwKey({})", self.size)
    }
}

/// The ECU's image decryption key: what MCUboot embeds as `bootutil_enc_key`.
#[derive(Clone)]
pub enum EncKey {
    Rsa2048(Box<rsa::RsaPrivateKey>),
    Kw(KwKey),
    EcP256(p256::NonZeroScalar),
    X25519(x25519_dalek::StaticSecret),
}

/// Only the kind: private key material stays out of logs.
impl fmt::Debug for EncKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EncKey({})", self.family())
    }
}

impl EncKey {
    /// A key file: a private key PEM (PKCS#8, what `imgtool keygen -t x25519|ecdsa-p256|rsa-2048`
    /// writes; SEC1 and PKCS#1 too) or an AES-KW key ([`KwKey::from_file`]).
    pub fn from_file(contents: &[u8]) -> Result<EncKey, EncKeyError> {
        match std::str::from_utf8(contents) {
            Ok(text) if text.trim_start().starts_with("-----BEGIN") => Self::from_pem(text),
            _ => KwKey::from_file(contents).map(EncKey::Kw),
        }
    }

    /// A private key PEM of an encryption key type.
    pub fn from_pem(pem: &str) -> Result<EncKey, EncKeyError> {
        Self::from_private(PrivateKey::from_pem(pem)?)
    }

    /// The decryption half of a private key: RSA-2048, P-256 or X25519.
    pub fn from_private(key: PrivateKey) -> Result<EncKey, EncKeyError> {
        match key {
            PrivateKey::Rsa(k) => match k.size() * 8 {
                2048 => Ok(EncKey::Rsa2048(k)),
                bits => Err(EncKeyError::RsaSize { bits }),
            },
            PrivateKey::EcdsaP256(k) => Ok(EncKey::EcP256(*k.as_nonzero_scalar())),
            PrivateKey::X25519(scalar) => Ok(EncKey::X25519(scalar.into())),
            other => Err(EncKeyError::NotAnEncryptionKey {
                found: other.kind(),
            }),
        }
    }

    pub fn family(&self) -> EncKeyFamily {
        match self {
            EncKey::Rsa2048(_) => EncKeyFamily::Rsa2048,
            EncKey::Kw(_) => EncKeyFamily::AesKw,
            EncKey::EcP256(_) => EncKeyFamily::EcP256,
            EncKey::X25519(_) => EncKeyFamily::X25519,
        }
    }

    /// What images are encrypted for ([`encrypt_image`]'s recipient).
    pub fn public(&self) -> EncPublicKey {
        match self {
            EncKey::Rsa2048(k) => EncPublicKey::Rsa2048(k.to_public_key()),
            EncKey::Kw(k) => EncPublicKey::Kw(k.clone()),
            EncKey::EcP256(s) => EncPublicKey::EcP256(p256::PublicKey::from_secret_scalar(s)),
            EncKey::X25519(s) => EncPublicKey::X25519(x25519_dalek::PublicKey::from(s)),
        }
    }

    /// The image's AES key from its ENC TLV (MCUboot's `boot_decrypt_key`).
    pub fn unwrap(&self, tlv: &EncTlv<'_>) -> Result<ImageKey, EncError> {
        if !self.family().tlvs().contains(&tlv.kind) {
            return Err(EncError::WrongKeyType {
                found: tlv.kind,
                key: self.family(),
            });
        }
        // Checked again: the fields are public, the splits below rely on the length.
        let tlv = EncTlv::new(tlv.kind, tlv.aes, tlv.value)?;
        let aes = tlv.aes;
        match self {
            EncKey::Rsa2048(k) => {
                let plain = k
                    .decrypt(rsa::Oaep::new::<Sha256>(), tlv.value)
                    .map_err(|_| EncError::UnwrapFailed {
                        tlv: tlv.kind,
                        reason: UnwrapFailure::OaepDecode,
                    })?;
                if plain.len() != aes.key_len() {
                    return Err(EncError::UnwrapFailed {
                        tlv: tlv.kind,
                        reason: UnwrapFailure::KeyLength { len: plain.len() },
                    });
                }
                ImageKey::from_bytes(&plain)
            }
            EncKey::Kw(k) => k.unwrap(tlv.value, aes),
            EncKey::EcP256(scalar) => {
                let (point, rest) = tlv.value.split_at(P256_POINT_LEN);
                let ephemeral = p256::PublicKey::from_sec1_bytes(point).map_err(|_| {
                    EncError::UnwrapFailed {
                        tlv: tlv.kind,
                        reason: UnwrapFailure::BadEphemeralKey,
                    }
                })?;
                let shared = p256::ecdh::diffie_hellman(scalar, ephemeral.as_affine());
                ecies_open(tlv.kind, aes, shared.raw_secret_bytes(), rest)
            }
            EncKey::X25519(secret) => {
                let (point, rest) = tlv.value.split_at(X25519_LEN);
                let point: [u8; 32] = point.try_into().expect("split at 32");
                let shared = secret.diffie_hellman(&x25519_dalek::PublicKey::from(point));
                if !shared.was_contributory() {
                    return Err(EncError::UnwrapFailed {
                        tlv: tlv.kind,
                        reason: UnwrapFailure::LowOrderPoint,
                    });
                }
                ecies_open(tlv.kind, aes, shared.as_bytes(), rest)
            }
        }
    }
}

/// The key images are encrypted for: the public half of an [`EncKey`] (the KW key itself).
#[derive(Clone, PartialEq, Eq)]
pub enum EncPublicKey {
    Rsa2048(rsa::RsaPublicKey),
    Kw(KwKey),
    EcP256(p256::PublicKey),
    X25519(x25519_dalek::PublicKey),
}

impl fmt::Debug for EncPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EncPublicKey({})", self.family())
    }
}

impl EncPublicKey {
    /// A key file: `-----BEGIN PUBLIC KEY-----` (what `imgtool getpub -e pem` prints, the
    /// file imgtool's `--encrypt` takes), a private key PEM (its public half, as imgtool
    /// takes it too), or an AES-KW key file.
    pub fn from_file(contents: &[u8]) -> Result<EncPublicKey, EncKeyError> {
        match std::str::from_utf8(contents) {
            Ok(text) if text.trim_start().starts_with("-----BEGIN") => Self::from_pem(text),
            _ => KwKey::from_file(contents).map(EncPublicKey::Kw),
        }
    }

    pub fn from_pem(pem: &str) -> Result<EncPublicKey, EncKeyError> {
        let (label, der) =
            pkcs8::der::pem::decode_vec(pem.trim().as_bytes()).map_err(|e| ImageError::BadPem {
                message: e.to_string(),
            })?;
        match label {
            "PUBLIC KEY" => Self::from_spki_der(&der),
            "RSA PUBLIC KEY" => {
                use rsa::pkcs1::DecodeRsaPublicKey as _;
                let key =
                    rsa::RsaPublicKey::from_pkcs1_der(&der).map_err(|e| ImageError::BadKeyDer {
                        kind: "an RSA key",
                        message: e.to_string(),
                    })?;
                Self::rsa(key)
            }
            _ => Ok(EncKey::from_pem(pem)?.public()),
        }
    }

    fn rsa(key: rsa::RsaPublicKey) -> Result<EncPublicKey, EncKeyError> {
        match key.size() * 8 {
            2048 => Ok(EncPublicKey::Rsa2048(key)),
            bits => Err(EncKeyError::RsaSize { bits }),
        }
    }

    /// A DER SubjectPublicKeyInfo of an RSA-2048, P-256 or X25519 key.
    pub fn from_spki_der(der: &[u8]) -> Result<EncPublicKey, EncKeyError> {
        let info =
            spki::SubjectPublicKeyInfoRef::from_der(der).map_err(|e| ImageError::BadKeyDer {
                kind: "a public key",
                message: e.to_string(),
            })?;
        if info.algorithm.oid == super::super::keys::OID_X25519 {
            let bytes: [u8; 32] = info
                .subject_public_key
                .as_bytes()
                .and_then(|b| b.try_into().ok())
                .ok_or(ImageError::BadKeyDer {
                    kind: "an X25519 key",
                    message: "the public key is not 32 bytes".into(),
                })?;
            return Ok(EncPublicKey::X25519(bytes.into()));
        }
        match PublicKey::from_spki_der(der)? {
            PublicKey::Rsa(k) => Self::rsa(k),
            PublicKey::EcdsaP256(k) => Ok(EncPublicKey::EcP256(k.into())),
            other => Err(EncKeyError::NotAnEncryptionKey {
                found: other.kind(),
            }),
        }
    }

    pub fn family(&self) -> EncKeyFamily {
        match self {
            EncPublicKey::Rsa2048(_) => EncKeyFamily::Rsa2048,
            EncPublicKey::Kw(_) => EncKeyFamily::AesKw,
            EncPublicKey::EcP256(_) => EncKeyFamily::EcP256,
            EncPublicKey::X25519(_) => EncKeyFamily::X25519,
        }
    }

    /// Wrap `key` for this key, as imgtool does: the TLV kind and value. `hmac_sha512`
    /// (imgtool `--hmac-sha 512`) makes ENC_X25519_SHA512 and is for X25519 keys only.
    pub fn wrap(
        &self,
        key: &ImageKey,
        hmac_sha512: bool,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<(EncTlvKind, Vec<u8>), EncError> {
        if hmac_sha512 && self.family() != EncKeyFamily::X25519 {
            return Err(EncError::Sha512NotX25519 { key: self.family() });
        }
        Ok(match self {
            EncPublicKey::Rsa2048(k) => {
                let c = k
                    .encrypt(rng, rsa::Oaep::new::<Sha256>(), key.as_bytes())
                    .expect("RSA-2048 OAEP-SHA256 encrypts up to 190 bytes");
                (EncTlvKind::Rsa2048, c)
            }
            EncPublicKey::Kw(k) => (EncTlvKind::Kw, k.wrap(key)?),
            EncPublicKey::EcP256(k) => {
                let ephemeral = p256::ecdh::EphemeralSecret::random(rng);
                let shared = ephemeral.diffie_hellman(k);
                let point = ephemeral.public_key().to_encoded_point(false);
                let kind = EncTlvKind::Ec256;
                (
                    kind,
                    ecies_seal(kind, point.as_bytes(), shared.raw_secret_bytes(), key),
                )
            }
            EncPublicKey::X25519(k) => {
                let ephemeral = x25519_dalek::EphemeralSecret::random_from_rng(rng);
                let point = x25519_dalek::PublicKey::from(&ephemeral);
                let shared = ephemeral.diffie_hellman(k);
                let kind = if hmac_sha512 {
                    EncTlvKind::X25519Sha512
                } else {
                    EncTlvKind::X25519
                };
                (
                    kind,
                    ecies_seal(kind, point.as_bytes(), shared.as_bytes(), key),
                )
            }
        })
    }
}
