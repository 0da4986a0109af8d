//! Verifying an image: hash, key, signature, security counter.

use ed25519_dalek::Verifier as _;
use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
use rsa::Pss;
use sha2::Sha256;

use super::*;

/// Which signature verified an image: the signature TLV and the key type together.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SignatureKind {
    /// TLV `0x20`: RSASSA-PSS, 2048-bit key, SHA-256, MGF1-SHA-256, 32-byte salt, of the digest.
    Rsa2048Pss,
    /// TLV `0x23`: the same with a 3072-bit key.
    Rsa3072Pss,
    /// TLV `0x22` with a P-256 key: DER `ECDSA-Sig-Value` of the SHA-256 digest.
    EcdsaP256,
    /// TLV `0x22` with a P-384 key: DER `ECDSA-Sig-Value` of the SHA-384 digest.
    EcdsaP384,
    /// TLV `0x24`: ed25519 of the digest (SHA-256 or SHA-512).
    Ed25519,
    /// TLV `0x24` with SIG_PURE (`0x25`): ed25519 of the hashed bytes themselves.
    Ed25519Pure,
}

impl SignatureKind {
    /// The signature a key of `kind` makes (`pure`: over the image rather than its hash).
    pub const fn of(kind: KeyKind, pure: bool) -> Option<SignatureKind> {
        Some(match kind {
            KeyKind::Ed25519 if pure => SignatureKind::Ed25519Pure,
            KeyKind::Ed25519 => SignatureKind::Ed25519,
            KeyKind::EcdsaP256 => SignatureKind::EcdsaP256,
            KeyKind::EcdsaP384 => SignatureKind::EcdsaP384,
            KeyKind::Rsa2048 => SignatureKind::Rsa2048Pss,
            KeyKind::Rsa3072 => SignatureKind::Rsa3072Pss,
            KeyKind::X25519 => return None,
        })
    }

    /// The image hashes this signature goes with, as MCUboot builds pair them (the first is
    /// imgtool's default).
    pub const fn hashes(self) -> &'static [HashAlg] {
        match self {
            SignatureKind::Ed25519Pure => &[HashAlg::Sha512],
            SignatureKind::Ed25519 => KeyKind::Ed25519.hashes(),
            SignatureKind::EcdsaP256 => KeyKind::EcdsaP256.hashes(),
            SignatureKind::EcdsaP384 => KeyKind::EcdsaP384.hashes(),
            SignatureKind::Rsa2048Pss => KeyKind::Rsa2048.hashes(),
            SignatureKind::Rsa3072Pss => KeyKind::Rsa3072.hashes(),
        }
    }
}

impl fmt::Display for SignatureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SignatureKind::Rsa2048Pss => "RSA-2048 PSS",
            SignatureKind::Rsa3072Pss => "RSA-3072 PSS",
            SignatureKind::EcdsaP256 => "ECDSA P-256",
            SignatureKind::EcdsaP384 => "ECDSA P-384",
            SignatureKind::Ed25519 => "ed25519",
            SignatureKind::Ed25519Pure => "pure ed25519",
        })
    }
}

/// A verified image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageInfo {
    pub header: Header,
    /// Header area + payload + both TLV areas.
    pub total_size: usize,
    /// The image hash: what the hash TLV holds and (unless pure) the signature signs.
    pub hash: Vec<u8>,
    /// The hash TLV's algorithm.
    pub hash_alg: HashAlg,
    /// From SEC_CNT; 0 without it.
    pub security_counter: u32,
    /// From the simulation TLV; [`Behaviour::DEFAULT`] without it.
    pub behaviour: Behaviour,
    /// A signature was checked (the keyring was not empty).
    pub signed: bool,
    /// The signature that verified (`None` when the keyring is empty).
    pub signature: Option<SignatureKind>,
}

/// A trusted key and what images name it by.
#[derive(Clone, Debug)]
struct Trusted {
    key: PublicKey,
    /// [`PublicKey::mcuboot_bytes`]: what a PUBKEY TLV holds.
    bytes: Vec<u8>,
    /// KEYHASH values, one per [`HashAlg::ALL`].
    hashes: [Vec<u8>; 3],
}

/// The bootloader's trusted keys, looked up by KEYHASH (with the image's hash algorithm) or
/// by the whole key in a PUBKEY TLV. Any mix of key types.
#[derive(Clone, Debug, Default)]
pub struct Keyring {
    keys: Vec<Trusted>,
}

impl Keyring {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_key(mut self, key: impl Into<PublicKey>) -> Self {
        self.add(key);
        self
    }

    /// Trust `key` (adding a key twice changes nothing).
    pub fn add(&mut self, key: impl Into<PublicKey>) {
        let key = key.into();
        if self.keys.iter().any(|t| t.key == key) {
            return;
        }
        let bytes = key.mcuboot_bytes();
        let hashes = HashAlg::ALL.map(|alg| alg.digest(&bytes));
        self.keys.push(Trusted { key, bytes, hashes });
    }

    /// Trust the key in a PEM ([`PublicKey::from_pem`]: what `imgtool getpub -e pem` prints,
    /// or a private key PEM); returns its kind.
    pub fn add_pem(&mut self, pem: &str) -> Result<KeyKind, ImageError> {
        let key = PublicKey::from_pem(pem)?;
        let kind = key.kind();
        self.add(key);
        Ok(kind)
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// The trusted key whose KEYHASH with `alg` is `keyhash`.
    pub fn find_hash(&self, alg: HashAlg, keyhash: &[u8]) -> Option<&PublicKey> {
        let i = HashAlg::ALL.iter().position(|a| *a == alg)?;
        self.keys
            .iter()
            .find(|t| t.hashes[i] == keyhash)
            .map(|t| &t.key)
    }

    /// The trusted key whose KEYHASH is `keyhash`, whichever algorithm its length says.
    pub fn find(&self, keyhash: &[u8]) -> Option<&PublicKey> {
        let alg = HashAlg::ALL
            .into_iter()
            .find(|a| a.digest_len() == keyhash.len())?;
        self.find_hash(alg, keyhash)
    }

    /// The trusted key whose [`PublicKey::mcuboot_bytes`] are `bytes` (a PUBKEY TLV).
    pub fn find_pubkey(&self, bytes: &[u8]) -> Option<&PublicKey> {
        self.keys.iter().find(|t| t.bytes == bytes).map(|t| &t.key)
    }

    /// The trusted keys, in the order they were added.
    pub fn iter(&self) -> impl Iterator<Item = &PublicKey> {
        self.keys.iter().map(|t| &t.key)
    }
}

/// What the TLVs of an image say, after the placement, length and duplicate checks.
#[derive(Default)]
struct Found<'a> {
    hash: Option<(HashAlg, &'a [u8])>,
    pure: bool,
    security_counter: Option<u32>,
    behaviour: Option<&'a [u8]>,
}

/// The TLVs allowed in the unprotected area (MCUboot's `allowed_unprot_tlvs`, for every
/// signature type at once).
fn allowed_unprotected(kind: u16) -> bool {
    matches!(
        kind,
        TLV_KEYHASH
            | TLV_PUBKEY
            | TLV_SHA256
            | TLV_SHA384
            | TLV_SHA512
            | TLV_RSA2048_PSS
            | TLV_ECDSA_SIG
            | TLV_RSA3072_PSS
            | TLV_ED25519
            | TLV_SIG_PURE
            | TLV_ENC_RSA2048
            | TLV_ENC_KW
            | TLV_ENC_EC256
            | TLV_ENC_X25519
            | TLV_ENC_X25519_SHA512
    )
}

/// Length checks of the signature TLVs: fixed for RSA and ed25519; a DER ECDSA signature
/// fits MCUboot's 128-byte buffer.
fn signature_len_ok(kind: u16, len: usize) -> bool {
    match kind {
        TLV_ECDSA_SIG => (1..=ECDSA_SIG_MAX).contains(&len),
        _ => len == expected_len(kind),
    }
}

impl<'a> Found<'a> {
    fn collect(image: &ParsedImage<'a>) -> Result<Self, ImageError> {
        let mut found = Found::default();
        let mut keyhash_len = None;
        for tlv in image.tlvs() {
            let kind = tlv.kind;
            let allowed = allowed_unprotected(kind);
            match (kind, tlv.protected) {
                (_, false) if allowed => {}
                (TLV_SEC_CNT | TLV_SIM_BEHAVIOUR, true) => {}
                // Everything else unprotected could be changed without breaking the signature.
                (_, true) if allowed => {
                    return Err(ImageError::MisplacedTlv {
                        tlv: kind,
                        protected: true,
                    });
                }
                (_, false) => {
                    return Err(ImageError::MisplacedTlv {
                        tlv: kind,
                        protected: false,
                    });
                }
                // Other protected TLVs are covered by the hash; nothing here uses them.
                (_, true) => continue,
            }
            let len = tlv.value.len();
            match kind {
                TLV_RSA2048_PSS | TLV_RSA3072_PSS | TLV_ECDSA_SIG | TLV_ED25519 => {
                    if !signature_len_ok(kind, len) {
                        return Err(ImageError::BadSignatureLength {
                            tlv: kind,
                            len: len_u16(tlv.value),
                        });
                    }
                    continue;
                }
                TLV_KEYHASH => {
                    keyhash_len.get_or_insert(len);
                    continue;
                }
                TLV_PUBKEY => continue,
                // Lengths checked when the key is unwrapped (their length depends on the AES
                // key size); a decrypted image in the primary slot keeps its ENC TLV.
                TLV_ENC_RSA2048
                | TLV_ENC_KW
                | TLV_ENC_EC256
                | TLV_ENC_X25519
                | TLV_ENC_X25519_SHA512 => continue,
                _ => {}
            }
            if len != expected_len(kind) {
                return Err(ImageError::BadTlvLength {
                    tlv: kind,
                    len: len_u16(tlv.value),
                });
            }
            let duplicate = match kind {
                TLV_SHA256 | TLV_SHA384 | TLV_SHA512 => {
                    let alg = HashAlg::from_tlv(kind).unwrap_or(HashAlg::Sha256);
                    found.hash.replace((alg, tlv.value)).is_some()
                }
                TLV_SIG_PURE => {
                    if tlv.value[0] != 1 {
                        return Err(ImageError::BadSigPure {
                            value: tlv.value[0],
                        });
                    }
                    std::mem::replace(&mut found.pure, true)
                }
                TLV_SEC_CNT => found
                    .security_counter
                    .replace(u32_at(tlv.value, 0))
                    .is_some(),
                TLV_SIM_BEHAVIOUR => found.behaviour.replace(tlv.value).is_some(),
                _ => false,
            };
            if duplicate {
                return Err(ImageError::DuplicateTlv { tlv: kind });
            }
        }
        if let (Some(len), Some((hash, _))) = (keyhash_len, found.hash)
            && len != hash.digest_len()
        {
            return Err(ImageError::KeyHashLength {
                len: u16::try_from(len).unwrap_or(u16::MAX),
                hash,
            });
        }
        Ok(found)
    }
}

/// What a PUBKEY TLV holds, for [`ImageError::UntrustedPubkey`].
fn describe_pubkey(bytes: &[u8]) -> String {
    use rsa::pkcs1::DecodeRsaPublicKey as _;
    match PublicKey::from_spki_der(bytes) {
        Ok(k) => k.kind().described().to_string(),
        Err(ImageError::NotASigningKey { found }) => found.described().to_string(),
        Err(_) => match rsa::RsaPublicKey::from_pkcs1_der(bytes) {
            Ok(k) => match rsa::traits::PublicKeyParts::size(&k) * 8 {
                2048 => KeyKind::Rsa2048.described().to_string(),
                3072 => KeyKind::Rsa3072.described().to_string(),
                bits => format!("an RSA key of {bits} bits"),
            },
            Err(_) => format!("{} bytes that are no public key", bytes.len()),
        },
    }
}

/// An ECDSA signature TLV without the zero padding old imgtools added (`--pad-sig`, to 72 or
/// 103 bytes): the DER SEQUENCE alone when what follows it is zeros.
fn ecdsa_der(sig: &[u8]) -> &[u8] {
    match sig {
        [0x30, len, ..] if *len < 0x80 => {
            let end = usize::from(*len) + 2;
            match sig.get(end..) {
                Some(rest) if rest.iter().all(|&b| b == 0) => &sig[..end],
                _ => sig,
            }
        }
        _ => sig,
    }
}

/// The inputs one signature TLV is checked against.
struct Signed<'a> {
    hash: HashAlg,
    digest: &'a [u8],
    /// The hashed bytes (header, payload, protected TLVs): what a pure signature signs.
    hashed: &'a [u8],
    pure: bool,
}

impl Signed<'_> {
    /// Check one signature TLV (`tlv`, `sig`) made by `key`.
    fn check(&self, key: &PublicKey, tlv: u16, sig: &[u8]) -> Result<SignatureKind, ImageError> {
        let kind = key.kind();
        if kind.signature_tlv() != Some(tlv) {
            return Err(ImageError::WrongKeyType { tlv, key: kind });
        }
        let Some(signature) = SignatureKind::of(kind, self.pure) else {
            return Err(ImageError::WrongKeyType { tlv, key: kind });
        };
        if self.pure && kind != KeyKind::Ed25519 {
            return Err(ImageError::PureNotEd25519 { key: kind });
        }
        if !signature.hashes().contains(&self.hash) {
            return Err(ImageError::HashNotForSignature {
                hash: self.hash,
                signature,
            });
        }
        let bad = ImageError::BadSignature { signature };
        let undecodable = |e: &dyn fmt::Display| ImageError::BadSignatureEncoding {
            tlv,
            message: e.to_string(),
        };
        match key {
            PublicKey::Ed25519(k) => {
                let sig: [u8; 64] = sig.try_into().map_err(|_| ImageError::BadSignatureLength {
                    tlv,
                    len: len_u16(sig),
                })?;
                let message = if self.pure { self.hashed } else { self.digest };
                k.verify(message, &ed25519_dalek::Signature::from_bytes(&sig))
                    .map_err(|_| bad)
            }
            PublicKey::EcdsaP256(k) => {
                let sig = p256::ecdsa::Signature::from_der(ecdsa_der(sig))
                    .map_err(|e| undecodable(&e))?;
                k.verify_prehash(self.digest, &sig).map_err(|_| bad)
            }
            PublicKey::EcdsaP384(k) => {
                let sig = p384::ecdsa::Signature::from_der(ecdsa_der(sig))
                    .map_err(|e| undecodable(&e))?;
                k.verify_prehash(self.digest, &sig).map_err(|_| bad)
            }
            PublicKey::Rsa(k) => k
                .verify(
                    Pss::new_with_salt::<Sha256>(RSA_PSS_SALT_LEN),
                    self.digest,
                    sig,
                )
                .map_err(|_| bad),
        }?;
        Ok(signature)
    }
}

/// Check the key + signature pairs against `keys` (see the [module docs](crate::image)).
fn check_signature(
    image: &ParsedImage<'_>,
    keys: &Keyring,
    signed: &Signed<'_>,
) -> Result<SignatureKind, ImageError> {
    let mut key: Option<&PublicKey> = None;
    let mut unknown: Option<ImageError> = None;
    let mut verified = None;
    for tlv in image.tlvs().filter(|t| !t.protected) {
        match tlv.kind {
            TLV_KEYHASH => {
                key = keys.find_hash(signed.hash, tlv.value);
                if key.is_none() && unknown.is_none() {
                    unknown = Some(ImageError::UnknownKey {
                        keyhash: tlv.value.to_vec(),
                    });
                }
            }
            TLV_PUBKEY => {
                key = keys.find_pubkey(tlv.value);
                if key.is_none() && unknown.is_none() {
                    unknown = Some(ImageError::UntrustedPubkey {
                        key: describe_pubkey(tlv.value),
                    });
                }
            }
            TLV_RSA2048_PSS | TLV_ECDSA_SIG | TLV_RSA3072_PSS | TLV_ED25519 => {
                // A signature belongs to the key TLV just before it.
                if let Some(key) = key.take() {
                    verified = Some(signed.check(key, tlv.kind, tlv.value)?);
                }
            }
            _ => {}
        }
    }
    match (verified, unknown) {
        (Some(kind), _) => Ok(kind),
        (None, Some(e)) => Err(e),
        (None, None) => Err(ImageError::MissingSignature),
    }
}

/// Full verification, in the order of the [module docs](crate::image): structure,
/// TLV placement and lengths, image hash, signature (only if `keys` is not empty), security
/// counter ≥ `min_security_counter`, simulation behaviour.
pub fn verify(
    bytes: &[u8],
    keys: &Keyring,
    min_security_counter: u32,
) -> Result<ImageInfo, ImageError> {
    let image = parse(bytes)?;
    let found = Found::collect(&image)?;
    let (hash_alg, expected) = found.hash.ok_or(ImageError::MissingHash)?;
    let digest = hash_alg.digest(image.hashed);
    if digest[..] != *expected {
        return Err(ImageError::HashMismatch);
    }
    let signature = if keys.is_empty() {
        None
    } else {
        let signed = Signed {
            hash: hash_alg,
            digest: &digest,
            hashed: image.hashed,
            pure: found.pure,
        };
        Some(check_signature(&image, keys, &signed)?)
    };
    let security_counter = found.security_counter.unwrap_or(0);
    if security_counter < min_security_counter {
        return Err(ImageError::CounterTooLow {
            image: security_counter,
            required: min_security_counter,
        });
    }
    let behaviour = match found.behaviour {
        Some(value) => Behaviour::decode(value)?,
        None => Behaviour::DEFAULT,
    };
    Ok(ImageInfo {
        header: image.header,
        total_size: image.total_size,
        hash: digest,
        hash_alg,
        security_counter,
        behaviour,
        signed: signature.is_some(),
        signature,
    })
}
