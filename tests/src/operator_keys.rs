//! Operators' signing keys for the fleet tests: Ed25519 keys in the OpenSSH format, made
//! with `ssh-keygen -t ed25519` for these tests and used nowhere else.

use std::path::{Path, PathBuf};

/// A test operator's key pair.
pub struct OperatorKey {
    /// The private key (OpenSSH, unencrypted).
    pub private: &'static str,
    /// The public key, as `authorized_keys` and `--fleet-trust` hold it.
    pub public: &'static str,
}

impl OperatorKey {
    /// Writes the private key into `dir` (mode 0600) as `name`; returns its path.
    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt as _;
        let path = dir.join(name);
        std::fs::write(&path, self.private).expect("writing a test key");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("key mode");
        path
    }
}

/// Writes a trust file of `keys` into `dir` as `name`; returns its path.
pub fn trust_file(dir: &Path, name: &str, keys: &[&OperatorKey]) -> PathBuf {
    let path = dir.join(name);
    let lines: Vec<&str> = keys.iter().map(|key| key.public).collect();
    std::fs::write(&path, lines.join("\n") + "\n").expect("writing a trust file");
    path
}

/// Operator A.
pub const OPERATOR_A: OperatorKey = OperatorKey {
    private: "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACDFZ41B0IQT4aaPiYbgVXzfibtqcAeGPdmXssSJPIotewAAAJjB/kMIwf5D
CAAAAAtzc2gtZWQyNTUxOQAAACDFZ41B0IQT4aaPiYbgVXzfibtqcAeGPdmXssSJPIotew
AAAEAYjtkV43BbDD9v+dXEwH8VQngJ1JC2ClqYHmKZGeGRN8VnjUHQhBPhpo+JhuBVfN+J
u2pwB4Y92ZeyxIk8ii17AAAAEHRlc3QtYUBhbGxvd2xpc3QBAgMEBQ==
-----END OPENSSH PRIVATE KEY-----
",
    public: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMVnjUHQhBPhpo+JhuBVfN+Ju2pwB4Y92ZeyxIk8ii17 test-a@allowlist",
};

/// Operator B.
pub const OPERATOR_B: OperatorKey = OperatorKey {
    private: "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACA3R/kmf9IGVghob/dw90Am/EpBp9QHge6gR5H5GCqsSgAAAJg1wxJZNcMS
WQAAAAtzc2gtZWQyNTUxOQAAACA3R/kmf9IGVghob/dw90Am/EpBp9QHge6gR5H5GCqsSg
AAAEDgsqyZ0lQCeqASdgwGFRZmzCd128v5fD5U32ylEJCsNDdH+SZ/0gZWCGhv93D3QCb8
SkGn1AeB7qBHkfkYKqxKAAAAEHRlc3QtYkBhbGxvd2xpc3QBAgMEBQ==
-----END OPENSSH PRIVATE KEY-----
",
    public: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDdH+SZ/0gZWCGhv93D3QCb8SkGn1AeB7qBHkfkYKqxK test-b@allowlist",
};

/// Operator C.
pub const OPERATOR_C: OperatorKey = OperatorKey {
    private: "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACAtj1Z7r5Fk9xgovqHjndRopbxTC33cARry8aq8XnGv1QAAAJhMp84wTKfO
MAAAAAtzc2gtZWQyNTUxOQAAACAtj1Z7r5Fk9xgovqHjndRopbxTC33cARry8aq8XnGv1Q
AAAECRQZiOqY4E8W3fDVAWFxFpZPnBfqovEd89DWko66Jpci2PVnuvkWT3GCi+oeOd1Gil
vFMLfdwBGvLxqrxeca/VAAAAEHRlc3QtY0BhbGxvd2xpc3QBAgMEBQ==
-----END OPENSSH PRIVATE KEY-----
",
    public: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC2PVnuvkWT3GCi+oeOd1GilvFMLfdwBGvLxqrxeca/V test-c@allowlist",
};
