//! Verifying an image: hash, key, signature, security counter.

use super::*;

/// A verified image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageInfo {
    pub header: Header,
    /// Header area + payload + both TLV areas.
    pub total_size: usize,
    /// SHA-256 of the hashed bytes (what the SHA256 TLV holds and the signature signs).
    pub hash: [u8; 32],
    /// From SEC_CNT; 0 without it.
    pub security_counter: u32,
    /// From the simulation TLV; [`Behaviour::DEFAULT`] without it.
    pub behaviour: Behaviour,
    /// A signature was checked (the keyring was not empty).
    pub signed: bool,
}

/// The bootloader's trusted keys, looked up by KEYHASH.
#[derive(Clone, Debug, Default)]
pub struct Keyring {
    keys: Vec<([u8; 32], VerifyingKey)>,
}

impl Keyring {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_key(mut self, key: VerifyingKey) -> Self {
        self.add(key);
        self
    }

    /// Trust `key` (adding a key twice changes nothing).
    pub fn add(&mut self, key: VerifyingKey) {
        let hash = Self::keyhash(&key);
        if self.find(&hash).is_none() {
            self.keys.push((hash, key));
        }
    }

    /// Trust the key in a SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC KEY-----`), what
    /// `imgtool getpub -k key.pem -e pem` prints.
    pub fn add_pem(&mut self, pem: &str) -> Result<(), ImageError> {
        let key = VerifyingKey::from_public_key_pem(pem.trim()).map_err(|e| {
            ImageError::BadKey(format!(
                "not an ed25519 public key pem (-----BEGIN PUBLIC KEY-----): {e}"
            ))
        })?;
        self.add(key);
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// The trusted key whose [`Keyring::keyhash`] is `keyhash`.
    pub fn find(&self, keyhash: &[u8; 32]) -> Option<&VerifyingKey> {
        self.keys.iter().find(|(h, _)| h == keyhash).map(|(_, k)| k)
    }

    /// The trusted keys, in the order they were added.
    pub fn iter(&self) -> impl Iterator<Item = &VerifyingKey> {
        self.keys.iter().map(|(_, k)| k)
    }

    /// The key as DER SubjectPublicKeyInfo (44 bytes): the bytes imgtool's
    /// `get_public_bytes()` returns for ed25519 and MCUboot embeds.
    pub fn spki_der(key: &VerifyingKey) -> [u8; 44] {
        let mut der = [0u8; 44];
        der[..12].copy_from_slice(&ED25519_SPKI_PREFIX);
        der[12..].copy_from_slice(key.as_bytes());
        der
    }

    /// SHA-256 of [`Keyring::spki_der`]: the KEYHASH TLV value, what
    /// `imgtool getpubhash -e raw` prints.
    pub fn keyhash(key: &VerifyingKey) -> [u8; 32] {
        Sha256::digest(Self::spki_der(key)).into()
    }
}

/// What the TLVs of an image say, after the placement, length and duplicate checks.
#[derive(Default)]
struct Found<'a> {
    sha256: Option<&'a [u8]>,
    security_counter: Option<u32>,
    behaviour: Option<&'a [u8]>,
}

impl<'a> Found<'a> {
    fn collect(image: &ParsedImage<'a>) -> Result<Self, ImageError> {
        let mut found = Found::default();
        for tlv in image.tlvs() {
            let kind = tlv.kind;
            match (kind, tlv.protected) {
                (TLV_SHA256 | TLV_KEYHASH | TLV_ED25519, false)
                | (TLV_SEC_CNT | TLV_SIM_BEHAVIOUR, true) => {}
                // Everything else unprotected could be changed without breaking the signature.
                (TLV_SHA256 | TLV_KEYHASH | TLV_ED25519, true) | (_, false) => {
                    return Err(ImageError::MisplacedTlv {
                        tlv: kind,
                        protected: tlv.protected,
                    });
                }
                // Other protected TLVs are covered by the hash; nothing here uses them.
                (_, true) => continue,
            }
            if tlv.value.len() != expected_len(kind) {
                return Err(ImageError::BadTlvLength {
                    tlv: kind,
                    len: len_u16(tlv.value),
                });
            }
            let duplicate = match kind {
                TLV_SHA256 => found.sha256.replace(tlv.value).is_some(),
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
        Ok(found)
    }
}

/// Check the KEYHASH + ED25519 pairs against `keys` (see the [module docs](crate::image)).
fn check_signature(
    image: &ParsedImage<'_>,
    keys: &Keyring,
    digest: &[u8; 32],
) -> Result<(), ImageError> {
    let mut key: Option<&VerifyingKey> = None;
    let mut unknown: Option<[u8; 32]> = None;
    let mut verified = false;
    for tlv in image.tlvs().filter(|t| !t.protected) {
        match tlv.kind {
            TLV_KEYHASH => {
                let hash: [u8; 32] =
                    tlv.value.try_into().map_err(|_| ImageError::BadTlvLength {
                        tlv: TLV_KEYHASH,
                        len: len_u16(tlv.value),
                    })?;
                key = keys.find(&hash);
                if key.is_none() {
                    unknown.get_or_insert(hash);
                }
            }
            TLV_ED25519 => {
                let sig: [u8; 64] = tlv.value.try_into().map_err(|_| ImageError::BadTlvLength {
                    tlv: TLV_ED25519,
                    len: len_u16(tlv.value),
                })?;
                // A signature belongs to the KEYHASH just before it.
                if let Some(key) = key.take() {
                    key.verify(digest, &Signature::from_bytes(&sig))
                        .map_err(|_| ImageError::BadSignature)?;
                    verified = true;
                }
            }
            _ => {}
        }
    }
    match (verified, unknown) {
        (true, _) => Ok(()),
        (false, Some(keyhash)) => Err(ImageError::UnknownKey { keyhash }),
        (false, None) => Err(ImageError::MissingSignature),
    }
}

/// Full verification, in the order of the [module docs](crate::image): structure,
/// TLV placement and lengths, SHA-256, signature (only if `keys` is not empty), security
/// counter ≥ `min_security_counter`, simulation behaviour.
pub fn verify(
    bytes: &[u8],
    keys: &Keyring,
    min_security_counter: u32,
) -> Result<ImageInfo, ImageError> {
    let image = parse(bytes)?;
    let found = Found::collect(&image)?;
    let expected = found.sha256.ok_or(ImageError::MissingHash)?;
    let digest: [u8; 32] = Sha256::digest(image.hashed).into();
    if digest[..] != *expected {
        return Err(ImageError::HashMismatch);
    }
    let signed = !keys.is_empty();
    if signed {
        check_signature(&image, keys, &digest)?;
    }
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
        security_counter,
        behaviour,
        signed,
    })
}
