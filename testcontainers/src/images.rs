//! The three images, built locally (no registry here) and tagged by a hash of
//! their content, so a second run reuses them. Each name can be overridden so
//! the same tests run with official images where a registry is reachable:
//!
//! - `LIFEBOAT_ETCD_IMAGE` (e.g. `quay.io/coreos/etcd:v3.5.17`): etcd at `/usr/local/bin`.
//! - `LIFEBOAT_S3_IMAGE` (e.g. `minio/minio:latest`) with `LIFEBOAT_S3_FLAVOUR=minio`
//!   (root user and password from the environment, `server /data`); the default
//!   flavour is `seaweedfs` (`weed mini`).
//! - `LIFEBOAT_AGENT_IMAGE`: lifeboat plus etcd; by default built `FROM` the etcd image.

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
    pub etcd: Option<ImageRef>,
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
            etcd: image("LIFEBOAT_ETCD_IMAGE"),
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
    pub etcd: ImageRef,
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

/// The shared libraries a dynamic binary loads, from `ldd` (with the loader itself).
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>, String> {
    let output =
        std::process::Command::new("ldd").arg(binary).output().map_err(|error| format!("cannot run ldd: {error}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(text
        .lines()
        .filter_map(|line| {
            let path = line.split("=>").last()?.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

pub async fn build(overrides: &Overrides) -> Result<Images, String> {
    let started = std::time::Instant::now();
    let s3_flavour = overrides.flavour()?;
    let etcd = match &overrides.etcd {
        Some(image) => image.clone(),
        None => {
            let mut files = ["etcd", "etcdctl", "etcdutl"]
                .iter()
                .map(|name| Ok((binary(name)?, format!("bin/{name}"))))
                .collect::<Result<Vec<_>, String>>()?;
            // WORKDIR makes the writable /tmp that etcdutl and the agent's staging need.
            let mut dockerfile = "FROM scratch\nCOPY bin/ /usr/local/bin/\nWORKDIR /tmp\nWORKDIR /\n".to_owned();
            // Static binaries (PyPI's) need nothing more; Debian's load libc: bring what ldd names.
            let mut libraries = std::collections::BTreeSet::new();
            for (binary, _) in files.clone() {
                libraries.extend(shared_libraries(&binary)?);
            }
            for (index, library) in libraries.into_iter().enumerate() {
                let context = format!("etcd-lib/{index}");
                dockerfile.push_str(&format!("COPY {context} {}\n", library.display()));
                files.push((library, context));
            }
            dockerfile.push_str("EXPOSE 2379 2380\nENTRYPOINT [\"/usr/local/bin/etcd\"]\n");
            build_one("lifeboat-test-etcd", dockerfile, files).await?
        }
    };
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
        None => {
            let lifeboat = lifeboat_binary()?;
            let mut files = vec![(lifeboat.clone(), "bin/lifeboat".to_string())];
            let mut dockerfile = format!("FROM {}\nCOPY bin/lifeboat /usr/local/bin/lifeboat\n", etcd.full());
            for (index, library) in shared_libraries(&lifeboat)?.into_iter().enumerate() {
                let context = format!("lib/{index}");
                dockerfile.push_str(&format!("COPY {context} {}\n", library.display()));
                files.push((library, context));
            }
            dockerfile.push_str("ENTRYPOINT [\"/usr/local/bin/lifeboat\"]\n");
            build_one("lifeboat-test-agent", dockerfile, files).await?
        }
    };
    Ok(Images { etcd, s3, s3_flavour, agent, build_seconds: started.elapsed().as_secs_f64() })
}

/// Whether Docker answers. Outside CI a missing engine skips the test with a message;
/// under `CI=true` it fails it, as every real component must.
pub fn require_docker() -> bool {
    let answered = std::process::Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .is_ok_and(|output| output.status.success());
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
            "LIFEBOAT_ETCD_IMAGE" => Some("  ".to_string()),
            _ => None,
        };
        let overrides = Overrides::from_lookup(lookup);
        assert_eq!(overrides.etcd, None, "a blank value means: build it here");
        assert_eq!(overrides.s3.as_ref().map(ImageRef::full).as_deref(), Some("minio/minio:RELEASE.2025"));
        assert_eq!(overrides.flavour(), Ok(S3Flavour::Minio));
        let bad = Overrides { s3_flavour: Some("ceph".into()), ..Overrides::default() };
        assert!(bad.flavour().unwrap_err().contains("seaweedfs"));
    }
}
