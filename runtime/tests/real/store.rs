//! The S3 adapter's own operations against the real S3 server, below the CLI.

use lifeboat_runtime::ports::SnapshotStore;
use lifeboat_runtime::store::S3Store;
use lifeboat_testkit::{self as testkit, S3Server};
use sha2::{Digest, Sha256};

/// Deterministic bytes that do not compress to nothing.
fn noise(size: usize) -> Vec<u8> {
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    let mut bytes = Vec::with_capacity(size + 8);
    while bytes.len() < size {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(size);
    bytes
}

/// `snapshot.db` is a server-side copy of the versioned object: one CopyObject for
/// small objects, ranged UploadPartCopy for large ones (CopyObject stops at 5 GiB).
/// Both must give the same bytes, and a missing source must say so.
#[test]
fn copy_gives_the_same_bytes_small_and_multipart() {
    if !testkit::require(&["weed"]) {
        return;
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    let server = S3Server::start();
    runtime.block_on(async {
        server.create_bucket("copies").await;
        let client = server.client();
        let store = S3Store::from_client(client.clone(), "copies", &server.endpoint());
        // 1 MiB: one CopyObject. 80 MiB + 3 bytes: two ranged parts, the last one short.
        for (source, size) in [("small", 1 << 20), ("large", (80 << 20) + 3)] {
            let body = noise(size);
            client.put_object().bucket("copies").key(source).body(body.clone().into()).send().await.expect("put");
            let destination = format!("{source}-copy");
            store.copy(source, &destination).await.expect("copy");
            let copied = client.get_object().bucket("copies").key(&destination).send().await.expect("get");
            let copied = copied.body.collect().await.expect("read").into_bytes();
            assert_eq!(copied.len(), size, "{source}: size");
            assert_eq!(Sha256::digest(&copied), Sha256::digest(&body), "{source}: bytes");
        }
        let missing = store.copy("absent", "absent-copy").await.expect_err("no source");
        assert!(missing.to_string().contains("absent"), "{missing}");
        assert!(store.head("absent-copy").await.expect("head").is_none(), "nothing created");
    });
}
