//! [`AnyStore`]: S3 or a local directory, chosen by the `--store` URL, behind
//! client-side encryption when a key is configured ([`SealedStore`]).

use super::sealed::{self, SealedReader, SealedStore, SealedUpload};
use super::{file, s3, FileStore, S3Store};
use crate::ports::{BoxError, ByteSource, ObjectInfo, Part, SnapshotStore, StoreError, Upload};
use crate::store::settings::{StoreSettings, StoreUrl};
use bytes::Bytes;

/// The store every command and the agent use.
pub type AnyStore = SealedStore<Backend>;
pub type AnyUpload = SealedUpload<BackendUpload>;
pub type AnyReader = SealedReader<BackendReader>;

#[derive(Clone)]
pub enum Backend {
    S3(S3Store),
    File(FileStore),
}

pub enum BackendUpload {
    S3(s3::S3Upload),
    File(file::FileUpload),
}

pub enum BackendReader {
    S3(s3::S3Reader),
    File(file::FileReader),
}

impl SealedStore<Backend> {
    /// Opens the store the settings name, with its client-side key read and checked.
    pub async fn open(settings: &StoreSettings) -> Result<AnyStore, StoreError> {
        let key = match &settings.sealing {
            Some(source) => Some(sealed::read_key(source)?),
            None => None,
        };
        Ok(SealedStore::new(Backend::open(settings).await?, key))
    }
}

impl Backend {
    async fn open(settings: &StoreSettings) -> Result<Backend, StoreError> {
        match &settings.url {
            StoreUrl::S3 { bucket, .. } => {
                let endpoint = settings.s3.endpoint.clone().unwrap_or_else(|| "AWS S3".into());
                let ca = match &settings.s3.ca_file {
                    Some(path) => Some(s3::read_ca_file(path, &endpoint)?),
                    None => None,
                };
                if s3::uses_tls(settings) && ca.is_none() && !s3::ca_roots_available() {
                    return Err(StoreError::NoCaRoots { endpoint });
                }
                let store = S3Store::connect(settings, bucket, ca).await?;
                store.check_bucket().await?;
                Ok(Backend::S3(store))
            }
            StoreUrl::File { root } => FileStore::open(root).map(Backend::File),
        }
    }
}

impl Upload for BackendUpload {
    async fn put_part(&self, part: Part) -> Result<(), StoreError> {
        match self {
            BackendUpload::S3(upload) => upload.put_part(part).await,
            BackendUpload::File(upload) => upload.put_part(part).await,
        }
    }
    async fn complete(self) -> Result<ObjectInfo, StoreError> {
        match self {
            BackendUpload::S3(upload) => upload.complete().await,
            BackendUpload::File(upload) => upload.complete().await,
        }
    }
    async fn abort(self) {
        match self {
            BackendUpload::S3(upload) => upload.abort().await,
            BackendUpload::File(upload) => upload.abort().await,
        }
    }
}

impl ByteSource for BackendReader {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, BoxError> {
        match self {
            BackendReader::S3(reader) => reader.next_chunk().await,
            BackendReader::File(reader) => reader.next_chunk().await,
        }
    }
}

impl SnapshotStore for Backend {
    type Upload = BackendUpload;
    type Reader = BackendReader;

    fn location(&self, key: &str) -> String {
        match self {
            Backend::S3(store) => store.location(key),
            Backend::File(store) => store.location(key),
        }
    }
    async fn begin_upload(&self, key: &str) -> Result<BackendUpload, StoreError> {
        match self {
            Backend::S3(store) => store.begin_upload(key).await.map(BackendUpload::S3),
            Backend::File(store) => store.begin_upload(key).await.map(BackendUpload::File),
        }
    }
    async fn put_small(&self, key: &str, body: Bytes, if_absent: bool) -> Result<(), StoreError> {
        match self {
            Backend::S3(store) => store.put_small(key, body, if_absent).await,
            Backend::File(store) => store.put_small(key, body, if_absent).await,
        }
    }
    async fn get(&self, key: &str) -> Result<BackendReader, StoreError> {
        match self {
            Backend::S3(store) => store.get(key).await.map(BackendReader::S3),
            Backend::File(store) => store.get(key).await.map(BackendReader::File),
        }
    }
    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        match self {
            Backend::S3(store) => store.head(key).await,
            Backend::File(store) => store.head(key).await,
        }
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        match self {
            Backend::S3(store) => store.list(prefix).await,
            Backend::File(store) => store.list(prefix).await,
        }
    }
    async fn copy(&self, from: &str, to: &str) -> Result<(), StoreError> {
        match self {
            Backend::S3(store) => store.copy(from, to).await,
            Backend::File(store) => store.copy(from, to).await,
        }
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self {
            Backend::S3(store) => store.delete(key).await,
            Backend::File(store) => store.delete(key).await,
        }
    }
}
