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
//! SDK defaults, which change between releases. Server-side encryption, when
//! configured, is asked on every write; an SSE-C key goes with every request that
//! touches an object's bytes (the macros below name which).

use crate::ports::{BoxError, ByteSource, ObjectInfo, Part, SnapshotStore, StoreError, Upload};
use crate::store::settings::{Encryption, StoreSettings};
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, ServerSideEncryption};
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
    encryption: Option<Sse>,
}

/// Server-side encryption as the requests carry it.
#[derive(Clone)]
enum Sse {
    S3,
    Kms {
        key_id: Option<String>,
    },
    /// SSE-C: the key and its MD5, base64, as the headers take them.
    Customer {
        key: String,
        md5: String,
    },
}

/// Never the key itself: S3Store is Debug, and Debug output reaches logs.
impl std::fmt::Debug for Sse {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sse::S3 => formatter.write_str("SSE-S3"),
            Sse::Kms { key_id } => write!(formatter, "SSE-KMS({key_id:?})"),
            Sse::Customer { md5, .. } => write!(formatter, "SSE-C(key with MD5 {md5})"),
        }
    }
}

/// The SSE headers of a request that creates an object (PutObject,
/// CreateMultipartUpload, CopyObject).
macro_rules! encrypted {
    ($store:expr, $request:expr) => {
        match &$store.encryption {
            None => $request,
            Some(Sse::S3) => $request.server_side_encryption(ServerSideEncryption::Aes256),
            Some(Sse::Kms { key_id }) => {
                $request.server_side_encryption(ServerSideEncryption::AwsKms).set_ssekms_key_id(key_id.clone())
            }
            Some(Sse::Customer { key, md5 }) => {
                $request.sse_customer_algorithm("AES256").sse_customer_key(key).sse_customer_key_md5(md5)
            }
        }
    };
}

/// The SSE-C key of a request that reads or writes an existing object's bytes
/// (UploadPart, CompleteMultipartUpload, GetObject, HeadObject, UploadPartCopy).
macro_rules! with_customer_key {
    ($store:expr, $request:expr) => {
        match &$store.encryption {
            Some(Sse::Customer { key, md5 }) => {
                $request.sse_customer_algorithm("AES256").sse_customer_key(key).sse_customer_key_md5(md5)
            }
            _ => $request,
        }
    };
}

/// The SSE-C key of a copy's source (CopyObject, UploadPartCopy).
macro_rules! with_copy_source_key {
    ($store:expr, $request:expr) => {
        match &$store.encryption {
            Some(Sse::Customer { key, md5 }) => $request
                .copy_source_sse_customer_algorithm("AES256")
                .copy_source_sse_customer_key(key)
                .copy_source_sse_customer_key_md5(md5),
            _ => $request,
        }
    };
}

/// Drops the SSE-C echo headers from every response before the SDK parses them.
/// lifeboat never reads them, and some S3-compatible servers (SeaweedFS 4.x on
/// HeadObject) send them in a form the SDK refuses, failing the whole call.
#[derive(Debug)]
struct IgnoreCustomerKeyEcho;

impl aws_sdk_s3::config::Intercept for IgnoreCustomerKeyEcho {
    fn name(&self) -> &'static str {
        "IgnoreCustomerKeyEcho"
    }

    fn modify_before_deserialization(
        &self,
        context: &mut aws_sdk_s3::config::interceptors::BeforeDeserializationInterceptorContextMut<'_>,
        _components: &aws_sdk_s3::config::RuntimeComponents,
        _cfg: &mut aws_sdk_s3::config::ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let headers = context.response_mut().headers_mut();
        headers.remove("x-amz-server-side-encryption-customer-algorithm");
        headers.remove("x-amz-server-side-encryption-customer-key-MD5");
        Ok(())
    }
}

/// The encryption `settings` ask for, with an SSE-C key read from its file (32
/// bytes, raw or base64) and checked.
fn server_side_encryption(settings: &StoreSettings) -> Result<Option<Sse>, StoreError> {
    Ok(match &settings.s3.encryption {
        None => None,
        Some(Encryption::S3) => Some(Sse::S3),
        Some(Encryption::Kms { key_id }) => Some(Sse::Kms { key_id: key_id.clone() }),
        Some(Encryption::Customer { key_file }) => {
            let fail = |detail: String| StoreError::SseKeyFile { path: key_file.display().to_string(), detail };
            let bytes = std::fs::read(key_file).map_err(|error| fail(error.to_string()))?;
            let key = customer_key(&bytes).ok_or_else(|| fail(format!("{} bytes, not a 256-bit key", bytes.len())))?;
            use md5::Digest;
            let md5 = aws_smithy_types::base64::encode(md5::Md5::digest(&key));
            Some(Sse::Customer { key: aws_smithy_types::base64::encode(&key), md5 })
        }
    })
}

/// A 256-bit key from a key file's bytes: exactly 32 raw bytes, or base64 text of 32.
fn customer_key(bytes: &[u8]) -> Option<Vec<u8>> {
    if bytes.len() == 32 {
        return Some(bytes.to_vec());
    }
    let text = std::str::from_utf8(bytes).ok()?.trim();
    aws_smithy_types::base64::decode(text).ok().filter(|key| key.len() == 32)
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
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .interceptor(IgnoreCustomerKeyEcho);
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
            encryption: server_side_encryption(settings)?,
        })
    }

    /// A store over a client the caller configured (credentials, endpoint) itself.
    pub fn from_client(client: aws_sdk_s3::Client, bucket: &str, endpoint: &str) -> S3Store {
        S3Store {
            client,
            bucket: bucket.to_owned(),
            endpoint: endpoint.to_owned(),
            sign_payload: endpoint.starts_with("http://"),
            encryption: None,
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
        let request =
            self.client.create_multipart_upload().bucket(&self.bucket).key(key).set_checksum_algorithm(checksum);
        let output =
            encrypted!(self, request).send().await.map_err(|error| self.classify("start upload of", key, error))?;
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
            format!("HTTP {}: {}", status.unwrap_or(0), error_chain(&error))
        } else {
            format!("{code}: {message}").trim_end_matches([':', ' ']).to_owned()
        };
        match (code.as_str(), status) {
            ("NoSuchBucket", _) => {
                StoreError::NoSuchBucket { bucket: self.bucket.clone(), endpoint: self.endpoint.clone() }
            }
            ("NoSuchKey" | "NotFound", _) | (_, Some(404)) => StoreError::NotFound { location },
            // S3 answers a read of an SSE-C object without its key (or with another one)
            // with 400 InvalidRequest / InvalidArgument naming the encryption.
            ("InvalidRequest" | "InvalidArgument" | "AccessDenied", _)
                if ["encrypt", "Encrypt", "SSE", "customer"].iter().any(|word| message.contains(word)) =>
            {
                StoreError::EncryptedWithOtherKey { location, detail }
            }
            ("PreconditionFailed" | "ConditionalRequestConflict", _) | (_, Some(412)) => {
                StoreError::AlreadyExists { location }
            }
            // With SSE-C, S3 refuses a read with another object's key as 403: say both.
            ("AccessDenied", _) | (_, Some(403))
                if matches!(self.encryption, Some(Sse::Customer { .. }))
                    && matches!(operation, "read" | "stat" | "copy to" | "copy part to") =>
            {
                StoreError::EncryptedWithOtherKey { location, detail }
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
        let request = self
            .store
            .client
            .upload_part_copy()
            .bucket(&self.store.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .part_number(number)
            .copy_source(source)
            .copy_source_range(format!("bytes={first}-{last}"));
        let request = with_customer_key!(self.store, request);
        let output = with_copy_source_key!(self.store, request)
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
            .body(ByteStream::from(part.bytes));
        let request = with_customer_key!(self.store, request).customize();
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
        let request = self
            .store
            .client
            .complete_multipart_upload()
            .bucket(&self.store.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build());
        let result = with_customer_key!(self.store, request).send().await;
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
        let request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .checksum_sha256(sha256_base64(&body))
            .body(ByteStream::from(body));
        let mut request = encrypted!(self, request);
        if if_absent {
            request = request.if_none_match("*");
        }
        request.send().await.map_err(|error| self.classify("write", key, error))?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<S3Reader, StoreError> {
        let request = self.client.get_object().bucket(&self.bucket).key(key);
        let output =
            with_customer_key!(self, request).send().await.map_err(|error| self.classify("read", key, error))?;
        Ok(S3Reader { body: output.body })
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        let request = self.client.head_object().bucket(&self.bucket).key(key);
        match with_customer_key!(self, request).send().await {
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
            let request = self.client.copy_object().bucket(&self.bucket).key(to).copy_source(source);
            let request = encrypted!(self, request);
            with_copy_source_key!(self, request).send().await.map_err(|error| self.classify("copy to", to, error))?;
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
