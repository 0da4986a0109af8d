//! Building signed images (and the development keys).

use ed25519_dalek::Signer as _;
use p256::ecdsa::signature::hazmat::PrehashSigner as _;
use rand_chacha::rand_core::SeedableRng as _;
use sha2::{Digest as _, Sha256};

use super::*;

/// How to sign: imgtool's `--sha`, `--pure` and `--public-key-format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SignOptions {
    /// The image hash; `None` is imgtool's `--sha auto`: the first of the key's
    /// [`KeyKind::hashes`] (SHA-384 for P-384, SHA-512 for pure ed25519, SHA-256 otherwise).
    pub hash: Option<HashAlg>,
    /// Sign the image itself rather than its hash (ed25519 only).
    pub pure: bool,
    pub key_format: KeyFormat,
}

/// How an image names its key: imgtool's `--public-key-format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeyFormat {
    /// KEYHASH (`0x01`): the key's hash (`hash`, the default).
    #[default]
    Hash,
    /// PUBKEY (`0x02`): the whole key (`full`).
    Full,
}

/// The development key of `kind` named `name`: [`dev_key`] for ed25519, otherwise a key
/// generated from a ChaCha20 generator seeded with `sha256("ecu-sim dev key:" + kind + ":" +
/// name)`. **Insecure, for simulation only.**
pub fn dev_private_key(kind: KeyKind, name: &str) -> PrivateKey {
    if kind == KeyKind::Ed25519 {
        return PrivateKey::Ed25519(dev_key(name));
    }
    let seed: [u8; 32] = Sha256::digest(format!("ecu-sim dev key:{kind}:{name}")).into();
    PrivateKey::generate(kind, &mut rand_chacha::ChaCha20Rng::from_seed(seed))
}

/// Deterministic development key `name`: `SigningKey::from_bytes(sha256("ecu-sim dev key:" +
/// name))`. Anybody can compute it: **insecure, for simulation only**, never for a real device.
pub fn dev_key(name: &str) -> SigningKey {
    let seed: [u8; 32] = Sha256::digest(format!("ecu-sim dev key:{name}")).into();
    SigningKey::from_bytes(&seed)
}

/// Builds MCUboot images the way `imgtool sign --pad-header` lays them out.
///
/// Protected TLVs are written in imgtool's order: SEC_CNT, then the simulation TLV, then
/// [`ImageBuilder::protected_tlv`]s in the order given (imgtool's `--custom-tlv`s). The
/// unprotected area holds SHA256, then KEYHASH and ED25519 when signed.
#[derive(Clone, Debug)]
pub struct ImageBuilder {
    version: Version,
    payload: Vec<u8>,
    header_size: u16,
    load_addr: u32,
    security_counter: Option<u32>,
    behaviour: Option<Behaviour>,
    custom: Vec<(u16, Vec<u8>)>,
    erased_val: u8,
    encrypted: Option<AesKeySize>,
}

fn push_tlv(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = u16::try_from(value.len()).expect("a tlv value is at most 65535 bytes");
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(value);
}

/// A TLV area: its info (`magic`, size including the info) and `entries`.
fn tlv_area(magic: u16, entries: &[u8]) -> Vec<u8> {
    let size = u16::try_from(entries.len() + TLV_INFO_SIZE).expect("a tlv area is at most 64 KiB");
    let mut out = Vec::with_capacity(usize::from(size));
    out.extend_from_slice(&magic.to_le_bytes());
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(entries);
    out
}

impl ImageBuilder {
    /// An image of `payload` with header size 0x200 padded with `0xff`, load address 0, no
    /// security counter and no simulation TLV.
    pub fn new(version: Version, payload: Vec<u8>) -> Self {
        ImageBuilder {
            version,
            payload,
            header_size: 0x200,
            load_addr: 0,
            security_counter: None,
            behaviour: None,
            custom: Vec::new(),
            erased_val: 0xff,
            encrypted: None,
        }
    }

    /// Header area size, like `imgtool --header-size N --pad-header`: the 32-byte header, then
    /// the erased value up to `n` bytes.
    ///
    /// # Panics
    /// If `n` < 32.
    pub fn header_size(mut self, n: u16) -> Self {
        assert!(
            usize::from(n) >= Header::SIZE,
            "header size {n} is smaller than the 32-byte header"
        );
        self.header_size = n;
        self
    }

    /// What fills the header area after the 32-byte header: `0xff` unless told otherwise,
    /// like `imgtool --pad-header` with `-R/--erased-val` (`0` or `0xff`).
    pub fn erased_val(mut self, v: u8) -> Self {
        self.erased_val = v;
        self
    }

    /// `ih_load_addr`; like imgtool, a non-zero address also sets [`IMAGE_F_RAM_LOAD`].
    pub fn load_addr(mut self, a: u32) -> Self {
        self.load_addr = a;
        self
    }

    /// Prepare the image for encryption, as `imgtool sign --encrypt` does before hashing: the
    /// header flag of `aes` (`0x04` / `0x08`) and the payload padded with zeros to a multiple
    /// of 16 bytes. The image it builds is the plaintext (hashed and signed as such);
    /// [`super::encrypt_image`] then adds the ENC TLV and encrypts the payload.
    pub fn encrypted(mut self, aes: AesKeySize) -> Self {
        self.encrypted = Some(aes);
        self
    }

    /// Add a SEC_CNT TLV (protected), like `imgtool --security-counter`.
    pub fn security_counter(mut self, c: u32) -> Self {
        self.security_counter = Some(c);
        self
    }

    /// Add the simulation TLV (protected).
    pub fn behaviour(mut self, b: Behaviour) -> Self {
        self.behaviour = Some(b);
        self
    }

    /// Add a raw protected TLV, like `imgtool --custom-tlv`. Not checked: tests use it to
    /// build odd images (duplicates, bad lengths, unknown behaviours).
    pub fn protected_tlv(mut self, kind: u16, value: Vec<u8>) -> Self {
        self.custom.push((kind, value));
        self
    }

    /// Header area, payload and protected TLV area: the hashed bytes.
    ///
    /// # Panics
    /// If the payload is 4 GiB or more, or the protected TLVs exceed 64 KiB.
    pub(super) fn hashed_part(&self) -> Vec<u8> {
        let mut entries = Vec::new();
        if let Some(c) = self.security_counter {
            push_tlv(&mut entries, TLV_SEC_CNT, &c.to_le_bytes());
        }
        if let Some(b) = self.behaviour {
            push_tlv(&mut entries, TLV_SIM_BEHAVIOUR, &b.encode());
        }
        for (kind, value) in &self.custom {
            push_tlv(&mut entries, *kind, value);
        }
        let protected = if entries.is_empty() {
            Vec::new()
        } else {
            tlv_area(TLV_PROT_INFO_MAGIC, &entries)
        };
        let padding = match self.encrypted {
            Some(_) => self.payload.len().next_multiple_of(16) - self.payload.len(),
            None => 0,
        };
        let ram_load = if self.load_addr != 0 {
            IMAGE_F_RAM_LOAD
        } else {
            0
        };
        let header = Header {
            load_addr: self.load_addr,
            hdr_size: self.header_size,
            protect_tlv_size: len_u16(&protected),
            img_size: u32::try_from(self.payload.len() + padding)
                .expect("payload is less than 4 GiB"),
            flags: ram_load | self.encrypted.map_or(0, AesKeySize::flag),
            version: self.version,
        };
        // Room for the largest unprotected area signing writes: info 4, SHA512 68, SIG_PURE
        // 5, PUBKEY of an RSA-3072 key 402, RSA3072_PSS 388.
        let mut out = Vec::with_capacity(
            usize::from(self.header_size) + self.payload.len() + protected.len() + 867,
        );
        out.extend_from_slice(&header.encode());
        out.resize(usize::from(self.header_size), self.erased_val);
        out.extend_from_slice(&self.payload);
        out.resize(out.len() + padding, 0);
        out.extend_from_slice(&protected);
        out
    }

    /// `hashed` followed by an unprotected area of `tlvs`.
    pub(super) fn finish(mut hashed: Vec<u8>, tlvs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut entries = Vec::new();
        for (kind, value) in tlvs {
            push_tlv(&mut entries, *kind, value);
        }
        hashed.extend_from_slice(&tlv_area(TLV_INFO_MAGIC, &entries));
        hashed
    }

    /// The image with SHA256, KEYHASH and ED25519 (signature of the digest) TLVs: what
    /// `imgtool sign -k ed25519.pem` writes.
    pub fn sign(&self, key: &SigningKey) -> Vec<u8> {
        self.sign_with(&PrivateKey::Ed25519(key.clone()), &SignOptions::default())
            .expect("ed25519 with sha256 is a valid pairing")
    }

    /// The image signed with `key` as `imgtool sign -k KEY [--sha N] [--pure]
    /// [--public-key-format full]` signs it. The unprotected area holds, in imgtool's order:
    /// the hash TLV, SIG_PURE (`0x25`, value `01`) when pure, KEYHASH (the key's MCUboot
    /// bytes hashed with the image hash) or PUBKEY (the bytes themselves), the signature.
    ///
    /// ed25519 and ECDSA signatures are deterministic (RFC 8032, RFC 6979); the RSA-PSS salt
    /// comes from a ChaCha20 generator seeded with the digest, so the same image and key give
    /// the same bytes.
    ///
    /// Errors: [`ImageError::NotASigningKey`] for an X25519 key,
    /// [`ImageError::PureNotEd25519`], [`ImageError::HashNotForSignature`] for a hash
    /// imgtool refuses with this key (`--sha 384` with ed25519, ...).
    pub fn sign_with(
        &self,
        key: &PrivateKey,
        options: &SignOptions,
    ) -> Result<Vec<u8>, ImageError> {
        let kind = key.kind();
        let Some(public) = key.public() else {
            return Err(ImageError::NotASigningKey { found: kind });
        };
        if options.pure && kind != KeyKind::Ed25519 {
            return Err(ImageError::PureNotEd25519 { key: kind });
        }
        let signature = SignatureKind::of(kind, options.pure)
            .ok_or(ImageError::NotASigningKey { found: kind })?;
        let hash = options.hash.unwrap_or(signature.hashes()[0]);
        if !signature.hashes().contains(&hash) {
            return Err(ImageError::HashNotForSignature { hash, signature });
        }
        let hashed = self.hashed_part();
        let digest = hash.digest(&hashed);
        let sig = match key {
            PrivateKey::Ed25519(k) => {
                let message = if options.pure {
                    &hashed[..]
                } else {
                    &digest[..]
                };
                k.sign(message).to_bytes().to_vec()
            }
            PrivateKey::EcdsaP256(k) => {
                let sig: p256::ecdsa::Signature =
                    k.sign_prehash(&digest).expect("a 32-byte digest signs");
                sig.to_der().as_bytes().to_vec()
            }
            PrivateKey::EcdsaP384(k) => {
                let sig: p384::ecdsa::Signature =
                    k.sign_prehash(&digest).expect("a 48-byte digest signs");
                sig.to_der().as_bytes().to_vec()
            }
            PrivateKey::Rsa(k) => {
                let seed: [u8; 32] = Sha256::digest(&digest).into();
                let mut rng = rand_chacha::ChaCha20Rng::from_seed(seed);
                k.sign_with_rng(
                    &mut rng,
                    rsa::Pss::new_with_salt::<Sha256>(RSA_PSS_SALT_LEN),
                    &digest,
                )
                .expect("a 2048- or 3072-bit key signs a sha-256 digest")
            }
            PrivateKey::X25519(_) => return Err(ImageError::NotASigningKey { found: kind }),
        };
        let key_tlv = match options.key_format {
            KeyFormat::Hash => (TLV_KEYHASH, public.keyhash(hash)),
            KeyFormat::Full => (TLV_PUBKEY, public.mcuboot_bytes()),
        };
        let sig_tlv = kind
            .signature_tlv()
            .ok_or(ImageError::NotASigningKey { found: kind })?;
        let mut tlvs: Vec<(u16, &[u8])> = vec![(hash.tlv(), &digest)];
        if options.pure {
            tlvs.push((TLV_SIG_PURE, &[1]));
        }
        tlvs.push((key_tlv.0, &key_tlv.1));
        tlvs.push((sig_tlv, &sig));
        Ok(Self::finish(hashed, &tlvs))
    }

    /// The image with the SHA256 TLV only (for a bootloader without keys).
    pub fn build_unsigned(&self) -> Vec<u8> {
        let hashed = self.hashed_part();
        let digest = HashAlg::Sha256.digest(&hashed);
        Self::finish(hashed, &[(TLV_SHA256, &digest)])
    }
}
