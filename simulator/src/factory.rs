//! Factory installs into a flash file: the image is verified before the flash is touched, and
//! the file appears complete or not at all.
//!
//! | step | what | a refusal or a kill here leaves |
//! |---|---|---|
//! | 1 | [`check`]: parse, hash, signature against the configured keys, fits the primary slot | the flash file as it was (or none) |
//! | 2 | a new device in `NAME.new` beside the target: erased, factory image and confirmed trailer written, fsync | the flash file as it was; a stale `NAME.new`, overwritten next time |
//! | 3 | rename `NAME.new` to `NAME`, fsync the directory | the old file or the complete new one |
//!
//! `ecu-sim provision` and the first start of `ecu-sim serve` on a new state directory both
//! go through [`install`], so `kill -9` at any instant of either leaves a flash that starts.

use std::path::{Path, PathBuf};

use crate::boot::{Layout, Slot, UpdateError};
use crate::ecu::provision;
use crate::flash::{FileFlash, FlashError, Geometry};
use crate::image::{ImageError, ImageInfo, Keyring, verify};

/// Why a factory install was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum FactoryError {
    #[error("image refused: {0}")]
    Image(#[from] ImageError),
    #[error(
        "image refused: its {len} bytes do not fit the primary slot's {capacity}-byte image area"
    )]
    TooLarge { len: usize, capacity: u32 },
    #[error(transparent)]
    Flash(#[from] FlashError),
    #[error("provisioning: {0}")]
    Update(#[from] UpdateError),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What the bootloader would check of a factory image, before anything is written: the
/// verifier (structure, hash, signature if `keys` is not empty; security counter from 0) and
/// the primary slot's image area.
pub fn check(layout: &Layout, keys: &Keyring, image: &[u8]) -> Result<ImageInfo, FactoryError> {
    let capacity = layout.slot(Slot::Primary).image_capacity();
    if image.len() > capacity as usize {
        return Err(FactoryError::TooLarge {
            len: image.len(),
            capacity,
        });
    }
    Ok(verify(image, keys, 0)?)
}

/// Install `image` as the factory image in the flash file `path` (created if missing; an
/// existing one must match `geometry`), atomically: see the [module docs](self). Returns the
/// verified image's facts.
pub fn install(
    path: &Path,
    geometry: &Geometry,
    layout: &Layout,
    keys: &Keyring,
    image: &[u8],
) -> Result<ImageInfo, FactoryError> {
    let info = check(layout, keys, image)?;
    if path.exists() {
        // Only to refuse a file of another geometry, as every other command does.
        let len = std::fs::metadata(path).map_err(io(path))?.len();
        if len != u64::from(geometry.size()) {
            return Err(FlashError::BadGeometry(format!(
                "{} holds {len} bytes but the geometry is {} bytes",
                path.display(),
                geometry.size()
            ))
            .into());
        }
    }
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".new");
    let tmp = path.with_file_name(name);
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&tmp)(e)),
        _ => {}
    }
    let mut flash = FileFlash::open(&tmp, geometry.clone(), 0)?;
    provision(&mut flash, layout, image)?;
    flash.flush()?;
    drop(flash);
    std::fs::rename(&tmp, path).map_err(io(path))?;
    sync_dir(path)?;
    Ok(info)
}

/// Make a rename in `path`'s directory durable.
fn sync_dir(path: &Path) -> Result<(), FactoryError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> FactoryError + '_ {
    move |source| FactoryError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::BootMode;
    use crate::flash::Flash;
    use crate::image::{ImageBuilder, Version, dev_key};

    fn setup() -> (Geometry, Layout, Keyring, Vec<u8>) {
        let geometry = Geometry::uniform(4096, 3 + 2 * 8 + 1, 8).unwrap();
        let layout = Layout::auto(&geometry, BootMode::SwapScratch).unwrap();
        let keys = Keyring::new().with_key(dev_key("oem").verifying_key());
        let image = ImageBuilder::new(Version::new(1, 0, 0), vec![7; 5000]).sign(&dev_key("oem"));
        (geometry, layout, keys, image)
    }

    #[test]
    fn a_refused_image_creates_nothing_and_a_stale_temp_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flash.bin");
        let (geometry, layout, keys, image) = setup();
        let err = install(&path, &geometry, &layout, &keys, &image[..100]).unwrap_err();
        assert!(
            matches!(err, FactoryError::Image(ImageError::Truncated { .. })),
            "{err}"
        );
        assert!(!path.exists());
        // A kill during an earlier install left half a temp file.
        std::fs::write(dir.path().join("flash.bin.new"), [0u8; 100]).unwrap();
        let info = install(&path, &geometry, &layout, &keys, &image).unwrap();
        assert_eq!(info.header.version, Version::new(1, 0, 0));
        assert!(!dir.path().join("flash.bin.new").exists());
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            u64::from(geometry.size())
        );
        let flash = FileFlash::open(&path, geometry, 0).unwrap();
        let mut head = vec![0; image.len()];
        let at = layout.slot(Slot::Primary).region.offset;
        flash.read(at, &mut head).unwrap();
        assert_eq!(head, image);
    }
}
