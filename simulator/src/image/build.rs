//! Building signed images (and the development keys).

use super::*;

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
        let header = Header {
            load_addr: self.load_addr,
            hdr_size: self.header_size,
            protect_tlv_size: len_u16(&protected),
            img_size: u32::try_from(self.payload.len()).expect("payload is less than 4 GiB"),
            flags: if self.load_addr != 0 {
                IMAGE_F_RAM_LOAD
            } else {
                0
            },
            version: self.version,
        };
        // Room for a signed image's unprotected area too: 4 + 36 (SHA256) + 36 + 68.
        let mut out = Vec::with_capacity(
            usize::from(self.header_size) + self.payload.len() + protected.len() + 144,
        );
        out.extend_from_slice(&header.encode());
        out.resize(usize::from(self.header_size), self.erased_val);
        out.extend_from_slice(&self.payload);
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

    /// The image with SHA256, KEYHASH and ED25519 (signature of the digest) TLVs.
    pub fn sign(&self, key: &SigningKey) -> Vec<u8> {
        let hashed = self.hashed_part();
        let digest: [u8; 32] = Sha256::digest(&hashed).into();
        let keyhash = Keyring::keyhash(&key.verifying_key());
        let sig = key.sign(&digest).to_bytes();
        Self::finish(
            hashed,
            &[
                (TLV_SHA256, &digest),
                (TLV_KEYHASH, &keyhash),
                (TLV_ED25519, &sig),
            ],
        )
    }

    /// The image with the SHA256 TLV only (for a bootloader without keys).
    pub fn build_unsigned(&self) -> Vec<u8> {
        let hashed = self.hashed_part();
        let digest: [u8; 32] = Sha256::digest(&hashed).into();
        Self::finish(hashed, &[(TLV_SHA256, &digest)])
    }
}
