//! TLS for an admin API that listens beyond loopback.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use super::ServerError;

/// The certificate chain and key the API serves TLS with, both PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate, followed by its intermediates.
    pub cert: PathBuf,
    /// The certificate's private key, readable by its owner (and its group) only.
    pub key: PathBuf,
}

/// A TLS acceptor for `files` (TLS 1.2 and 1.3, ring's ciphers), once the key is known to be
/// private to its owner.
pub fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, ServerError> {
    fn pem_error<'a>(
        what: &'static str,
        path: &'a Path,
    ) -> impl FnOnce(rustls::pki_types::pem::Error) -> ServerError + 'a {
        move |source| ServerError::TlsFile {
            what,
            path: path.to_owned(),
            source,
        }
    }
    refuse_exposed_key(&files.key)?;
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(pem_error("certificate", &files.cert))?;
    if chain.is_empty() {
        return Err(pem_error("certificate", &files.cert)(
            rustls::pki_types::pem::Error::NoItemsFound,
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(pem_error("key", &files.key))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(ServerError::Tls)?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(ServerError::Tls)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Refuses a key that every user may read (or its group may write), as ssh refuses a private
/// key; a group may read it (`0640 root:allowlistd`, as with Debian's ssl-cert group).
fn refuse_exposed_key(path: &Path) -> Result<(), ServerError> {
    let metadata = std::fs::metadata(path).map_err(|source| ServerError::TlsFile {
        what: "key",
        path: path.to_owned(),
        source: rustls::pki_types::pem::Error::Io(source),
    })?;
    let mode = metadata.mode() & 0o7777;
    if mode & 0o027 != 0 {
        return Err(ServerError::TlsKeyExposed {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}
