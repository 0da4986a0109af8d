//! The OTA layer's one error enum (the job store's errors inside it).

use super::job::IllegalTransition;
use super::store::StoreError;

/// Errors of the OTA layer.
#[derive(Debug, thiserror::Error)]
pub enum OtaError {
    #[error(transparent)]
    IllegalTransition(#[from] IllegalTransition),
    #[error("job {id} is {state}: nothing left to do")]
    Finished { id: String, state: String },
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The install gate ([`crate::flasher::InstallGate`]) held the job back before the ECU was
    /// asked to install the image (a cancel of `hil ota serve`).
    #[error("stopped before the ecu was asked to install the image: {reason}")]
    Stopped { reason: String },
}
