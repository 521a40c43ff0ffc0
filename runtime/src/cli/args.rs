//! The command line, as clap parses it. Raw values only: `main` validates them
//! into settings (see `config`), merging the config file underneath.

use crate::cli::output::Format;
use crate::exit::Exit;
use clap::{Args, Parser, Subcommand};
use lifeboat::Compression;
use std::path::PathBuf;

const ABOUT: &str =
    "etcd backup and disaster recovery: snapshots to S3 (or a directory), verified restores, health checks";

const LONG_ABOUT: &str = "\
lifeboat takes etcd snapshots and exports them to S3 (any S3-compatible endpoint) or a local
directory, verifies them, and restores member data dirs from them.

Store layout (kube-aws compatible):
  <store>/<cluster>/exported/etcd-snapshots/snapshot.db                latest snapshot, plain etcd format
  <store>/<cluster>/exported/etcd-snapshots/<UTC time>-r<rev>.db[.zst]  versioned snapshots
  <store>/<cluster>/exported/etcd-snapshots/<name>.manifest.json        sha256, size, revision, members…
  <store>/<cluster>/exported/etcd-log/<etcd cluster ID>/<first>-<last>.log.zst   the revision log

Every option can come from a flag, an environment variable (LIFEBOAT_*), or the TOML file
given by --config (keys named like the flags, e.g. `s3-endpoint = \"http://…\"`); flags win.
AWS credentials come from the standard chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY,
profiles, instance roles).

Examples:
  lifeboat save     --endpoints http://10.0.0.1:2379 --store s3://backups/prod --cluster kube
  lifeboat check    --endpoints http://10.0.0.1:2379,http://10.0.0.2:2379,http://10.0.0.3:2379
  lifeboat snapshots list --store file:///var/backups/etcd --cluster kube
  lifeboat log stream --endpoints http://10.0.0.1:2379 --store s3://backups/prod --cluster kube
  lifeboat restore  --store s3://backups/prod --cluster kube --data-dir /var/lib/etcd \\
                    --name etcd0 --initial-cluster etcd0=http://10.0.0.1:2380,… \\
                    --initial-advertise-peer-urls http://10.0.0.1:2380 --initial-cluster-token kube-2";

#[derive(Debug, Parser)]
#[command(name = "lifeboat", version, about = ABOUT, long_about = LONG_ABOUT, after_help = Exit::HELP)]
pub struct Cli {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct Common {
    /// TOML config file; its values sit under flags and environment variables
    #[arg(long, global = true, env = "LIFEBOAT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// etcd client URLs, comma-separated
    #[arg(long, global = true, env = "LIFEBOAT_ENDPOINTS", value_name = "URL,URL…", value_delimiter = ',')]
    pub endpoints: Vec<String>,

    /// CA certificate (PEM) that signed etcd's server certificates; needed for https:// endpoints
    #[arg(long, global = true, env = "LIFEBOAT_CACERT", value_name = "FILE", help_heading = "etcd TLS and auth")]
    pub cacert: Option<PathBuf>,

    /// Client certificate (PEM) for etcd's --client-cert-auth; with --key
    #[arg(long, global = true, env = "LIFEBOAT_CERT", value_name = "FILE", help_heading = "etcd TLS and auth")]
    pub cert: Option<PathBuf>,

    /// Private key (PEM) of --cert
    #[arg(long, global = true, env = "LIFEBOAT_KEY", value_name = "FILE", help_heading = "etcd TLS and auth")]
    pub key: Option<PathBuf>,

    /// etcd user (RBAC); its password comes from LIFEBOAT_PASSWORD or --password-file, never a flag
    #[arg(long, global = true, env = "LIFEBOAT_USER", value_name = "NAME", help_heading = "etcd TLS and auth")]
    pub user: Option<String>,

    /// File holding the password of --user (one line)
    #[arg(
        long,
        global = true,
        env = "LIFEBOAT_PASSWORD_FILE",
        value_name = "FILE",
        help_heading = "etcd TLS and auth"
    )]
    pub password_file: Option<PathBuf>,

    /// A kubeadm control plane: https://127.0.0.1:2379 with the etcd CA and the healthcheck-client
    /// certificate from --kubeadm-pki. Automatic when that directory holds ca.crt and no
    /// endpoints are given; explicit flags still win
    #[arg(long, global = true, env = "LIFEBOAT_KUBEADM", help_heading = "etcd TLS and auth")]
    pub kubeadm: bool,

    /// Where kubeadm keeps etcd's certificates
    #[arg(long, global = true, env = "LIFEBOAT_KUBEADM_PKI", value_name = "DIR", default_value = crate::cli::etcd_access::KUBEADM_PKI, help_heading = "etcd TLS and auth")]
    pub kubeadm_pki: PathBuf,

    /// Where snapshots live: s3://BUCKET/PREFIX or file:///DIR
    #[arg(long, global = true, env = "LIFEBOAT_STORE", value_name = "URL")]
    pub store: Option<String>,

    /// Logical cluster name; part of every key (<store>/<cluster>/exported/…)
    #[arg(long, global = true, env = "LIFEBOAT_CLUSTER", value_name = "NAME")]
    pub cluster: Option<String>,

    /// Custom S3 endpoint (MinIO, SeaweedFS, …); enables path-style addressing
    #[arg(long, global = true, env = "LIFEBOAT_S3_ENDPOINT", value_name = "URL")]
    pub s3_endpoint: Option<String>,

    /// CA certificate (PEM) to trust for an https:// --s3-endpoint behind a private CA
    #[arg(long, global = true, env = "LIFEBOAT_S3_CA_FILE", value_name = "FILE")]
    pub s3_ca_file: Option<PathBuf>,

    /// Server-side encryption of every object written: AES256 (SSE-S3) or aws:kms (SSE-KMS)
    #[arg(long, global = true, env = "LIFEBOAT_S3_SSE", value_name = "AES256|aws:kms")]
    pub s3_sse: Option<String>,

    /// The KMS key for SSE-KMS (implies --s3-sse aws:kms) [default: the bucket's]
    #[arg(long, global = true, env = "LIFEBOAT_S3_SSE_KMS_KEY_ID", value_name = "KEY-ID")]
    pub s3_sse_kms_key_id: Option<String>,

    /// SSE-C: a file holding the 256-bit key (32 bytes, raw or base64) sent with every
    /// read and write; objects written with it cannot be read without it
    #[arg(long, global = true, env = "LIFEBOAT_S3_SSE_C_KEY_FILE", value_name = "FILE")]
    pub s3_sse_c_key_file: Option<PathBuf>,

    /// Client-side encryption: a file holding a 256-bit key (32 bytes, raw, hex or base64;
    /// or the key itself in LIFEBOAT_ENCRYPTION_KEY, never a flag). Every object is then
    /// written encrypted and authenticated (AES-256-GCM in 64 KiB chunks), and only objects
    /// written with this key are read: restore, verify and recovery need the same key.
    /// snapshot.db is then encrypted too
    #[arg(long, global = true, env = "LIFEBOAT_ENCRYPTION_KEY_FILE", value_name = "FILE")]
    pub encryption_key_file: Option<PathBuf>,

    /// S3 region [default: AWS_REGION, else us-east-1]
    #[arg(long, global = true, env = "LIFEBOAT_S3_REGION", value_name = "REGION")]
    pub s3_region: Option<String>,

    /// Deadline for each etcd request and each store request attempt, in milliseconds [default: 10000]
    #[arg(long, global = true, env = "LIFEBOAT_TIMEOUT_MS", value_name = "MS")]
    pub timeout_ms: Option<u64>,

    /// Output format
    #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,

    /// Log filter (tracing syntax), logs go to stderr
    #[arg(long, global = true, env = "LIFEBOAT_LOG", default_value = "info", value_name = "FILTER")]
    pub log: String,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Take a snapshot from the leader and export it to the store
    ///
    /// Streams the snapshot straight into a multipart upload (memory stays flat as the
    /// database grows), checks etcd's own hash, writes the versioned object and its
    /// manifest, then replaces snapshot.db. A failure at any point leaves no partial
    /// object under a final name and snapshot.db as it was. Saves only from a cluster
    /// with a leader, like kube-aws' etcdadm.
    Save(SaveArgs),
    /// Health of the cluster and of each member (like `etcdctl endpoint health`)
    ///
    /// Exit code 0 when every member is healthy, 3 when one is not, 4 when none answers.
    Check,
    /// Build a member data dir from a verified snapshot (uses `etcdutl snapshot restore`)
    ///
    /// Fetches the snapshot, checks its sha256 against the manifest and etcd's own
    /// trailing hash, then runs etcdutl into a staging dir beside --data-dir and renames
    /// it into place. Refuses a non-empty --data-dir. With --snapshot latest, a corrupt
    /// newest snapshot is skipped for the previous good one. Run it once per member with
    /// the same --initial-cluster and a new --initial-cluster-token.
    ///
    /// When the store holds a revision log (`lifeboat log stream`, or the agent), the
    /// restore replays it after the snapshot: to the end (latest), to --to-revision, or to
    /// --to-time, in a scratch one-member etcd (--etcd, --scratch-dir) whose every revision
    /// must match the log's, then builds the data dir from the result. --no-log skips it.
    Restore(RestoreArgs),
    /// List, verify and prune versioned snapshots
    #[command(subcommand)]
    Snapshots(SnapshotsCommand),
    /// The revision log: every change between snapshots, for restores to any revision
    ///
    /// `log stream` watches every key and writes the changes to the store, one segment
    /// per flush interval (one second by default), so a restore can reach any revision
    /// after a snapshot, and a lost cluster loses about one flush interval of writes.
    /// Run one writer per cluster. `lifeboat restore` replays the log by default.
    #[command(subcommand)]
    Log(LogCommand),
    /// Run beside one member: check, save, replace it, recover the cluster
    ///
    /// Every check interval: health of every member (successive failures counted) and of
    /// the store, a heartbeat in the store; every snapshot interval: a save, by the agent
    /// beside the leader only. When the local member fails K checks while the others
    /// hold quorum, it is replaced (remove, wipe, re-add as learner, promote). When quorum
    /// is lost for K checks, the store is reachable and no peer reports a healthy cluster,
    /// a recovery epoch is claimed in the store and every member restores its snapshot.
    /// Every decision goes to the journal (`lifeboat status --journal`).
    Agent(AgentArgs),
    /// Replace the local member: remove it, wipe its data dir, re-add it (resumable)
    ///
    /// Like kube-aws' `etcdadm replace`: stop etcd first (or pass --member-control systemd),
    /// then start it afterwards with the launch settings printed. Refuses when the other
    /// members would not keep quorum, or while another membership change holds the lock.
    Replace(ReplaceArgs),
    /// What a member runs before etcd starts (systemd ExecStartPre)
    ///
    /// Decides from the data dir, the peers and the store: start as is, join as a replaced
    /// member, replace itself, restore into a newer recovery epoch, or bootstrap; writes
    /// etcd's launch settings to --environment-file.
    Reconfigure(MemberArgs),
    /// The agent's latest view and decisions, from its journal
    Status(StatusArgs),
    /// Run the deterministic simulator (forwards to `lifeboat-sim`)
    ///
    /// The simulator is built on its own, with `--cfg madsim`: run `scripts/sim` once
    /// from a checkout. Then `lifeboat sim --scenario all --seeds 200` finds it beside
    /// this binary, in $PATH, or in the checkout's target/sim/release. `lifeboat sim
    /// -- --help` shows its options.
    Sim {
        /// Arguments for lifeboat-sim, e.g. `--scenario two-of-three-lost --seed 4 --seeds 1 --trace`
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "ARGS")]
        args: Vec<String>,
    },
}

/// The local member, as the agent, replace and reconfigure see it.
#[derive(Debug, Args)]
pub struct MemberArgs {
    /// This member's name (etcd --name): letters, digits, '-', '_', '.', like a hostname
    #[arg(long, env = "LIFEBOAT_NAME", value_name = "NAME", value_parser = crate::cli::config::member_name)]
    pub name: String,
    /// This member's data dir: the only directory lifeboat ever moves aside
    #[arg(long, env = "LIFEBOAT_DATA_DIR", value_name = "DIR")]
    pub data_dir: PathBuf,
    /// This member's client URL
    #[arg(long, env = "LIFEBOAT_CLIENT_URL", value_name = "URL")]
    pub client_url: String,
    /// This member's peer URL
    #[arg(long, env = "LIFEBOAT_PEER_URL", value_name = "URL")]
    pub peer_url: String,
    /// Every member as NAME=PEER_URL, in the same order as --endpoints
    #[arg(long, env = "LIFEBOAT_INITIAL_CLUSTER", value_name = "NAME=URL,…")]
    pub initial_cluster: Option<String>,
    /// The token of the first incarnation of the cluster
    #[arg(long, env = "LIFEBOAT_INITIAL_CLUSTER_TOKEN", default_value = "lifeboat", value_name = "TOKEN")]
    pub initial_cluster_token: String,
    /// How to start and stop the local etcd: child (the agent runs it), systemd, or none
    #[arg(long, value_enum, default_value_t = MemberControl::Systemd)]
    pub member_control: MemberControl,
    /// systemd unit of the local etcd
    #[arg(long, env = "LIFEBOAT_UNIT", default_value = "etcd-member.service", value_name = "UNIT")]
    pub unit: String,
    /// Environment file the unit reads (EnvironmentFile=); lifeboat writes ETCD_* launch settings to it
    #[arg(long, env = "LIFEBOAT_ENVIRONMENT_FILE", default_value = "/run/lifeboat/etcd.env", value_name = "FILE")]
    pub environment_file: PathBuf,
    /// The etcd binary: the member itself in child mode, and the scratch member a disaster
    /// recovery replays the revision log into
    #[arg(long, env = "LIFEBOAT_ETCD", default_value = "etcd", value_name = "PATH")]
    pub etcd: PathBuf,
    /// Extra flags for etcd (child mode), e.g. --etcd-arg=--heartbeat-interval=50
    #[arg(long = "etcd-arg", value_name = "FLAG", allow_hyphen_values = true)]
    pub etcd_args: Vec<String>,
    /// Where the journal and the recovery epoch live [default: <data-dir>.lifeboat]
    #[arg(long, env = "LIFEBOAT_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Path of the etcdutl binary (etcd 3.4 has none: give its etcdctl, which restores the same way)
    #[arg(long, env = "LIFEBOAT_ETCDUTL", value_name = "PATH")]
    pub etcdutl: Option<PathBuf>,
    /// Show what would be done; change nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MemberControl {
    /// The agent starts and supervises etcd as a child process (demo, tests, containers)
    Child,
    /// systemctl start/stop of --unit, launch settings in --environment-file
    Systemd,
    /// lifeboat never starts or stops etcd; the operator does
    None,
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    #[command(flatten)]
    pub member: MemberArgs,
    /// Health checks this often
    #[arg(long, env = "LIFEBOAT_CHECK_INTERVAL_MS", value_name = "MS")]
    pub check_interval_ms: Option<u64>,
    /// Successive failed checks before a member is failed (K)
    #[arg(long, env = "LIFEBOAT_FAILURES_MAX", value_name = "K")]
    pub failures_max: Option<u32>,
    /// How long K failed checks must span before a member counts as failed, and K
    /// checks without quorum before a recovery (default 15000). etcd takes seconds to
    /// reconnect a member after a partition heals: a member only reconnecting is never
    /// replaced, a cluster only re-forming never recovered
    #[arg(long, env = "LIFEBOAT_FAILURE_GRACE_MS", value_name = "MS")]
    pub failure_grace_ms: Option<u64>,
    /// A save this often (kube-aws default: one minute)
    #[arg(long, env = "LIFEBOAT_SNAPSHOT_INTERVAL_MS", value_name = "MS")]
    pub snapshot_interval_ms: Option<u64>,
    /// Compression of versioned snapshots
    #[arg(long, env = "LIFEBOAT_COMPRESSION", value_parser = parse_compression, value_name = "none|zstd")]
    pub compression: Option<Compression>,
    /// Allow a file:// store: every member's agent sees the same directory (all
    /// members on one host, or a shared mount whose create-exclusive is atomic).
    /// Agents coordinate recoveries through the store; separate directories would
    /// let each agent claim its own
    #[arg(long, env = "LIFEBOAT_SHARED_FILE_STORE")]
    pub shared_file_store: bool,
    /// Do not write the revision log. By default the agent beside the leader watches every
    /// key and writes the changes to the store (`lifeboat log stream`), and a disaster
    /// recovery replays that log onto the snapshot it restores (with --etcd as a scratch
    /// member), losing about one flush interval of writes instead of one snapshot interval
    #[arg(long, env = "LIFEBOAT_NO_REVISION_LOG")]
    pub no_revision_log: bool,
    /// Prove the newest snapshot this often: the agent beside the leader restores it into a
    /// scratch dir (--etcd on loopback, under the state dir) and compares etcd's HashKV with the
    /// source's; a match writes `<name>.trial.json` beside its manifest. 0 turns trials off
    #[arg(long, env = "LIFEBOAT_TRIAL_INTERVAL_MS", default_value_t = 3_600_000, value_name = "MS")]
    pub trial_interval_ms: u64,
    /// The revision log's flush interval: its RPO
    #[arg(long, env = "LIFEBOAT_LOG_FLUSH_INTERVAL_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(50..=600_000), value_name = "MS")]
    pub log_flush_interval_ms: u64,
    /// Serve /metrics (Prometheus), /healthz (the agent loop turns) and /readyz (a fresh
    /// view of the cluster and the store) on this address, e.g. 127.0.0.1:9479
    #[arg(long, env = "LIFEBOAT_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,
}

#[derive(Debug, Args)]
pub struct ReplaceArgs {
    #[command(flatten)]
    pub member: MemberArgs,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The agent's state dir
    #[arg(long, env = "LIFEBOAT_STATE_DIR", value_name = "DIR")]
    pub state_dir: PathBuf,
    /// Print the journal (decisions with their evidence) instead of a summary
    #[arg(long)]
    pub journal: bool,
    /// How many journal entries
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub lines: usize,
}

#[derive(Debug, Args)]
pub struct SaveArgs {
    /// Compression of the versioned object (snapshot.db always stays plain)
    #[arg(long, env = "LIFEBOAT_COMPRESSION", value_parser = parse_compression, value_name = "none|zstd")]
    pub compression: Option<Compression>,
    /// Multipart part size in MiB (S3 needs at least 5)
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(5..=512), value_name = "MIB")]
    pub part_size_mib: u64,
    /// Parts uploaded at once
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=32), value_name = "N")]
    pub upload_concurrency: u64,
    /// zstd level when --compression zstd (1 by measurement: ~230 MiB/s on one core, faster than etcd
    /// streams a snapshot; level 3 ran at ~100 MiB/s and would slow the save)
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=19), value_name = "LEVEL")]
    pub zstd_level: i32,
    /// After a successful save, write its figures (lifeboat_last_save_timestamp_seconds, …) to this
    /// file for node-exporter's textfile collector (timer-driven installs); written whole or not at all
    #[arg(long, env = "LIFEBOAT_METRICS_FILE", value_name = "FILE")]
    pub metrics_file: Option<PathBuf>,
}

fn parse_compression(text: &str) -> Result<Compression, String> {
    text.parse()
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Which snapshot: `latest` (newest that verifies), a versioned name, or `snapshot.db`
    #[arg(long, default_value = "latest", value_name = "latest|NAME")]
    pub snapshot: String,
    /// The member data dir to create; must not exist or be empty
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// This member's name (etcd --name): letters, digits, '-', '_', '.', like a hostname
    #[arg(long, value_name = "NAME", value_parser = crate::cli::config::member_name)]
    pub name: String,
    /// Every member as NAME=PEER_URL, comma-separated (etcd --initial-cluster)
    #[arg(long, value_name = "NAME=URL,…")]
    pub initial_cluster: String,
    /// This member's peer URLs (etcd --initial-advertise-peer-urls)
    #[arg(long, value_name = "URL")]
    pub initial_advertise_peer_urls: String,
    /// A token no earlier incarnation of the cluster used (etcd --initial-cluster-token)
    #[arg(long, value_name = "TOKEN")]
    pub initial_cluster_token: String,
    /// Path of the etcdutl binary (etcd 3.4 has none: give its etcdctl, which restores the same way)
    #[arg(long, env = "LIFEBOAT_ETCDUTL", value_name = "PATH")]
    pub etcdutl: Option<PathBuf>,
    /// Start the restored revisions this far above the snapshot's, and mark the older ones
    /// compacted, so Kubernetes watchers never see revisions go back (etcdutl 3.5.10 or
    /// later); 0 restores without [default: 1000000000 when etcdutl can]
    #[arg(long, value_name = "N")]
    pub bump_revision: Option<u64>,
    /// Restore exactly this revision: the newest snapshot at or below it, then the revision
    /// log up to it (`lifeboat log status` shows what the log holds)
    #[arg(long, value_name = "REV", conflicts_with_all = ["snapshot", "to_time", "no_log"], value_parser = clap::value_parser!(i64).range(1..))]
    pub to_revision: Option<i64>,
    /// Restore the last revision the log writer saw at or before this time (RFC 3339, e.g.
    /// 2026-11-29T04:00:00Z); the log writer's clock decides, to within its flush interval
    #[arg(long, value_name = "TIME", conflicts_with_all = ["snapshot", "no_log"])]
    pub to_time: Option<String>,
    /// Restore the snapshot alone, without replaying the revision log after it [default: the log
    /// is replayed as far as it reaches when the store holds one]
    #[arg(long)]
    pub no_log: bool,
    /// The etcd binary a log replay runs as a scratch member on loopback
    #[arg(long, env = "LIFEBOAT_ETCD", default_value = "etcd", value_name = "PATH")]
    pub etcd: PathBuf,
    /// Where a log replay's scratch dir goes (needs about three times the snapshot's size)
    /// [default: the system's temp dir]
    #[arg(long, value_name = "DIR")]
    pub scratch_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum LogCommand {
    /// Watch every key and write the changes to the store until stopped (SIGINT/SIGTERM)
    ///
    /// Continues one revision after the log's last segment in the store, or after the
    /// newest snapshot of this etcd cluster; with neither (or when etcd compacted that
    /// history away) it saves a snapshot first and starts a new chain after it. Every
    /// segment holds whole transactions, each exactly one revision after the previous.
    /// Segments go to <store>/<cluster>/exported/etcd-log/<etcd cluster ID>/.
    Stream(LogStreamArgs),
    /// The log's chains and holes, and how far it lags behind the cluster
    ///
    /// Exit code 3 when --max-lag-seconds is given and the log lags more.
    Status {
        /// Exit with code 3 when the cluster has revisions the log has not held for this long
        #[arg(long, value_name = "SECONDS")]
        max_lag_seconds: Option<u64>,
    },
}

#[derive(Debug, Args)]
pub struct LogStreamArgs {
    /// A segment is written at most this long after its first change arrived: the RPO
    #[arg(long, env = "LIFEBOAT_LOG_FLUSH_INTERVAL_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(50..=600_000), value_name = "MS")]
    pub flush_interval_ms: u64,
    /// A segment is written sooner once its changes reach this size (a transaction is never split)
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64), value_name = "MIB")]
    pub segment_target_mib: u64,
    /// zstd level of segments
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=19), value_name = "LEVEL")]
    pub zstd_level: i32,
    /// Compression of the snapshot saved to start a chain
    #[arg(long, env = "LIFEBOAT_COMPRESSION", value_parser = parse_compression, value_name = "none|zstd")]
    pub compression: Option<Compression>,
}

#[derive(Debug, Subcommand)]
pub enum SnapshotsCommand {
    /// List versioned snapshots (newest first) and snapshot.db
    List,
    /// Download snapshots and check them against their manifests and etcd's own hash
    ///
    /// Exit code 0 when all checked snapshots verify, 6 when one does not. With --all, an
    /// object without a manifest is listed as skipped, not failed: saves write the manifest
    /// last, so it is a save in progress or an interrupted one, never a backup.
    ///
    /// With --restore, each versioned snapshot is also restored into a scratch dir, started
    /// as a one-member etcd on loopback, and its HashKV at the snapshot's revision compared
    /// with the source member's at save time (in the manifest): proof that it restores.
    Verify {
        /// Snapshot names, `latest` (the newest versioned one) or `snapshot.db` [default: latest and snapshot.db]
        names: Vec<String>,
        /// Verify every snapshot in the store
        #[arg(long, conflicts_with = "names")]
        all: bool,
        /// Trial-restore each versioned snapshot and compare etcd's HashKV with the source's
        #[arg(long)]
        restore: bool,
        /// The etcd binary the trial starts
        #[arg(long, env = "LIFEBOAT_ETCD", default_value = "etcd", value_name = "PATH")]
        etcd: PathBuf,
        /// Path of the etcdutl binary (etcd 3.4: its etcdctl)
        #[arg(long, env = "LIFEBOAT_ETCDUTL", value_name = "PATH")]
        etcdutl: Option<PathBuf>,
        /// Where the trial's scratch dir goes (needs twice the snapshot's size) [default: the system's temp dir]
        #[arg(long, value_name = "DIR", requires = "restore")]
        scratch_dir: Option<PathBuf>,
    },
    /// Delete versioned snapshots the retention policy does not keep
    ///
    /// Keeps the newest --keep-last, the newest of each of the newest --keep-hourly hours
    /// and --keep-daily days, and always the newest verified snapshot. Also removes objects
    /// without a manifest (interrupted saves) older than an hour.
    Prune {
        /// Keep the N newest snapshots [default: 10, or the config file's `[policy.retention]`]
        #[arg(long, value_name = "N")]
        keep_last: Option<u32>,
        /// Keep the newest snapshot of each of the N newest hours that have one [default: 24]
        #[arg(long, value_name = "N")]
        keep_hourly: Option<u32>,
        /// Keep the newest snapshot of each of the N newest days that have one [default: 7]
        #[arg(long, value_name = "N")]
        keep_daily: Option<u32>,
        /// Show what would be deleted, delete nothing
        #[arg(long)]
        dry_run: bool,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }
}
