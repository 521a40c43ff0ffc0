//! [`AnyStore`]: S3 or a local directory, chosen by the `--store` URL.

use super::{file, s3, FileStore, S3Store};
use crate::ports::{BoxError, ByteSource, ObjectInfo, Part, SnapshotStore, StoreError, Upload};
use crate::store::settings::{StoreSettings, StoreUrl};
use bytes::Bytes;

#[derive(Clone)]
pub enum AnyStore {
    S3(S3Store),
    File(FileStore),
}

pub enum AnyUpload {
    S3(s3::S3Upload),
    File(file::FileUpload),
}

pub enum AnyReader {
    S3(s3::S3Reader),
    File(file::FileReader),
}

impl AnyStore {
    pub async fn open(settings: &StoreSettings) -> Result<AnyStore, StoreError> {
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
                Ok(AnyStore::S3(store))
            }
            StoreUrl::File { root } => FileStore::open(root).map(AnyStore::File),
        }
    }
}

impl Upload for AnyUpload {
    async fn put_part(&self, part: Part) -> Result<(), StoreError> {
        match self {
            AnyUpload::S3(upload) => upload.put_part(part).await,
            AnyUpload::File(upload) => upload.put_part(part).await,
        }
    }
    async fn complete(self) -> Result<ObjectInfo, StoreError> {
        match self {
            AnyUpload::S3(upload) => upload.complete().await,
            AnyUpload::File(upload) => upload.complete().await,
        }
    }
    async fn abort(self) {
        match self {
            AnyUpload::S3(upload) => upload.abort().await,
            AnyUpload::File(upload) => upload.abort().await,
        }
    }
}

impl ByteSource for AnyReader {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, BoxError> {
        match self {
            AnyReader::S3(reader) => reader.next_chunk().await,
            AnyReader::File(reader) => reader.next_chunk().await,
        }
    }
}

impl SnapshotStore for AnyStore {
    type Upload = AnyUpload;
    type Reader = AnyReader;

    fn location(&self, key: &str) -> String {
        match self {
            AnyStore::S3(store) => store.location(key),
            AnyStore::File(store) => store.location(key),
        }
    }
    async fn begin_upload(&self, key: &str) -> Result<AnyUpload, StoreError> {
        match self {
            AnyStore::S3(store) => store.begin_upload(key).await.map(AnyUpload::S3),
            AnyStore::File(store) => store.begin_upload(key).await.map(AnyUpload::File),
        }
    }
    async fn put_small(&self, key: &str, body: Bytes, if_absent: bool) -> Result<(), StoreError> {
        match self {
            AnyStore::S3(store) => store.put_small(key, body, if_absent).await,
            AnyStore::File(store) => store.put_small(key, body, if_absent).await,
        }
    }
    async fn get(&self, key: &str) -> Result<AnyReader, StoreError> {
        match self {
            AnyStore::S3(store) => store.get(key).await.map(AnyReader::S3),
            AnyStore::File(store) => store.get(key).await.map(AnyReader::File),
        }
    }
    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        match self {
            AnyStore::S3(store) => store.head(key).await,
            AnyStore::File(store) => store.head(key).await,
        }
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        match self {
            AnyStore::S3(store) => store.list(prefix).await,
            AnyStore::File(store) => store.list(prefix).await,
        }
    }
    async fn copy(&self, from: &str, to: &str) -> Result<(), StoreError> {
        match self {
            AnyStore::S3(store) => store.copy(from, to).await,
            AnyStore::File(store) => store.copy(from, to).await,
        }
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self {
            AnyStore::S3(store) => store.delete(key).await,
            AnyStore::File(store) => store.delete(key).await,
        }
    }
}
