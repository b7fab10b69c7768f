//! The test bed's S3 server (tests/testbed/s3.sh: s3s-fs on 127.0.0.1) through the AWS SDK, the way
//! checkpoints and sinks reach it: path-style addressing, static credentials, region us-east-1.
//! Proves what those rely on: objects (nested keys, empty ones) read back byte-exact, prefix and
//! delimiter listings, deletes, NotFound on a missing key, multipart uploads completed and aborted,
//! and objects that outlive a restart of the server (`tests/testbed/s3ctl stop|start`).
//!
//! Every test holds [`SERVER`]: a read guard while it needs the server up, the write guard while it
//! takes the server away. Other modules' tests that use S3 should take a read guard too.

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use strom_tests::testbed::{TestBed, scripts_dir};
use tokio::sync::RwLock;

/// Shared (read) while the server must stay up; exclusive (write) while a test stops it.
pub(crate) static SERVER: RwLock<()> = RwLock::const_new(());

/// S3's smallest part size for every part of a multipart upload but the last.
const MIB5: usize = 5 * 1024 * 1024;

/// A client for the test bed's S3 server.
pub(crate) fn client() -> Client {
    let bed = TestBed::get();
    let credentials = Credentials::new(
        bed.var("STROM_TESTBED_S3_ACCESS_KEY"),
        bed.var("STROM_TESTBED_S3_SECRET_KEY"),
        None,
        None,
        "strom-testbed",
    );
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(bed.var("STROM_TESTBED_S3_ENDPOINT"))
        .region(Region::new(bed.var("STROM_TESTBED_S3_REGION").to_string()))
        .credentials_provider(credentials)
        .force_path_style(true)
        .build();
    Client::from_conf(config)
}

/// A bucket name no earlier run used: the server's data outlives test runs.
fn bucket_name(test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{test}-{}-{nanos:x}", std::process::id())
}

/// Bytes that differ at every offset within 251 (a prime), so a shifted or truncated copy shows.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i % 251) as u8).wrapping_add(seed))
        .collect()
}

async fn put(s3: &Client, bucket: &str, key: &str, body: &[u8]) {
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(body.to_vec()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("put {bucket}/{key}: {e:?}"));
}

/// The object's bytes, checked against the length the server reports.
async fn get(s3: &Client, bucket: &str, key: &str) -> Vec<u8> {
    let out = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("get {bucket}/{key}: {e:?}"));
    let reported = out.content_length();
    let body = out.body.collect().await.unwrap().into_bytes().to_vec();
    assert_eq!(
        reported,
        Some(body.len() as i64),
        "{bucket}/{key}: Content-Length"
    );
    body
}

/// Every key under PREFIX, in listing order (S3 lists keys in ascending UTF-8 order), following
/// continuation tokens.
async fn list(s3: &Client, bucket: &str, prefix: &str) -> Vec<String> {
    let pages: Vec<_> = s3
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .into_paginator()
        .send()
        .collect()
        .await;
    pages
        .into_iter()
        .flat_map(|page| page.unwrap().contents.unwrap_or_default())
        .map(|object| object.key.unwrap())
        .collect()
}

/// HEAD of a key that must not exist: the server answers 404 (NotFound).
async fn assert_missing(s3: &Client, bucket: &str, key: &str) {
    let Err(err) = s3.head_object().bucket(bucket).key(key).send().await else {
        panic!("head {bucket}/{key}: the object exists");
    };
    assert!(
        err.as_service_error().is_some_and(|e| e.is_not_found()),
        "head {bucket}/{key}: expected NotFound, got {err:?}"
    );
}

/// Deletes the bucket's objects, then the bucket.
async fn remove_bucket(s3: &Client, bucket: &str) {
    for key in list(s3, bucket, "").await {
        s3.delete_object()
            .bucket(bucket)
            .key(&key)
            .send()
            .await
            .unwrap();
    }
    s3.delete_bucket().bucket(bucket).send().await.unwrap();
}

#[tokio::test]
async fn s3_objects_round_trip() {
    let _server = SERVER.read().await;
    let s3 = client();
    let bucket = bucket_name("roundtrip");
    s3.create_bucket().bucket(&bucket).send().await.unwrap();

    let objects: [(&str, Vec<u8>); 5] = [
        ("top", b"hello, strom".to_vec()),
        ("a/b/c", pattern(100_000, 1)),
        ("a/b/d", pattern(3, 2)),
        ("a/x", pattern(1, 3)),
        ("empty", Vec::new()),
    ];
    for (key, body) in &objects {
        put(&s3, &bucket, key, body).await;
    }
    for (key, body) in &objects {
        assert_eq!(&get(&s3, &bucket, key).await, body, "{key}");
    }

    assert_eq!(list(&s3, &bucket, "a/").await, ["a/b/c", "a/b/d", "a/x"]);
    assert_eq!(list(&s3, &bucket, "a/b/").await, ["a/b/c", "a/b/d"]);
    assert_eq!(list(&s3, &bucket, "nothing/").await, Vec::<String>::new());

    // Two keys a page: the third comes on a second page, through a continuation token.
    let pages: Vec<Vec<String>> = s3
        .list_objects_v2()
        .bucket(&bucket)
        .prefix("a/")
        .max_keys(2)
        .into_paginator()
        .send()
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .map(|page| {
            let page = page.unwrap();
            page.contents()
                .iter()
                .filter_map(|o| o.key().map(String::from))
                .collect()
        })
        .collect();
    assert_eq!(pages, [vec!["a/b/c", "a/b/d"], vec!["a/x"]]);

    // With a delimiter: the keys directly under the prefix, and the "directories" below it.
    let level = s3
        .list_objects_v2()
        .bucket(&bucket)
        .prefix("a/")
        .delimiter("/")
        .send()
        .await
        .unwrap();
    let keys: Vec<_> = level.contents().iter().filter_map(|o| o.key()).collect();
    let dirs: Vec<_> = level
        .common_prefixes()
        .iter()
        .filter_map(|p| p.prefix())
        .collect();
    assert_eq!((keys, dirs), (vec!["a/x"], vec!["a/b/"]));

    s3.delete_object()
        .bucket(&bucket)
        .key("a/b/c")
        .send()
        .await
        .unwrap();
    assert_eq!(list(&s3, &bucket, "a/").await, ["a/b/d", "a/x"]);
    assert_missing(&s3, &bucket, "a/b/c").await;
    assert_missing(&s3, &bucket, "never-written").await;
    let err = s3
        .get_object()
        .bucket(&bucket)
        .key("a/b/c")
        .send()
        .await
        .expect_err("get of a deleted key");
    assert!(
        err.as_service_error().is_some_and(|e| e.is_no_such_key()),
        "get of a deleted key: expected NoSuchKey, got {err:?}"
    );

    remove_bucket(&s3, &bucket).await;
}

#[tokio::test]
async fn s3_multipart_upload() {
    let _server = SERVER.read().await;
    let s3 = client();
    let bucket = bucket_name("multipart");
    s3.create_bucket().bucket(&bucket).send().await.unwrap();

    // Completed: a 5 MiB part and a tail, read back as one object.
    let key = "chk-1/state";
    let parts = [pattern(MIB5, 7), pattern(123_457, 11)];
    let upload = s3
        .create_multipart_upload()
        .bucket(&bucket)
        .key(key)
        .send()
        .await
        .unwrap();
    let upload_id = upload.upload_id().unwrap();
    let mut completed = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let number = i as i32 + 1;
        let out = s3
            .upload_part()
            .bucket(&bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .body(ByteStream::from(part.clone()))
            .send()
            .await
            .unwrap();
        completed.push(
            CompletedPart::builder()
                .part_number(number)
                .e_tag(out.e_tag().unwrap())
                .build(),
        );
    }
    s3.complete_multipart_upload()
        .bucket(&bucket)
        .key(key)
        .upload_id(upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(completed))
                .build(),
        )
        .send()
        .await
        .unwrap();
    let expected = parts.concat();
    let got = get(&s3, &bucket, key).await;
    assert_eq!(got.len(), MIB5 + 123_457);
    assert!(got == expected, "multipart object differs from its parts");
    let head = s3
        .head_object()
        .bucket(&bucket)
        .key(key)
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_length(), Some(expected.len() as i64));

    // Aborted after one part: no object appears.
    let aborted = "chk-2/state";
    let upload = s3
        .create_multipart_upload()
        .bucket(&bucket)
        .key(aborted)
        .send()
        .await
        .unwrap();
    let upload_id = upload.upload_id().unwrap();
    s3.upload_part()
        .bucket(&bucket)
        .key(aborted)
        .upload_id(upload_id)
        .part_number(1)
        .body(ByteStream::from(pattern(MIB5, 13)))
        .send()
        .await
        .unwrap();
    s3.abort_multipart_upload()
        .bucket(&bucket)
        .key(aborted)
        .upload_id(upload_id)
        .send()
        .await
        .unwrap();
    assert_missing(&s3, &bucket, aborted).await;
    assert_eq!(list(&s3, &bucket, "").await, [key]);

    remove_bucket(&s3, &bucket).await;
}

/// Brings S3 back if the restart test fails while it is stopped, so later tests find it up.
struct StartOnPanic;

impl Drop for StartOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Best effort: a second panic would abort the test binary.
            let _ = Command::new(scripts_dir().join("s3ctl"))
                .arg("start")
                .env("STROM_TESTBED_RUN", TestBed::get().run_dir())
                .status();
        }
    }
}

#[tokio::test]
async fn s3_objects_survive_a_restart() {
    let _server = SERVER.write().await;
    let bed = TestBed::get();
    let s3 = client();
    let bucket = bucket_name("restart");
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let body = pattern(300_000, 17);
    put(&s3, &bucket, "chk-1/state", &body).await;

    let _restart = StartOnPanic;
    bed.script("s3ctl", &["stop"]);
    // The same client (its pooled connection now dead) gets no answer: a connection error.
    let err = s3
        .get_object()
        .bucket(&bucket)
        .key("chk-1/state")
        .send()
        .await
        .expect_err("S3 is stopped");
    assert!(
        matches!(&err, SdkError::DispatchFailure(e) if e.is_io()),
        "expected a connection error while S3 is stopped, got {err:?}"
    );
    bed.script("s3ctl", &["start"]);

    // The same client again, on the restarted server.
    assert!(get(&s3, &bucket, "chk-1/state").await == body);
    put(&s3, &bucket, "chk-2/state", b"after the restart").await;
    assert_eq!(list(&s3, &bucket, "").await, ["chk-1/state", "chk-2/state"]);

    remove_bucket(&s3, &bucket).await;
}
