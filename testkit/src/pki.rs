//! Test certificates laid out as kubeadm lays out etcd's PKI
//! (`/etc/kubernetes/pki/etcd/`): `ca.{crt,key}`, `server.{crt,key}`,
//! `peer.{crt,key}` and `healthcheck-client.{crt,key}`, all for loopback.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use std::path::{Path, PathBuf};

/// A kubeadm-style etcd PKI directory, generated fresh by the test.
pub struct KubeadmPki {
    pub dir: PathBuf,
}

fn leaf(common_name: &str, names: &[&str], usages: Vec<ExtendedKeyUsagePurpose>) -> CertificateParams {
    let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
    let mut params = CertificateParams::new(names).expect("certificate names");
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.extended_key_usages = usages;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.use_authority_key_identifier_extension = true;
    params
}

impl KubeadmPki {
    /// Writes a CA and the server, peer and healthcheck-client certificates it signs
    /// into `dir` (created if need be). Server and peer certificates name
    /// `127.0.0.1` and `localhost`, and serve both ends, as kubeadm's do.
    pub fn generate(dir: &Path) -> KubeadmPki {
        std::fs::create_dir_all(dir).expect("create the pki dir");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "etcd-ca");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().expect("ca key");
        let ca_cert = ca.self_signed(&ca_key).expect("self-sign the ca");
        write(dir, "ca", &ca_cert.pem(), &ca_key.serialize_pem());
        let issuer = Issuer::new(ca, ca_key);
        let both = || vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        for (name, common_name, params) in [
            ("server", "etcd-server", leaf("etcd-server", &["127.0.0.1", "localhost"], both())),
            ("peer", "etcd-peer", leaf("etcd-peer", &["127.0.0.1", "localhost"], both())),
            (
                "healthcheck-client",
                "kube-etcd-healthcheck-client",
                leaf("kube-etcd-healthcheck-client", &[], vec![ExtendedKeyUsagePurpose::ClientAuth]),
            ),
        ] {
            let key = KeyPair::generate().unwrap_or_else(|error| panic!("{common_name} key: {error}"));
            let cert = params.signed_by(&key, &issuer).unwrap_or_else(|error| panic!("sign {common_name}: {error}"));
            write(dir, name, &cert.pem(), &key.serialize_pem());
        }
        KubeadmPki { dir: dir.to_owned() }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// The etcd flags that serve clients and peers over TLS with these files,
    /// requiring client certificates on both, as kubeadm's etcd manifest does.
    pub fn etcd_flags(&self) -> Vec<String> {
        let file = |name: &str| self.path(name).display().to_string();
        vec![
            format!("--cert-file={}", file("server.crt")),
            format!("--key-file={}", file("server.key")),
            format!("--trusted-ca-file={}", file("ca.crt")),
            "--client-cert-auth=true".into(),
            format!("--peer-cert-file={}", file("peer.crt")),
            format!("--peer-key-file={}", file("peer.key")),
            format!("--peer-trusted-ca-file={}", file("ca.crt")),
            "--peer-client-cert-auth=true".into(),
        ]
    }

    /// etcdctl's flags to talk to a cluster of these certificates.
    pub fn etcdctl_flags(&self) -> Vec<String> {
        let file = |name: &str| self.path(name).display().to_string();
        vec![
            format!("--cacert={}", file("ca.crt")),
            format!("--cert={}", file("healthcheck-client.crt")),
            format!("--key={}", file("healthcheck-client.key")),
        ]
    }
}

fn write(dir: &Path, name: &str, cert: &str, key: &str) {
    std::fs::write(dir.join(format!("{name}.crt")), cert).expect("write a certificate");
    std::fs::write(dir.join(format!("{name}.key")), key).expect("write a key");
}
