//! The admin token: created on first start, compared in constant time.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use subtle::ConstantTimeEq as _;

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

impl AdminToken {
    /// Reads the token from `path`; when the file does not exist, creates it (mode 0600) with a
    /// new random token. Returns the token and whether it was created.
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
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let secret = text.trim().to_owned();
                if secret.is_empty() {
                    return Err(TokenError::Empty(path.to_owned()));
                }
                Ok((token(secret), false))
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = [0u8; 32];
                getrandom::fill(&mut bytes).map_err(TokenError::Random)?;
                let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(io("creating"))?;
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
}
