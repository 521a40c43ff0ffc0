//! S3 as the store, through aws-sdk-s3: AWS itself or any S3-compatible server
//! (MinIO, SeaweedFS, Ceph) with a custom endpoint and path-style addressing.
//! (About 500 lines on purpose: the client's setup, its error classification and
//! the upload it drives are one adapter, read together.)
//!
//! Every upload is multipart, so nothing appears under a key before
//! `CompleteMultipartUpload`; each part carries a CRC32C checksum that the server
//! verifies (SIMD CRC32C costs a fraction of a second SHA-256 pass; the whole
//! snapshot's SHA-256 is in the manifest and checked on every restore).
//! Options (timeouts, retries, checksums) are set explicitly rather than left to
//! SDK defaults, which change between releases.

use crate::ports::{BoxError, ByteSource, ObjectInfo, Part, SnapshotStore, StoreError, Upload};
use crate::store::settings::StoreSettings;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};
use std::sync::Mutex;
use std::time::Duration;

const DEFAULT_REGION: &str = "us-east-1";
/// Objects up to this size are copied with one CopyObject; larger ones in parts of this size.
const COPY_PART_BYTES: u64 = 64 << 20;
const COPY_CONCURRENCY: usize = 4;

#[derive(Clone, Debug)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
    /// For messages: the custom endpoint or "AWS S3 (region)".
    endpoint: String,
    /// Whether part bodies go into the SigV4 signature (a SHA-256 pass over every
    /// byte). Only over plain HTTP: over TLS the transport protects them, and the
    /// signed CRC32C header and the manifest's SHA-256 still catch corruption.
    sign_payload: bool,
}

impl S3Store {
    /// A client for `bucket`; `ca_pem` is a private CA to trust besides the system's
    /// roots (`--s3-ca-file`, read by [`read_ca_file`]).
    pub async fn connect(
        settings: &StoreSettings,
        bucket: &str,
        ca_pem: Option<Vec<u8>>,
    ) -> Result<S3Store, StoreError> {
        let region = settings
            .s3
            .region
            .clone()
            .or_else(|| std::env::var("AWS_REGION").ok())
            .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
            .unwrap_or_else(|| DEFAULT_REGION.to_owned());
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
            .operation_attempt_timeout(settings.timeout)
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(region.clone()))
            .timeout_config(timeouts)
            .retry_config(RetryConfig::standard().with_max_attempts(3));
        if !uses_tls(settings) {
            // Plain HTTP needs no CA roots: a scratch or distroless container has none,
            // and the default HTTPS client refuses to start without them.
            loader = loader.http_client(aws_smithy_http_client::Builder::new().build_http());
        } else if let Some(ca_pem) = ca_pem {
            use aws_smithy_http_client::tls;
            let trust = tls::TrustStore::empty().with_native_roots(ca_roots_available()).with_pem_certificate(ca_pem);
            let context =
                tls::TlsContext::builder().with_trust_store(trust).build().map_err(|error| StoreError::CaFile {
                    path: settings.s3.ca_file.as_deref().map(|path| path.display().to_string()).unwrap_or_default(),
                    endpoint: settings.s3.endpoint.clone().unwrap_or_else(|| "AWS S3".into()),
                    detail: error.to_string(),
                })?;
            let client = aws_smithy_http_client::Builder::new()
                .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::AwsLc))
                .tls_context(context)
                .build_https();
            loader = loader.http_client(client);
        }
        let shared = loader.load().await;
        let mut builder = aws_sdk_s3::config::Builder::from(&shared)
            // We send our own CRC32C part checksums; the SDK's automatic CRCs confuse some
            // S3-compatible servers, so only send what an operation requires.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        let endpoint = match &settings.s3.endpoint {
            Some(endpoint) => {
                builder = builder.endpoint_url(endpoint).force_path_style(true);
                endpoint.clone()
            }
            None => format!("AWS S3 ({region})"),
        };
        Ok(S3Store {
            client: aws_sdk_s3::Client::from_conf(builder.build()),
            bucket: bucket.to_owned(),
            endpoint,
            sign_payload: !uses_tls(settings),
        })
    }

    /// A store over a client the caller configured (credentials, endpoint) itself.
    pub fn from_client(client: aws_sdk_s3::Client, bucket: &str, endpoint: &str) -> S3Store {
        S3Store {
            client,
            bucket: bucket.to_owned(),
            endpoint: endpoint.to_owned(),
            sign_payload: endpoint.starts_with("http://"),
        }
    }

    /// Fails early, and clearly, on a wrong bucket or wrong credentials. Some
    /// S3-compatible servers create missing buckets on first write; a typo in
    /// `--store` must not silently start a second backup location.
    pub async fn check_bucket(&self) -> Result<(), StoreError> {
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => Ok(()),
            Err(error) => match self.classify("open bucket", "", error) {
                StoreError::NotFound { .. } => {
                    Err(StoreError::NoSuchBucket { bucket: self.bucket.clone(), endpoint: self.endpoint.clone() })
                }
                other => Err(other),
            },
        }
    }

    async fn create_upload(&self, key: &str, checksum: Option<ChecksumAlgorithm>) -> Result<S3Upload, StoreError> {
        let output = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .set_checksum_algorithm(checksum)
            .send()
            .await
            .map_err(|error| self.classify("start upload of", key, error))?;
        let upload_id = output.upload_id.ok_or_else(|| StoreError::Request {
            operation: "start upload of",
            location: self.location(key),
            detail: "the server returned no upload id".into(),
        })?;
        Ok(S3Upload { store: self.clone(), key: key.to_owned(), upload_id, parts: Mutex::new(Vec::new()) })
    }

    fn classify<E>(&self, operation: &'static str, key: &str, error: SdkError<E, HttpResponse>) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let location = self.location(key);
        let status = error.raw_response().map(|response| response.status().as_u16());
        match &error {
            SdkError::DispatchFailure(failure) => {
                let detail = failure
                    .as_connector_error()
                    .map(|connector| error_chain(connector))
                    .unwrap_or_else(|| "dispatch failure".into());
                let endpoint = self.endpoint.clone();
                return if detail.contains("TLS handshake") || detail.contains("certificate") {
                    StoreError::Tls { endpoint, detail }
                } else {
                    StoreError::Unreachable { endpoint, detail }
                };
            }
            SdkError::TimeoutError(_) => {
                return StoreError::Unreachable {
                    endpoint: self.endpoint.clone(),
                    detail: format!("{operation} timed out"),
                }
            }
            SdkError::ConstructionFailure(_) => {
                return StoreError::Request { operation, location, detail: error_chain(&error) }
            }
            _ => {}
        }
        let code = error.code().unwrap_or_default().to_owned();
        let message = error.message().unwrap_or_default().to_owned();
        let detail = if code.is_empty() && message.is_empty() {
            format!("HTTP {}", status.unwrap_or(0))
        } else {
            format!("{code}: {message}").trim_end_matches([':', ' ']).to_owned()
        };
        match (code.as_str(), status) {
            ("NoSuchBucket", _) => {
                StoreError::NoSuchBucket { bucket: self.bucket.clone(), endpoint: self.endpoint.clone() }
            }
            ("NoSuchKey" | "NotFound", _) | (_, Some(404)) => StoreError::NotFound { location },
            ("PreconditionFailed" | "ConditionalRequestConflict", _) | (_, Some(412)) => {
                StoreError::AlreadyExists { location }
            }
            ("AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "ExpiredToken", _)
            | (_, Some(401 | 403)) => StoreError::AccessDenied { location, detail },
            _ if error_chain(&error).contains("no credentials") || error_chain(&error).contains("credentials") => {
                StoreError::AccessDenied { location, detail: error_chain(&error) }
            }
            _ => StoreError::Request { operation, location, detail },
        }
    }
}

/// The error and its sources on one line: the SDK's top-level messages alone
/// ("dispatch failure") do not say what went wrong.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn sha256_base64(bytes: &[u8]) -> String {
    aws_smithy_types::base64::encode(Sha256::digest(bytes))
}

fn crc32c_base64(bytes: &[u8]) -> String {
    let crc = crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, bytes) as u32;
    aws_smithy_types::base64::encode(crc.to_be_bytes())
}

/// Whether the store is reached over TLS: AWS itself, or an `https://` endpoint.
pub fn uses_tls(settings: &StoreSettings) -> bool {
    !settings.s3.endpoint.as_deref().is_some_and(|endpoint| endpoint.starts_with("http://"))
}

/// The PEM CA certificate `--s3-ca-file` names, checked to hold one.
pub fn read_ca_file(path: &std::path::Path, endpoint: &str) -> Result<Vec<u8>, StoreError> {
    let fail =
        |detail: String| StoreError::CaFile { path: path.display().to_string(), endpoint: endpoint.to_owned(), detail };
    let bytes = std::fs::read(path).map_err(|error| fail(error.to_string()))?;
    if !String::from_utf8_lossy(&bytes).contains("-----BEGIN CERTIFICATE-----") {
        return Err(fail("no PEM certificate in it".into()));
    }
    Ok(bytes)
}

/// Whether the HTTPS client would trust anyone. It loads the system's CA roots (or
/// SSL_CERT_FILE / SSL_CERT_DIR) the same way; a scratch or distroless image has
/// none, and the client then fails every request (debug builds panic) instead of
/// saying why.
pub fn ca_roots_available() -> bool {
    !rustls_native_certs::load_native_certs().certs.is_empty()
}

pub struct S3Upload {
    store: S3Store,
    key: String,
    upload_id: String,
    parts: Mutex<Vec<CompletedPart>>,
}

impl S3Upload {
    /// UploadPartCopy of bytes `first..=last` of `source` ("bucket/key").
    async fn copy_part(&self, source: &str, number: i32, first: u64, last: u64) -> Result<(), StoreError> {
        let output = self
            .store
            .client
            .upload_part_copy()
            .bucket(&self.store.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .part_number(number)
            .copy_source(source)
            .copy_source_range(format!("bytes={first}-{last}"))
            .send()
            .await
            .map_err(|error| self.store.classify("copy part to", &self.key, error))?;
        let e_tag = output.copy_part_result.and_then(|result| result.e_tag);
        self.record(CompletedPart::builder().part_number(number).set_e_tag(e_tag).build())
    }

    fn record(&self, part: CompletedPart) -> Result<(), StoreError> {
        self.parts
            .lock()
            .map_err(|_| StoreError::Request {
                operation: "upload",
                location: self.store.location(&self.key),
                detail: "part list poisoned by a panic".into(),
            })?
            .push(part);
        Ok(())
    }
}

impl Upload for S3Upload {
    async fn put_part(&self, part: Part) -> Result<(), StoreError> {
        let checksum = crc32c_base64(&part.bytes);
        let request = self
            .store
            .client
            .upload_part()
            .bucket(&self.store.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .part_number(part.number)
            .checksum_algorithm(ChecksumAlgorithm::Crc32C)
            .checksum_crc32_c(&checksum)
            .body(ByteStream::from(part.bytes))
            .customize();
        let request = if self.store.sign_payload { request } else { request.disable_payload_signing() };
        let output = request.send().await.map_err(|error| self.store.classify("upload part of", &self.key, error))?;
        self.record(
            CompletedPart::builder()
                .part_number(part.number)
                .set_e_tag(output.e_tag)
                .checksum_crc32_c(checksum)
                .build(),
        )
    }

    async fn complete(self) -> Result<ObjectInfo, StoreError> {
        let mut parts = std::mem::take(&mut *self.parts.lock().map_err(|_| StoreError::Request {
            operation: "complete upload",
            location: self.store.location(&self.key),
            detail: "part list poisoned by a panic".into(),
        })?);
        parts.sort_by_key(|part| part.part_number);
        let result = self
            .store
            .client
            .complete_multipart_upload()
            .bucket(&self.store.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await;
        if let Err(error) = result {
            let error = self.store.classify("complete upload of", &self.key, error);
            self.abort().await;
            return Err(error);
        }
        self.store.head(&self.key).await?.ok_or_else(|| StoreError::Request {
            operation: "complete upload",
            location: self.store.location(&self.key),
            detail: "object missing right after CompleteMultipartUpload".into(),
        })
    }

    async fn abort(self) {
        let result = self
            .store
            .client
            .abort_multipart_upload()
            .bucket(&self.store.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .send()
            .await;
        if let Err(error) = result {
            // Not fatal: nothing is visible under the key. A bucket lifecycle rule
            // (AbortIncompleteMultipartUpload) reclaims the parts.
            tracing::warn!(key = %self.key, error = %error_chain(&error), "could not abort multipart upload");
        }
    }
}

pub struct S3Reader {
    body: ByteStream,
}

impl ByteSource for S3Reader {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, BoxError> {
        match self.body.next().await {
            Some(Ok(chunk)) => Ok(Some(chunk)),
            Some(Err(error)) => Err(Box::new(error)),
            None => Ok(None),
        }
    }
}

impl SnapshotStore for S3Store {
    type Upload = S3Upload;
    type Reader = S3Reader;

    fn location(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    async fn begin_upload(&self, key: &str) -> Result<S3Upload, StoreError> {
        self.create_upload(key, Some(ChecksumAlgorithm::Crc32C)).await
    }

    async fn put_small(&self, key: &str, body: Bytes, if_absent: bool) -> Result<(), StoreError> {
        let mut request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .checksum_sha256(sha256_base64(&body))
            .body(ByteStream::from(body));
        if if_absent {
            request = request.if_none_match("*");
        }
        request.send().await.map_err(|error| self.classify("write", key, error))?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<S3Reader, StoreError> {
        let output = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|error| self.classify("read", key, error))?;
        Ok(S3Reader { body: output.body })
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        match self.client.head_object().bucket(&self.bucket).key(key).send().await {
            Ok(output) => Ok(Some(ObjectInfo {
                key: key.to_owned(),
                size_bytes: output.content_length.unwrap_or(0).max(0) as u64,
                modified_ms: output.last_modified.and_then(|time| time.to_millis().ok()).map(|ms| ms.max(0) as u64),
            })),
            Err(error) => match self.classify("stat", key, error) {
                StoreError::NotFound { .. } => Ok(None),
                other => Err(other),
            },
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let mut objects = Vec::new();
        let mut continuation: Option<String> = None;
        loop {
            let output = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_continuation_token(continuation.take())
                .send()
                .await
                .map_err(|error| self.classify("list", prefix, error))?;
            for object in output.contents.unwrap_or_default() {
                let Some(key) = object.key else { continue };
                objects.push(ObjectInfo {
                    key,
                    size_bytes: object.size.unwrap_or(0).max(0) as u64,
                    modified_ms: object.last_modified.and_then(|time| time.to_millis().ok()).map(|ms| ms.max(0) as u64),
                });
            }
            match output.next_continuation_token {
                Some(token) if output.is_truncated == Some(true) => continuation = Some(token),
                _ => break,
            }
        }
        objects.sort_by(|left, right| left.key.cmp(&right.key));
        Ok(objects)
    }

    /// Server-side. Up to `COPY_PART_BYTES` one CopyObject; above, a multipart
    /// copy of ranges in parallel: faster on servers that copy data, and the only
    /// way past CopyObject's 5 GiB limit.
    async fn copy(&self, from: &str, to: &str) -> Result<(), StoreError> {
        let source = format!("{}/{from}", self.bucket);
        let size = match self.head(from).await? {
            Some(info) => info.size_bytes,
            None => return Err(StoreError::NotFound { location: self.location(from) }),
        };
        if size <= COPY_PART_BYTES {
            self.client
                .copy_object()
                .bucket(&self.bucket)
                .key(to)
                .copy_source(source)
                .send()
                .await
                .map_err(|error| self.classify("copy to", to, error))?;
            return Ok(());
        }
        // S3 allows 10,000 parts: grow the part for objects over ~640 GiB.
        let part_bytes = COPY_PART_BYTES.max(size.div_ceil(10_000));
        // No checksum algorithm: the server copies bytes it already verified.
        let upload = self.create_upload(to, None).await?;
        let ranges: Vec<(i32, u64, u64)> = (0..size.div_ceil(part_bytes))
            .map(|index| (index as i32 + 1, index * part_bytes, ((index + 1) * part_bytes).min(size) - 1))
            .collect();
        let copied = futures::stream::iter(ranges)
            .map(|(number, first, last)| upload.copy_part(&source, number, first, last))
            .buffer_unordered(COPY_CONCURRENCY)
            .try_for_each(|()| async { Ok(()) })
            .await;
        match copied {
            Ok(()) => upload.complete().await.map(|_| ()),
            Err(error) => {
                upload.abort().await;
                Err(error)
            }
        }
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self.client.delete_object().bucket(&self.bucket).key(key).send().await {
            Ok(_) => Ok(()),
            Err(error) => match self.classify("delete", key, error) {
                StoreError::NotFound { .. } => Ok(()),
                other => Err(other),
            },
        }
    }
}
