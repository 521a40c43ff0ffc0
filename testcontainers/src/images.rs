//! The two images, built locally (no registry here) and tagged by a hash of
//! their content, so a second run reuses them. Each name can be overridden so
//! the same tests run with other images where a registry is reachable:
//!
//! - `LIFEBOAT_AGENT_IMAGE`: the shipped lifeboat image (lifeboat plus etcd, etcdctl and
//!   etcdutl at `/usr/local/bin`); by default `scripts/build-image` of this checkout.
//! - `LIFEBOAT_S3_IMAGE` (e.g. `minio/minio:latest`) with `LIFEBOAT_S3_FLAVOUR=minio`
//!   (root user and password from the environment, `server /data`); the default
//!   flavour is `seaweedfs` (`weed mini`).

use crate::watchdog::{docker_within, DOCKER_CALL_LIMIT};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use testcontainers::runners::AsyncBuilder;
use testcontainers::{GenericBuildableImage, GenericImage};
use tokio::sync::OnceCell;

pub const S3_ACCESS_KEY: &str = "lifeboat-test";
pub const S3_SECRET_KEY: &str = "lifeboat-test-secret";
pub const S3_PORT: u16 = 8333;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum S3Flavour {
    SeaweedFs,
    Minio,
}

/// An image name and tag, as `docker run` takes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    pub name: String,
    pub tag: String,
}

impl ImageRef {
    /// `name[:tag]`; a registry port (`host:5000/etcd`) is not mistaken for a tag.
    pub fn parse(text: &str) -> ImageRef {
        match text.rsplit_once(':') {
            Some((name, tag)) if !tag.contains('/') => ImageRef { name: name.into(), tag: tag.into() },
            _ => ImageRef { name: text.into(), tag: "latest".into() },
        }
    }
    pub fn full(&self) -> String {
        format!("{}:{}", self.name, self.tag)
    }
    pub fn generic(&self) -> GenericImage {
        GenericImage::new(self.name.clone(), self.tag.clone())
    }
}

/// What the environment asks for: `None` means "build it here".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    pub s3: Option<ImageRef>,
    pub agent: Option<ImageRef>,
    pub s3_flavour: Option<String>,
}

impl Overrides {
    pub fn from_env() -> Overrides {
        Overrides::from_lookup(|name| std::env::var(name).ok())
    }
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Overrides {
        let image = |name: &str| {
            lookup(name).filter(|value| !value.trim().is_empty()).map(|value| ImageRef::parse(value.trim()))
        };
        Overrides {
            s3: image("LIFEBOAT_S3_IMAGE"),
            agent: image("LIFEBOAT_AGENT_IMAGE"),
            s3_flavour: lookup("LIFEBOAT_S3_FLAVOUR"),
        }
    }
    pub fn flavour(&self) -> Result<S3Flavour, String> {
        match self.s3_flavour.as_deref().map(str::trim) {
            None | Some("") | Some("seaweedfs") => Ok(S3Flavour::SeaweedFs),
            Some("minio") => Ok(S3Flavour::Minio),
            Some(other) => Err(format!("LIFEBOAT_S3_FLAVOUR={other:?}: expected `seaweedfs` or `minio`")),
        }
    }
}

/// The images a test cluster runs.
#[derive(Clone, Debug)]
pub struct Images {
    pub s3: ImageRef,
    pub s3_flavour: S3Flavour,
    pub agent: ImageRef,
    /// Seconds spent building (0 when every image was there already).
    pub build_seconds: f64,
}

static IMAGES: OnceCell<Images> = OnceCell::const_new();

/// Builds (once per process, and only what is missing) the images the environment does not override.
pub async fn images() -> &'static Images {
    IMAGES
        .get_or_init(|| async {
            match build(&Overrides::from_env()).await {
                Ok(images) => images,
                Err(error) => panic!("cannot build the test images: {error}"),
            }
        })
        .await
}

fn hash_files(dockerfile: &str, files: &[(PathBuf, String)]) -> Result<String, String> {
    let mut hasher = Sha256::new();
    hasher.update(dockerfile.as_bytes());
    for (path, target) in files {
        let bytes = std::fs::read(path).map_err(|error| format!("read {}: {error}", path.display()))?;
        hasher.update(target.as_bytes());
        hasher.update(&bytes);
    }
    Ok(hex::encode(&hasher.finalize()[..6]))
}

async fn build_one(name: &str, dockerfile: String, files: Vec<(PathBuf, String)>) -> Result<ImageRef, String> {
    let tag = hash_files(&dockerfile, &files)?;
    let mut image = GenericBuildableImage::new(name, tag.clone()).with_dockerfile_string(dockerfile);
    for (path, target) in files {
        image = image.with_file(path, target);
    }
    let options = testcontainers::core::BuildImageOptions::new().with_skip_if_exists(true);
    let _built =
        image.build_image_with(options).await.map_err(|error| format!("docker build {name}:{tag}: {error}"))?;
    Ok(ImageRef { name: name.into(), tag })
}

fn binary(name: &str) -> Result<PathBuf, String> {
    let path = lifeboat_testkit::binary(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!("{} is missing: run scripts/install-deps", path.display()))
    }
}

fn newest_source(directory: &Path) -> std::time::SystemTime {
    let mut newest = std::time::SystemTime::UNIX_EPOCH;
    let Ok(entries) = std::fs::read_dir(directory) else { return newest };
    for entry in entries.flatten() {
        let path = entry.path();
        let modified = if path.is_dir() {
            newest_source(&path)
        } else {
            entry.metadata().and_then(|metadata| metadata.modified()).unwrap_or(newest)
        };
        newest = newest.max(modified);
    }
    newest
}

/// The `lifeboat` binary of this workspace: `target/debug/lifeboat` when it is newer
/// than the sources (`cargo test --workspace` builds it), else a build of its own in
/// `target/testcontainers` (a separate dir: the running `cargo test` holds the lock
/// on `target/debug`).
pub fn lifeboat_binary() -> Result<PathBuf, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    let sources = newest_source(&root.join("src")).max(newest_source(&root.join("runtime/src")));
    let built = target.join("debug/lifeboat");
    let fresh = |path: &Path| {
        std::fs::metadata(path).and_then(|metadata| metadata.modified()).is_ok_and(|modified| modified >= sources)
    };
    if fresh(&built) {
        return Ok(built);
    }
    let own = target.join("testcontainers");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("building lifeboat for the agent image in {}", own.display());
    let status = std::process::Command::new(cargo)
        .args(["build", "--quiet", "-p", "lifeboat-runtime", "--bin", "lifeboat"])
        .env("CARGO_TARGET_DIR", &own)
        .current_dir(&root)
        .status()
        .map_err(|error| format!("cannot run cargo to build lifeboat: {error}"))?;
    let path = own.join("debug/lifeboat");
    if !status.success() || !path.is_file() {
        return Err(format!("building lifeboat failed ({status}); expected {}", path.display()));
    }
    Ok(path)
}

pub async fn build(overrides: &Overrides) -> Result<Images, String> {
    let started = std::time::Instant::now();
    let s3_flavour = overrides.flavour()?;
    let s3 = match &overrides.s3 {
        Some(image) => image.clone(),
        None => {
            let files = vec![(binary("weed")?, "bin/weed".to_string())];
            let dockerfile = "FROM scratch\nCOPY bin/weed /usr/local/bin/weed\nWORKDIR /tmp\nWORKDIR /data\nEXPOSE 8333\nENTRYPOINT [\"/usr/local/bin/weed\"]\n";
            build_one("lifeboat-test-s3", dockerfile.into(), files).await?
        }
    };
    let agent = match &overrides.agent {
        Some(image) => image.clone(),
        None => shipped_image(&lifeboat_binary()?)?,
    };
    Ok(Images { s3, s3_flavour, agent, build_seconds: started.elapsed().as_secs_f64() })
}

/// The image users deploy (`runtime/container/Dockerfile`, built by `scripts/build-image`)
/// with this workspace's lifeboat and the suite's etcd, so the container tests run what
/// ships: FROM scratch, as user 65532. Tagged by a hash of everything that goes in.
pub fn shipped_image(lifeboat: &Path) -> Result<ImageRef, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let etcd_dir = binary("etcd")?.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut inputs = vec![
        (root.join("runtime/container/Dockerfile"), "Dockerfile".to_owned()),
        (root.join("scripts/build-image"), "build-image".to_owned()),
        (lifeboat.to_path_buf(), "lifeboat".to_owned()),
    ];
    for tool in ["etcd", "etcdctl", "etcdutl"] {
        inputs.push((binary(tool)?, tool.to_owned()));
    }
    let image = ImageRef { name: "lifeboat-test-agent".into(), tag: hash_files("", &inputs)? };
    let present = docker_within(&["image", "inspect", "--format", "{{.Id}}", &image.full()], DOCKER_CALL_LIMIT).is_ok();
    if present {
        return Ok(image);
    }
    let output = std::process::Command::new("bash")
        .arg(root.join("scripts/build-image"))
        .args(["--image", &image.full(), "--binary"])
        .arg(lifeboat)
        .arg("--etcd-dir")
        .arg(&etcd_dir)
        .output()
        .map_err(|error| format!("cannot run scripts/build-image: {error}"))?;
    if !output.status.success() {
        return Err(format!(
            "scripts/build-image failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(image)
}

/// Whether Docker answers. Outside CI a missing engine skips the test with a message;
/// under `CI=true` it fails it, as every real component must.
pub fn require_docker() -> bool {
    let answered = docker_within(&["info", "--format", "{{.ServerVersion}}"], DOCKER_CALL_LIMIT).is_ok();
    if answered {
        return lifeboat_testkit::require(&["etcd", "etcdctl", "etcdutl", "weed"]);
    }
    if std::env::var("CI").is_ok_and(|value| value == "true") {
        panic!("the Docker engine does not answer (`docker info`), and CI=true requires it");
    }
    eprintln!("SKIPPED: the Docker engine does not answer (`docker info`); start it to run the container tests");
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references_parse() {
        assert_eq!(ImageRef::parse("minio/minio"), ImageRef { name: "minio/minio".into(), tag: "latest".into() });
        assert_eq!(ImageRef::parse("quay.io/coreos/etcd:v3.5.17").full(), "quay.io/coreos/etcd:v3.5.17");
        assert_eq!(ImageRef::parse("registry:5000/etcd").tag, "latest");
    }

    #[test]
    fn overrides_come_from_the_environment() {
        let lookup = |name: &str| match name {
            "LIFEBOAT_S3_IMAGE" => Some("minio/minio:RELEASE.2025".to_string()),
            "LIFEBOAT_S3_FLAVOUR" => Some("minio".to_string()),
            "LIFEBOAT_AGENT_IMAGE" => Some("  ".to_string()),
            _ => None,
        };
        let overrides = Overrides::from_lookup(lookup);
        assert_eq!(overrides.agent, None, "a blank value means: build it here");
        assert_eq!(overrides.s3.as_ref().map(ImageRef::full).as_deref(), Some("minio/minio:RELEASE.2025"));
        assert_eq!(overrides.flavour(), Ok(S3Flavour::Minio));
        let bad = Overrides { s3_flavour: Some("ceph".into()), ..Overrides::default() };
        assert!(bad.flavour().unwrap_err().contains("seaweedfs"));
    }
}
