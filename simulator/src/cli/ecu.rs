//! The options every verb shares: the flash file, its geometry, the boot mode and the keys.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::boot::{BootConfig, BootMode, Layout};
use crate::ecu::EcuConfig;
use crate::flash::Geometry;
use crate::image::{EncKey, Keyring, dev_key};

#[derive(clap::Args, Debug)]
pub struct EcuArgs {
    /// Flash image file (created erased if missing).
    #[arg(long, global = true, default_value = "ecu-flash.bin")]
    pub flash: PathBuf,
    /// MCUboot upgrade strategy: swap-scratch, swap-move, swap-offset, overwrite or direct-xip
    /// (aliases: swap = swap-scratch, ab = direct-xip, overwrite-only = overwrite).
    #[arg(long, global = true, default_value = "swap-scratch", value_parser = parse_mode)]
    mode: BootMode,
    /// Sector size in bytes (uniform map).
    #[arg(long, global = true, default_value_t = 4096)]
    sector_size: u32,
    /// Number of sectors.
    #[arg(long, global = true, default_value_t = 132)]
    sectors: usize,
    /// Write unit in bytes.
    #[arg(long, global = true, default_value_t = 8)]
    align: usize,
    /// Trusted key: ed25519, ECDSA P-256/P-384 or RSA-2048/3072, as the PEM `imgtool getpub
    /// -e pem` prints (or the private key PEM `imgtool keygen` writes); repeatable.
    #[arg(long, global = true)]
    key: Vec<PathBuf>,
    /// Image decryption key: the private key an image is encrypted for (`imgtool sign
    /// --encrypt PUB`): X25519, EC P-256 or RSA-2048 as `imgtool keygen` writes it, or an
    /// AES-KW key file (16 or 32 bytes, raw or base64 as MCUboot's enc-aes128kw.b64).
    #[arg(long, global = true, value_name = "PEM")]
    enc_key: Option<PathBuf>,
    /// Trusted development key by name (default "oem" when no --key is given); repeatable.
    #[arg(long, global = true)]
    dev_key: Vec<String>,
    /// Boots a test image gets before it is reverted.
    #[arg(long, global = true, default_value_t = 1)]
    max_boot_attempts: u8,
}

fn parse_mode(s: &str) -> Result<BootMode, String> {
    s.parse()
        .map_err(|e: crate::boot::UnknownBootMode| e.to_string())
}

impl EcuArgs {
    pub fn geometry(&self) -> Result<Geometry> {
        Ok(Geometry::uniform(
            self.sector_size,
            self.sectors,
            self.align,
        )?)
    }

    /// The trusted keys: every `--key` file and `--dev-key` name ("oem" without either).
    pub fn keyring(&self) -> Result<Keyring> {
        keyring(&self.key, &self.dev_key)
    }

    /// The ECU these options describe, with its geometry.
    pub fn config(&self) -> Result<(Geometry, EcuConfig)> {
        let geometry = self.geometry()?;
        let config = ecu_config(
            &geometry,
            self.mode,
            self.keyring()?,
            self.enc_key.as_deref(),
            self.max_boot_attempts,
        )?;
        Ok((geometry, config))
    }
}

/// The trusted keys: every key file and development key name ("oem" without either).
pub fn keyring(files: &[PathBuf], dev_keys: &[String]) -> Result<Keyring> {
    let mut keys = Keyring::new();
    for path in files {
        let pem =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        keys.add_pem(&pem)
            .with_context(|| format!("key {}", path.display()))?;
    }
    let names = if files.is_empty() && dev_keys.is_empty() {
        vec!["oem".to_string()]
    } else {
        dev_keys.to_vec()
    };
    for name in names {
        keys.add(dev_key(&name).verifying_key());
    }
    Ok(keys)
}

/// The image decryption key in the file at `path`.
pub fn enc_key(path: Option<&Path>) -> Result<Option<EncKey>> {
    let Some(path) = path else {
        return Ok(None);
    };
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let key =
        EncKey::from_file(&bytes).with_context(|| format!("decryption key {}", path.display()))?;
    Ok(Some(key))
}

/// An ECU on `geometry` booting in `mode` with these keys.
pub fn ecu_config(
    geometry: &Geometry,
    mode: BootMode,
    keys: Keyring,
    enc: Option<&Path>,
    max_boot_attempts: u8,
) -> Result<EcuConfig> {
    let layout = Layout::auto(geometry, mode)?;
    Ok(EcuConfig::new(
        layout,
        BootConfig {
            defect: None,
            max_boot_attempts,
            keys,
        },
    )
    .with_enc_key(enc_key(enc)?))
}
