//! TLS for Shardgate's listeners, on rustls (ring provider): certificates
//! and keys from PEM files, checked when the configuration loads; the
//! certificate chosen by SNI (exact names before wildcards, then a default
//! or a refusal); one rustls server configuration per listener and shard,
//! sharing one session-ticket key set per process so that a session resumed
//! on another shard, or after a reload, works.
//!
//! The handshake and record I/O live in the proxy (on monoio); this crate
//! holds no sockets.

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

mod der;

/// A certificate chain and its key, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A loaded certificate: the names it serves and when it expires.
#[derive(Clone)]
pub struct LoadedCert {
    pub paths: PairPaths,
    /// DNS names of its subject alternative names (`*.example.com`
    /// wildcards included), lower-cased.
    pub names: Vec<String>,
    /// Its `notAfter`, in seconds since the Unix epoch.
    pub not_after: i64,
    pub key: Arc<CertifiedKey>,
    /// The PEM files' bytes, to tell whether a reload changed them.
    pub fingerprint: u64,
}

impl fmt::Debug for LoadedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedCert")
            .field("cert", &self.paths.cert)
            .field("names", &self.names)
            .field("not_after", &self.not_after)
            .finish()
    }
}

impl PartialEq for LoadedCert {
    fn eq(&self, other: &Self) -> bool {
        self.paths == other.paths && self.fingerprint == other.fingerprint
    }
}

impl Eq for LoadedCert {}

/// Loads a chain and its key, checking that the chain parses, that it has
/// a DNS name, and that the key is the certificate's. Errors name the file.
pub fn load_pair(paths: &PairPaths) -> Result<LoadedCert, String> {
    let c = load_client_pair(paths)?;
    if c.names.is_empty() {
        return Err(format!(
            "{}: the certificate names no DNS subject alternative name",
            paths.cert.display()
        ));
    }
    Ok(c)
}

/// [`load_pair`] for a client certificate, which need name no host.
pub fn load_client_pair(paths: &PairPaths) -> Result<LoadedCert, String> {
    let cert_text = read(&paths.cert)?;
    let key_text = read(&paths.key)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_text)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: not a PEM certificate chain: {e}", paths.cert.display()))?;
    let Some(leaf) = chain.first() else {
        return Err(format!("{}: no certificate in it", paths.cert.display()));
    };
    let key = PrivateKeyDer::from_pem_slice(&key_text)
        .map_err(|e| format!("{}: not a PEM private key: {e}", paths.key.display()))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("{}: unsupported private key: {e}", paths.key.display()))?;
    let certified = CertifiedKey::new(chain.clone(), signer);
    certified.keys_match().map_err(|e| {
        format!(
            "{}: the key does not belong to the certificate in {} ({e})",
            paths.key.display(),
            paths.cert.display()
        )
    })?;
    let end = webpki::EndEntityCert::try_from(leaf).map_err(|e| {
        format!(
            "{}: the certificate does not parse: {e:?}",
            paths.cert.display()
        )
    })?;
    let names: Vec<String> = end.valid_dns_names().map(str::to_ascii_lowercase).collect();
    let not_after = der::not_after(leaf.as_ref()).ok_or_else(|| {
        format!(
            "{}: the certificate's validity does not parse",
            paths.cert.display()
        )
    })?;
    Ok(LoadedCert {
        paths: paths.clone(),
        names,
        not_after,
        key: Arc::new(certified),
        fingerprint: fnv(&[&cert_text, &key_text]),
    })
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn fnv(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in *p {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        h = (h ^ 0xff).wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// The CA certificates client certificates are verified against.
#[derive(Clone)]
pub struct LoadedCa {
    pub path: PathBuf,
    pub roots: Arc<rustls::RootCertStore>,
    pub fingerprint: u64,
}

impl fmt::Debug for LoadedCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedCa")
            .field("path", &self.path)
            .finish()
    }
}

impl PartialEq for LoadedCa {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path && self.fingerprint == other.fingerprint
    }
}

impl Eq for LoadedCa {}

/// Loads a bundle of CA certificates (PEM); every one must parse.
pub fn load_ca(path: &Path) -> Result<LoadedCa, String> {
    let text = read(path)?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&text) {
        let cert = cert.map_err(|e| format!("{}: not a PEM certificate: {e}", path.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: not a usable CA certificate: {e}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{}: no certificate in it", path.display()));
    }
    Ok(LoadedCa {
        path: path.to_path_buf(),
        roots: Arc::new(roots),
        fingerprint: fnv(&[&text]),
    })
}

/// Client certificates a listener asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAuth {
    pub ca: LoadedCa,
    /// A handshake without a certificate fails; otherwise it goes on
    /// without a verified client (a certificate sent must still verify).
    pub required: bool,
}

/// The subject of a certificate (DER) as RFC 4514 text, most specific
/// attribute first: `CN=client-a,O=Acme`.
pub fn subject_text(cert: &[u8]) -> Option<String> {
    der::subject(cert)
}

/// What a handshake without SNI, or with a name no certificate has, gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnknownName {
    /// The first certificate.
    #[default]
    Default,
    /// No certificate: the handshake fails.
    Refuse,
}

/// Chooses the certificate for a handshake by its SNI name: an exact name,
/// then a wildcard one level deep (`*.example.com` for `a.example.com`,
/// never for `example.com` or `a.b.example.com`), then the default.
#[derive(Debug)]
pub struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl SniResolver {
    /// Certificates in configuration order: a name two of them carry goes
    /// to the first.
    pub fn new(certs: &[LoadedCert], unknown: UnknownName) -> SniResolver {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for c in certs {
            for name in &c.names {
                let map = match name.strip_prefix("*.") {
                    Some(suffix) => wildcard.entry(suffix.to_string()),
                    None => exact.entry(name.clone()),
                };
                map.or_insert_with(|| c.key.clone());
            }
        }
        let default = match unknown {
            UnknownName::Default => certs.first().map(|c| c.key.clone()),
            UnknownName::Refuse => None,
        };
        SniResolver {
            exact,
            wildcard,
            default,
        }
    }

    /// The certificate for `name` (lower-case, as rustls hands it over).
    pub fn pick(&self, name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = name else {
            return self.default.clone();
        };
        if let Some(k) = self.exact.get(name) {
            return Some(k.clone());
        }
        let parent = name.split_once('.').map(|(_, rest)| rest);
        parent
            .and_then(|p| self.wildcard.get(p))
            .or(self.default.as_ref())
            .cloned()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.pick(hello.server_name())
    }
}

/// The session-ticket keys of this process (rotated by rustls every six
/// hours, the previous key still accepted): one for every shard and every
/// reload, so a ticket issued anywhere resumes anywhere.
pub fn ticketer() -> Result<Arc<dyn rustls::server::ProducesTickets>, String> {
    static TICKETER: OnceLock<Result<Arc<dyn rustls::server::ProducesTickets>, String>> =
        OnceLock::new();
    TICKETER
        .get_or_init(|| rustls::crypto::ring::Ticketer::new().map_err(|e| e.to_string()))
        .clone()
}

/// A listener's rustls configuration: TLS 1.2 and 1.3 with rustls's safe
/// cipher suites, the certificate by SNI, `alpn` offered in order, tickets
/// shared process-wide and a session cache of `cache` entries of its own.
pub fn server_config(
    certs: &[LoadedCert],
    unknown: UnknownName,
    alpn: &[&[u8]],
    cache: usize,
    client_auth: Option<&ClientAuth>,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?;
    let builder = match client_auth {
        None => builder.with_no_client_auth(),
        Some(auth) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                auth.ca.roots.clone(),
                provider,
            );
            let verifier = if auth.required {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            builder.with_client_cert_verifier(verifier.build().map_err(|e| e.to_string())?)
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(SniResolver::new(certs, unknown)));
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config.ticketer = ticketer()?;
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(cache);
    Ok(Arc::new(config))
}

/// A client configuration for a group's upstream connections: TLS 1.3 and
/// 1.2, certificates verified against `ca`, `alpn` offered, sessions kept
/// for resumption (rustls's in-memory cache, per shard), and `identity`
/// presented when the upstream asks for a client certificate.
pub fn client_config(
    ca: &LoadedCa,
    identity: Option<&LoadedCert>,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_root_certificates(ca.roots.clone());
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some(c) => builder.with_client_cert_resolver(Arc::new(
            rustls::sign::SingleCertAndKey::from(c.key.clone()),
        )),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests;
