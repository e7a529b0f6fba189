//! Signed releases: an operator signs what a release is (its fleet, its id and the digest of
//! its content), and what an acknowledgement says, with an Ed25519 key in the OpenSSH format
//! operators already have (`ssh-keygen -t ed25519`); the signature is an OpenSSH signature
//! (`ssh-keygen -Y sign -n allowlist-fleet` makes the same). Hosts configured with the public
//! keys they trust apply a release, and count an acknowledgement, only when enough of those
//! keys signed it: an etcd credential alone cannot change what any host enforces.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use ssh_key::{HashAlg, LineEnding, PrivateKey, PublicKey, SshSig};

/// The namespace of every signature: a signature made for anything else never verifies here.
pub const NAMESPACE: &str = "allowlist-fleet";

/// One operator's signature: the public key (OpenSSH, `ssh-ed25519 AAAA...`) and the
/// signature (an OpenSSH `SSHSIG` in PEM).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    /// The signer's public key.
    pub key: String,
    /// The signature.
    pub signature: String,
}

/// Why signing or trusting failed.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    /// A key or trust file could not be read.
    #[error("reading {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// A key is not one this can use.
    #[error("{}: {why}", path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

/// What an operator signs for a release: its fleet, its id and the digest of its content.
pub fn release_message(fleet: &str, id: &str, sha256: &str) -> Vec<u8> {
    format!("allowlist release\nfleet {fleet}\nrelease {id}\nsha256 {sha256}\n").into_bytes()
}

/// What an operator signs to acknowledge a release (up to wave `wave` of its rollout, when
/// given).
pub fn acknowledgement_message(
    fleet: &str,
    id: &str,
    sha256: &str,
    wave: Option<usize>,
) -> Vec<u8> {
    let wave = wave
        .map(|wave| format!("wave {wave}\n"))
        .unwrap_or_default();
    format!("allowlist acknowledgement\nfleet {fleet}\nrelease {id}\nsha256 {sha256}\n{wave}")
        .into_bytes()
}

/// An operator's signing key.
pub struct SigningKey {
    key: PrivateKey,
}

impl SigningKey {
    /// Reads an unencrypted Ed25519 private key in the OpenSSH format.
    pub fn read(path: &Path) -> Result<SigningKey, SignatureError> {
        let text = std::fs::read_to_string(path).map_err(|source| SignatureError::Read {
            path: path.to_owned(),
            source,
        })?;
        let invalid = |why: String| SignatureError::Key {
            path: path.to_owned(),
            why,
        };
        let key = PrivateKey::from_openssh(&text)
            .map_err(|err| invalid(format!("not an OpenSSH private key ({err})")))?;
        if key.is_encrypted() {
            return Err(invalid(
                "the key is encrypted: sign with a decrypted copy kept where only you read it"
                    .into(),
            ));
        }
        if key.algorithm() != ssh_key::Algorithm::Ed25519 {
            return Err(invalid(format!(
                "a {} key: fleets take Ed25519 keys (ssh-keygen -t ed25519)",
                key.algorithm()
            )));
        }
        Ok(SigningKey { key })
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> Result<Signature, ssh_key::Error> {
        let signature = self.key.sign(NAMESPACE, HashAlg::Sha512, message)?;
        Ok(Signature {
            key: self.key.public_key().to_openssh()?,
            signature: signature.to_pem(LineEnding::LF)?,
        })
    }

    /// The public key's fingerprint (`SHA256:...`).
    pub fn fingerprint(&self) -> String {
        self.key
            .public_key()
            .fingerprint(HashAlg::Sha256)
            .to_string()
    }
}

/// The keys a host trusts, and how many of them must sign.
#[derive(Debug, Clone)]
pub struct Trust {
    keys: Vec<PublicKey>,
    threshold: usize,
}

impl Trust {
    /// The keys of `path` (one OpenSSH public key a line, as `authorized_keys` holds them;
    /// `#` comments and blank lines skipped), `threshold` of which must sign.
    pub fn read(path: &Path, threshold: usize) -> Result<Trust, SignatureError> {
        let text = std::fs::read_to_string(path).map_err(|source| SignatureError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut keys = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let key = PublicKey::from_openssh(line).map_err(|err| SignatureError::Key {
                path: path.to_owned(),
                why: format!("line {}: not an OpenSSH public key ({err})", number + 1),
            })?;
            keys.push(key);
        }
        if keys.len() < threshold {
            return Err(SignatureError::Key {
                path: path.to_owned(),
                why: format!(
                    "{} trusted keys, fewer than the {threshold} a release needs",
                    keys.len()
                ),
            });
        }
        Ok(Trust { keys, threshold })
    }

    /// How many trusted keys must sign.
    pub fn threshold(&self) -> usize {
        self.threshold
    }

    /// The trusted keys (by fingerprint) whose signature of `message` is among `signatures`.
    pub fn signers(&self, message: &[u8], signatures: &[Signature]) -> BTreeSet<String> {
        signatures
            .iter()
            .filter_map(|signature| {
                let key = PublicKey::from_openssh(&signature.key).ok()?;
                let trusted = self
                    .keys
                    .iter()
                    .any(|known| known.key_data() == key.key_data());
                let sig = SshSig::from_pem(&signature.signature).ok()?;
                (trusted && key.verify(NAMESPACE, message, &sig).is_ok())
                    .then(|| key.fingerprint(HashAlg::Sha256).to_string())
            })
            .collect()
    }

    /// Whether enough trusted keys signed `message`; else why not.
    pub fn check(&self, message: &[u8], signatures: &[Signature]) -> Result<(), String> {
        let signers = self.signers(message, signatures);
        if signers.len() >= self.threshold {
            return Ok(());
        }
        Err(match signatures.len() {
            0 => format!(
                "not signed: this host needs signatures of {} of its {} trusted keys",
                self.threshold,
                self.keys.len()
            ),
            given => format!(
                "signed by {} of the {} trusted keys it needs ({given} signatures given; an \
                 untrusted or revoked key, or a signature of something else, counts for none)",
                signers.len(),
                self.threshold
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key made for this test (`ssh-keygen -t ed25519`), used nowhere else.
    const KEY_A: &str = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACDFZ41B0IQT4aaPiYbgVXzfibtqcAeGPdmXssSJPIotewAAAJjB/kMIwf5D
CAAAAAtzc2gtZWQyNTUxOQAAACDFZ41B0IQT4aaPiYbgVXzfibtqcAeGPdmXssSJPIotew
AAAEAYjtkV43BbDD9v+dXEwH8VQngJ1JC2ClqYHmKZGeGRN8VnjUHQhBPhpo+JhuBVfN+J
u2pwB4Y92ZeyxIk8ii17AAAAEHRlc3QtYUBhbGxvd2xpc3QBAgMEBQ==
-----END OPENSSH PRIVATE KEY-----
";

    fn key(text: &str) -> SigningKey {
        let dir = std::env::temp_dir().join(format!("sigtest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("key");
        std::fs::write(&path, text).expect("write");
        let key = SigningKey::read(&path).expect("key");
        let _ = std::fs::remove_dir_all(&dir);
        key
    }

    fn trust(keys: &[&str], threshold: usize) -> Trust {
        Trust {
            keys: keys
                .iter()
                .map(|k| PublicKey::from_openssh(k).expect("public key"))
                .collect(),
            threshold,
        }
    }

    #[test]
    fn a_signature_verifies_for_its_message_and_its_trusted_key_only() {
        let a = key(KEY_A);
        let message = release_message("web", "r1", "ab");
        let signed = a.sign(&message).expect("sign");
        let trusted = trust(&[&signed.key], 1);
        assert!(
            trusted
                .check(&message, std::slice::from_ref(&signed))
                .is_ok()
        );
        assert!(
            trusted
                .check(
                    &release_message("web", "r2", "ab"),
                    std::slice::from_ref(&signed)
                )
                .is_err(),
            "another release"
        );
        assert!(
            trusted
                .check(
                    &acknowledgement_message("web", "r1", "ab", None),
                    std::slice::from_ref(&signed)
                )
                .is_err(),
            "a release signature is no acknowledgement"
        );
        let stranger =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAF+KRX6HQK8CIZ/I7eaYI8J8gy57BeGumW4rZcBO4Bt";
        let untrusting = trust(&[stranger], 1);
        assert!(
            untrusting
                .check(&message, std::slice::from_ref(&signed))
                .is_err()
        );
        assert!(
            trusted
                .check(&message, &[])
                .unwrap_err()
                .contains("not signed")
        );
        // The same key twice is one signer.
        let two = trust(&[&signed.key, stranger], 2);
        assert!(two.check(&message, &[signed.clone(), signed]).is_err());
    }

    #[test]
    fn an_acknowledgement_signed_for_one_wave_does_not_sign_a_later_one() {
        let a = key(KEY_A);
        let first_wave = acknowledgement_message("web", "r1", "ab", Some(1));
        let signed = a.sign(&first_wave).expect("sign");
        let trusted = trust(&[&signed.key], 1);
        let signatures = std::slice::from_ref(&signed);
        assert!(trusted.check(&first_wave, signatures).is_ok());
        for relabelled in [Some(3), None] {
            let message = acknowledgement_message("web", "r1", "ab", relabelled);
            assert!(
                trusted.check(&message, signatures).is_err(),
                "wave 1 relabelled as {relabelled:?}"
            );
        }
    }

    #[test]
    fn a_signature_made_by_ssh_keygen_verifies() {
        // printf 'allowlist release\nfleet web\nrelease r1\nsha256 ab\n' > msg
        // ssh-keygen -Y sign -n allowlist-fleet -f key msg   (KEY_A)
        let made = Signature {
            key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMVnjUHQhBPhpo+JhuBVfN+Ju2pwB4Y92ZeyxIk8ii17 test-a@allowlist".into(),
            signature: "-----BEGIN SSH SIGNATURE-----\nU1NIU0lHAAAAAQAAADMAAAALc3NoLWVkMjU1MTkAAAAgxWeNQdCEE+Gmj4mG4FV834m7an\nAHhj3Zl7LEiTyKLXsAAAAPYWxsb3dsaXN0LWZsZWV0AAAAAAAAAAZzaGE1MTIAAABTAAAA\nC3NzaC1lZDI1NTE5AAAAQKIpQbASnjM5UwGwcTCfgRxtg1cAg/bKpXp4cDo1Bka/R18aY9\n3m6G8n633pgSPYvLPdTYe9pOwn73MGeVpyfwE=\n-----END SSH SIGNATURE-----\n".into(),
        };
        let trusted = trust(&[&made.key], 1);
        assert!(
            trusted
                .check(&release_message("web", "r1", "ab"), &[made])
                .is_ok()
        );
    }
}
