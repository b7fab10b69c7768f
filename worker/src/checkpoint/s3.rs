//! The S3 checkpoint store (any S3-compatible server): `aws-sdk-s3` behind the blocking
//! [`CheckpointStore`] interface. It owns a small Tokio runtime and blocks the calling thread (a
//! task thread or the checkpoint coordinator, never an async one) on each request. Large files go up
//! in parts; every request has a bounded time and a few retries, so an unreachable server makes
//! calls fail with [`Error::Storage`] rather than hang.

use std::path::Path;
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use serde::Deserialize;
use tokio::io::AsyncReadExt;

use super::store::CheckpointStore;
use crate::error::{Error, Result};

/// Where and how to reach the bucket.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct S3Config {
    /// E.g. `http://127.0.0.1:9000`; `None` for AWS itself.
    pub endpoint: Option<String>,
    pub region: String,
    pub bucket: String,
    /// Prefix of every key (a "directory" in the bucket), without a trailing slash.
    pub prefix: String,
    /// Path-style addressing (`endpoint/bucket/key`), which most self-hosted servers need.
    pub path_style: bool,
    /// Static credentials; `None` uses the SDK's environment variables.
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
    /// Files larger than this are uploaded in parts.
    pub multipart_threshold: usize,
    /// Size of each part (S3 needs at least 5 MiB but for the last).
    pub part_size: usize,
    /// Time limit of one request, retries included.
    pub operation_timeout_ms: u64,
}

impl Default for S3Config {
    fn default() -> Self {
        Self {
            endpoint: None,
            region: "us-east-1".into(),
            bucket: String::new(),
            prefix: String::new(),
            path_style: true,
            access_key: None,
            secret_key: None,
            multipart_threshold: 16 << 20,
            part_size: 8 << 20,
            operation_timeout_ms: 20_000,
        }
    }
}

/// A checkpoint store in an S3 bucket.
pub struct S3Store {
    config: S3Config,
    client: Client,
    runtime: tokio::runtime::Runtime,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store")
            .field("endpoint", &self.config.endpoint)
            .field("bucket", &self.config.bucket)
            .field("prefix", &self.config.prefix)
            .finish()
    }
}

fn failed<E: std::error::Error>(what: &str, key: &str, e: E) -> Error {
    Error::Storage(format!("S3 {what} {key}: {}", DisplayErrorContext(e)))
}

impl S3Store {
    /// A store for `config` (no request is made yet).
    pub fn new(config: S3Config) -> Result<Self> {
        if config.bucket.is_empty() {
            return Err(Error::Storage("S3 bucket is not set".into()));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("s3-store")
            .enable_all()
            .build()
            .map_err(|e| Error::Storage(format!("starting the S3 client runtime: {e}")))?;
        let mut builder = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            .force_path_style(config.path_style)
            .retry_config(RetryConfig::standard().with_max_attempts(3))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .operation_attempt_timeout(Duration::from_millis(
                        config.operation_timeout_ms / 2,
                    ))
                    .operation_timeout(Duration::from_millis(config.operation_timeout_ms))
                    .build(),
            );
        if let Some(endpoint) = &config.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        match (&config.access_key, &config.secret_key) {
            (Some(access), Some(secret)) => {
                builder = builder.credentials_provider(Credentials::new(
                    access.clone(),
                    secret.clone(),
                    None,
                    None,
                    "strom-config",
                ));
            }
            _ => {
                let from_env = |name: &str| std::env::var(name).ok();
                if let (Some(access), Some(secret)) = (
                    from_env("AWS_ACCESS_KEY_ID"),
                    from_env("AWS_SECRET_ACCESS_KEY"),
                ) {
                    builder = builder.credentials_provider(Credentials::new(
                        access,
                        secret,
                        from_env("AWS_SESSION_TOKEN"),
                        None,
                        "environment",
                    ));
                }
            }
        }
        let client = Client::from_conf(builder.build());
        Ok(Self {
            config,
            client,
            runtime,
        })
    }

    fn key(&self, key: &str) -> String {
        let prefix = self.config.prefix.trim_matches('/');
        if prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{prefix}/{key}")
        }
    }

    fn relative<'a>(&self, full: &'a str) -> &'a str {
        let prefix = self.config.prefix.trim_matches('/');
        if prefix.is_empty() {
            full
        } else {
            full.strip_prefix(prefix)
                .and_then(|k| k.strip_prefix('/'))
                .unwrap_or(full)
        }
    }

    /// Creates the bucket if it does not exist.
    pub fn ensure_bucket(&self) -> Result<()> {
        let bucket = &self.config.bucket;
        self.runtime.block_on(async {
            if self
                .client
                .head_bucket()
                .bucket(bucket)
                .send()
                .await
                .is_ok()
            {
                return Ok(());
            }
            match self.client.create_bucket().bucket(bucket).send().await {
                Ok(_) => Ok(()),
                Err(e) => {
                    let already = e
                        .as_service_error()
                        .is_some_and(|s| s.is_bucket_already_owned_by_you());
                    if already {
                        Ok(())
                    } else {
                        Err(failed("create bucket", bucket, e))
                    }
                }
            }
        })
    }

    async fn put_multipart(&self, key: &str, path: &Path) -> Result<()> {
        let bucket = &self.config.bucket;
        let created = self
            .client
            .create_multipart_upload()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| failed("create multipart upload", key, e))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| Error::Storage(format!("S3 gave no upload id for {key}")))?
            .to_owned();
        let result = self.upload_parts(key, path, &upload_id).await;
        if result.is_err() {
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        result
    }

    async fn upload_parts(&self, key: &str, path: &Path, upload_id: &str) -> Result<()> {
        let bucket = &self.config.bucket;
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(|e| Error::Storage(format!("reading {}: {e}", path.display())))?;
        let part_size = self.config.part_size.max(1);
        let mut parts = Vec::new();
        for number in 1.. {
            let mut buf = Vec::with_capacity(part_size);
            let mut reader = (&mut file).take(part_size as u64);
            reader
                .read_to_end(&mut buf)
                .await
                .map_err(|e| Error::Storage(format!("reading {}: {e}", path.display())))?;
            if buf.is_empty() && number > 1 {
                break;
            }
            let last = buf.len() < part_size;
            let uploaded = self
                .client
                .upload_part()
                .bucket(bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .body(ByteStream::from(buf))
                .send()
                .await
                .map_err(|e| failed("upload part of", key, e))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(uploaded.e_tag().map(str::to_owned))
                    .build(),
            );
            if last {
                break;
            }
        }
        self.client
            .complete_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| failed("complete multipart upload", key, e))?;
        Ok(())
    }
}

impl CheckpointStore for S3Store {
    fn put(&self, key: &str, bytes: &[u8]) -> Result<()> {
        let full = self.key(key);
        self.runtime.block_on(async {
            self.client
                .put_object()
                .bucket(&self.config.bucket)
                .key(&full)
                .body(ByteStream::from(bytes.to_vec()))
                .send()
                .await
                .map_err(|e| failed("put", &full, e))
                .map(|_| ())
        })
    }

    fn put_file(&self, key: &str, path: &Path) -> Result<()> {
        let size = std::fs::metadata(path)
            .map_err(|e| Error::Storage(format!("reading {}: {e}", path.display())))?
            .len();
        if size as usize <= self.config.multipart_threshold {
            let bytes = std::fs::read(path)
                .map_err(|e| Error::Storage(format!("reading {}: {e}", path.display())))?;
            return self.put(key, &bytes);
        }
        let full = self.key(key);
        self.runtime.block_on(self.put_multipart(&full, path))
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let full = self.key(key);
        self.runtime.block_on(async {
            match self
                .client
                .get_object()
                .bucket(&self.config.bucket)
                .key(&full)
                .send()
                .await
            {
                Ok(out) => {
                    let body = out
                        .body
                        .collect()
                        .await
                        .map_err(|e| failed("read", &full, e))?;
                    Ok(Some(body.into_bytes().to_vec()))
                }
                Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
                Err(e) => Err(failed("get", &full, e)),
            }
        })
    }

    fn get_file(&self, key: &str, path: &Path) -> Result<bool> {
        let full = self.key(key);
        self.runtime.block_on(async {
            let out = match self
                .client
                .get_object()
                .bucket(&self.config.bucket)
                .key(&full)
                .send()
                .await
            {
                Ok(out) => out,
                Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                    return Ok(false);
                }
                Err(e) => return Err(failed("get", &full, e)),
            };
            let tmp = path.with_extension("download");
            let io = |e: std::io::Error| Error::Storage(format!("writing {}: {e}", tmp.display()));
            let mut file = tokio::fs::File::create(&tmp).await.map_err(io)?;
            let mut body = out.body.into_async_read();
            tokio::io::copy(&mut body, &mut file).await.map_err(io)?;
            file.sync_all().await.map_err(io)?;
            tokio::fs::rename(&tmp, path).await.map_err(io)?;
            Ok(true)
        })
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let full = self.key(prefix);
        self.runtime.block_on(async {
            let mut keys = Vec::new();
            let mut token: Option<String> = None;
            loop {
                let page = self
                    .client
                    .list_objects_v2()
                    .bucket(&self.config.bucket)
                    .prefix(&full)
                    .set_continuation_token(token.take())
                    .send()
                    .await
                    .map_err(|e| failed("list", &full, e))?;
                keys.extend(
                    page.contents()
                        .iter()
                        .filter_map(|o| o.key())
                        .map(|k| self.relative(k).to_owned()),
                );
                match page.next_continuation_token() {
                    Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_owned()),
                    _ => break,
                }
            }
            keys.sort();
            Ok(keys)
        })
    }

    fn delete(&self, key: &str) -> Result<()> {
        let full = self.key(key);
        self.runtime.block_on(async {
            self.client
                .delete_object()
                .bucket(&self.config.bucket)
                .key(&full)
                .send()
                .await
                .map_err(|e| failed("delete", &full, e))
                .map(|_| ())
        })
    }
}
