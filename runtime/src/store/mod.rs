//! Store adapters and the one type the commands use: [`AnyStore`] dispatches to
//! S3 or a local directory, chosen by the `--store` URL.

#[cfg(feature = "real")]
mod any;
pub mod file;
#[cfg(feature = "real")]
pub mod s3;
#[cfg(feature = "real")]
pub mod sealed;
pub mod settings;

#[cfg(feature = "real")]
pub use any::{AnyReader, AnyStore, AnyUpload, Backend};
pub use file::FileStore;
#[cfg(feature = "real")]
pub use s3::S3Store;
