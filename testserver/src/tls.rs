//! TLS for the test server: a throwaway CA and a certificate for one host name,
//! so a test can check that a client trusts exactly the CA bundle it is given.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// A server identity for `host`, signed by a fresh CA.
#[derive(Debug, Clone)]
pub struct Tls {
    /// The CA certificate (PEM), for the client's trust store.
    pub ca_pem: String,
    pub(crate) config: Arc<rustls::ServerConfig>,
}

impl Tls {
    pub fn for_host(host: &str) -> Tls {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "s3load test CA");
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().expect("server key");
        let cert = CertificateParams::new(vec![host.to_string()])
            .expect("server params")
            .signed_by(&key, &issuer)
            .expect("server certificate");
        let key_der = PrivateKeyDer::from(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("TLS versions")
                .with_no_client_auth()
                .with_single_cert(vec![cert.der().clone()], key_der)
                .expect("server config");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Tls { ca_pem: ca_cert.pem(), config: Arc::new(config) }
    }
}
