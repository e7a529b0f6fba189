//! The admin token: created on first start, compared in constant time.

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

use nix::errno::Errno;
use nix::unistd::geteuid;
use subtle::ConstantTimeEq as _;

use crate::store::{create_private_file, open_regular_file};

/// Why the token cannot be read or made.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// A file operation failed.
    #[error("{action} {}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The token file.
        path: std::path::PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The token file holds no token.
    #[error("the token file {} is empty", .0.display())]
    Empty(std::path::PathBuf),
    /// Users other than its owner may read or write the token file.
    #[error(
        "the token file {} can be read or written by other users (mode {mode:04o}): anyone who \
         reads it controls the firewall; run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    Exposed {
        /// The token file.
        path: std::path::PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The token file belongs to another user.
    #[error(
        "the token file {} belongs to uid {owner}, not to the daemon's uid {daemon}: another \
         user could change it",
        path.display()
    )]
    Owner {
        /// The token file.
        path: std::path::PathBuf,
        /// Its owner.
        owner: u32,
        /// The daemon's effective uid.
        daemon: u32,
    },
    /// The token file is a symbolic link.
    #[error(
        "the token file {} is a symbolic link; give the file itself",
        .0.display()
    )]
    Link(std::path::PathBuf),
    /// No randomness for a new token.
    #[error("drawing a random token")]
    Random(#[source] getrandom::Error),
}

/// The bearer token every API call but `/healthz` must present, and its name for audit
/// lines (the token file's name without extension, e.g. `admin`).
pub struct AdminToken {
    secret: String,
    name: String,
}

/// The text of the token file `file` (at `path`), once it is known to be the daemon's
/// own and private to it, as ssh requires of a private key.
fn read_private(mut file: &File, path: &Path) -> Result<String, TokenError> {
    let io = |action| {
        move |source| TokenError::Io {
            action,
            path: path.to_owned(),
            source,
        }
    };
    let metadata = file.metadata().map_err(io("reading the mode of"))?;
    let daemon = geteuid().as_raw();
    if metadata.uid() != daemon {
        return Err(TokenError::Owner {
            path: path.to_owned(),
            owner: metadata.uid(),
            daemon,
        });
    }
    let mode = metadata.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(TokenError::Exposed {
            path: path.to_owned(),
            mode,
        });
    }
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(io("reading"))?;
    Ok(text)
}

impl AdminToken {
    /// Reads the token from `path`, which must be a file of the daemon's own that no other
    /// user may read or write, not a symbolic link (as ssh requires of a private key); when
    /// the file does not exist, creates it (mode 0600) with a new random token. Returns the
    /// token and whether it was created.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), TokenError> {
        let name = path.file_stem().map_or_else(
            || "admin".to_owned(),
            |stem| stem.to_string_lossy().into_owned(),
        );
        let token = |secret| AdminToken { secret, name };
        let io = |action| {
            move |source| TokenError::Io {
                action,
                path: path.to_owned(),
                source,
            }
        };
        match open_regular_file(path) {
            Ok(file) => {
                let secret = read_private(&file, path)?.trim().to_owned();
                if secret.is_empty() {
                    return Err(TokenError::Empty(path.to_owned()));
                }
                Ok((token(secret), false))
            }
            Err(err) if err.raw_os_error() == Some(Errno::ELOOP as i32) => {
                Err(TokenError::Link(path.to_owned()))
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = [0u8; 32];
                getrandom::fill(&mut bytes).map_err(TokenError::Random)?;
                let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                let mut file = create_private_file(path).map_err(io("creating"))?;
                writeln!(file, "{secret}").map_err(io("writing"))?;
                file.sync_all().map_err(io("syncing"))?;
                Ok((token(secret), true))
            }
            Err(err) => Err(io("reading")(err)),
        }
    }

    /// Whether an `Authorization` header value carries this token.
    pub fn accepts(&self, authorization: Option<&str>) -> bool {
        let presented = authorization
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or("");
        presented.as_bytes().ct_eq(self.secret.as_bytes()).into()
    }

    /// The token's name, for audit lines.
    pub fn name(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_bearer_token_is_accepted() {
        let token = AdminToken {
            secret: "s3cret".into(),
            name: "admin".into(),
        };
        assert!(token.accepts(Some("Bearer s3cret")));
        for wrong in [
            None,
            Some(""),
            Some("s3cret"),
            Some("Bearer s3cre"),
            Some("Bearer s3cret2"),
            Some("Basic s3cret"),
        ] {
            assert!(!token.accepts(wrong), "{wrong:?}");
        }
    }

    #[test]
    fn a_missing_token_file_is_created_private_and_then_reused() {
        let path = std::env::temp_dir().join(format!("allowlist-token-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let (first, created) = AdminToken::load_or_create(&path).expect("create");
        assert!(created);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).expect("stat").permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        let (second, created) = AdminToken::load_or_create(&path).expect("reuse");
        assert!(!created);
        assert!(second.accepts(Some(&format!("Bearer {}", first.secret))));
        assert_eq!(
            second.name(),
            path.file_stem().expect("stem").to_string_lossy()
        );
        std::fs::remove_file(&path).expect("cleanup");
    }

    #[test]
    fn a_token_file_others_can_read_or_a_link_to_one_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("allowlist-token-dir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).expect("dir");
        let path = dir.join("admin.token");
        std::fs::write(&path, "s3cret\n").expect("write");
        for mode in [0o644, 0o640, 0o604, 0o660] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
            let err = AdminToken::load_or_create(&path).err().expect("refused");
            assert!(
                matches!(err, TokenError::Exposed { mode: m, .. } if m == mode),
                "{mode:o}: {err}"
            );
            assert!(err.to_string().contains("chmod 600"), "{err}");
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).expect("chmod");
        assert!(
            AdminToken::load_or_create(&path).is_ok(),
            "read-only by its owner"
        );
        let link = dir.join("link.token");
        std::os::unix::fs::symlink(&path, &link).expect("symlink");
        assert!(matches!(
            AdminToken::load_or_create(&link),
            Err(TokenError::Link(_))
        ));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
