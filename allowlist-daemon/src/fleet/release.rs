//! A fleet release: the lists of a policy file with an id, what it was based on, who
//! published it; stored as a small header and chunks that each fit one etcd request.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::model::DesiredList;

/// The most bytes of release content in one chunk: well under etcd's default request limit
/// (1.5 MiB), with room for the key and the request's own fields.
pub const CHUNK_BYTES: usize = 1 << 20;

/// A release's lists, as published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Release {
    /// Its id, as `allowlistctl fleet publish` prints it.
    pub id: String,
    /// The release it replaced (the fleet's current one when it was published).
    pub base: Option<String>,
    /// When it was published (RFC 3339).
    pub published_at: String,
    /// Who published it (user and host).
    pub by: String,
    /// The lists, as a policy file declares them.
    pub allowlists: Vec<DesiredList>,
    /// The waves it rolls out in; without, every host takes it at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<super::rollout::Rollout>,
}

/// The most a release may hold, whatever a host allows: its header is refused beyond, before
/// any chunk is read.
pub const MAX_RELEASE_BYTES: usize = 1 << 30;

/// What the release's key holds: where to find its chunks and how to check them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// The release id.
    pub id: String,
    /// How many chunks hold the content.
    pub chunks: usize,
    /// The content's length in bytes.
    pub bytes: usize,
    /// SHA-256 of the content, hex.
    pub sha256: String,
    /// Operators' signatures of the release (see [`super::signature`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signatures: Vec<super::signature::Signature>,
    /// The release's waves, copied from its content so that a host learns its wave without
    /// reading the release; a host that reads the content refuses it unless both agree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<super::rollout::Rollout>,
}

impl Header {
    /// Checks the header of the release stored under id `id` against what a host reads:
    /// it names that id, and its content is at most `max_bytes` in exactly as many chunks as
    /// that takes.
    pub fn check(&self, id: &str, max_bytes: usize) -> Result<(), ReleaseError> {
        let refused = |why: String| {
            Err(ReleaseError::Refused {
                id: id.to_owned(),
                why,
            })
        };
        if self.id != id {
            return refused(format!("its header names release {:?}", self.id));
        }
        if self.bytes > max_bytes.min(MAX_RELEASE_BYTES) {
            return refused(format!(
                "it holds {} bytes, more than this host reads ({} bytes)",
                self.bytes,
                max_bytes.min(MAX_RELEASE_BYTES)
            ));
        }
        if self.chunks != self.bytes.div_ceil(CHUNK_BYTES) {
            return refused(format!(
                "{} bytes come in {} chunks of at most {CHUNK_BYTES} bytes, not {}",
                self.bytes,
                self.bytes.div_ceil(CHUNK_BYTES),
                self.chunks
            ));
        }
        Ok(())
    }
}

/// Why stored chunks are not a release.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// The chunks do not add up to what the header says.
    #[error(
        "release {id}: its chunks hold {found} bytes with SHA-256 {found_sha256}, the header says {bytes} bytes and {sha256}"
    )]
    Damaged {
        /// The release.
        id: String,
        /// Bytes found.
        found: usize,
        /// Their checksum.
        found_sha256: String,
        /// Bytes expected.
        bytes: usize,
        /// Checksum expected.
        sha256: String,
    },
    /// The header is not one a host reads (a wrong id, too big, chunks that do not add up).
    #[error("release {id}: refused: {why}")]
    Refused {
        /// The release, by its key.
        id: String,
        /// Why.
        why: String,
    },
    /// The content is not a release.
    #[error("release {id}: not a release")]
    Format {
        /// The release.
        id: String,
        /// What is wrong.
        #[source]
        source: serde_json::Error,
    },
}

impl Release {
    /// The header and the chunks that store this release.
    pub fn encode(&self) -> Result<(Header, Vec<Vec<u8>>), serde_json::Error> {
        let content = serde_json::to_vec(self)?;
        let chunks: Vec<Vec<u8>> = content.chunks(CHUNK_BYTES).map(<[u8]>::to_vec).collect();
        Ok((
            Header {
                id: self.id.clone(),
                chunks: chunks.len(),
                bytes: content.len(),
                sha256: hex_sha256(&content),
                signatures: Vec::new(),
                rollout: self.rollout.clone(),
            },
            chunks,
        ))
    }

    /// The release stored as `header` and `chunks`, checked against the header: its content
    /// has the header's length and digest, and names the header's id (a host trusts the id
    /// of the key it read, never one inside the content).
    pub fn decode(header: &Header, chunks: &[Vec<u8>]) -> Result<Release, ReleaseError> {
        let content = chunks.concat();
        let found_sha256 = hex_sha256(&content);
        if content.len() != header.bytes || found_sha256 != header.sha256 {
            return Err(ReleaseError::Damaged {
                id: header.id.clone(),
                found: content.len(),
                found_sha256,
                bytes: header.bytes,
                sha256: header.sha256.clone(),
            });
        }
        let release: Release =
            serde_json::from_slice(&content).map_err(|source| ReleaseError::Format {
                id: header.id.clone(),
                source,
            })?;
        if release.id != header.id {
            return Err(ReleaseError::Refused {
                id: header.id.clone(),
                why: format!("its content names release {:?}", release.id),
            });
        }
        if release.rollout != header.rollout {
            return Err(ReleaseError::Refused {
                id: header.id.clone(),
                why: "its header's waves are not those of its content".into(),
            });
        }
        Ok(release)
    }
}

/// SHA-256 of `bytes`, hex.
pub(super) fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::EntryInput;

    fn release(entries: usize) -> Release {
        Release {
            id: "r1".into(),
            base: None,
            published_at: "2027-01-15T08:00:00Z".into(),
            by: "ops@admin".into(),
            allowlists: vec![DesiredList {
                name: "big".into(),
                description: String::new(),
                enabled: true,
                allow_all: false,
                entries: (0..entries)
                    .map(|n| EntryInput {
                        cidr: std::net::Ipv4Addr::from(0x0a00_0000 + n as u32).to_string(),
                        description: None,
                        expires_at: None,
                        ttl: None,
                    })
                    .collect(),
                source: None,
            }],
            rollout: None,
        }
    }

    #[test]
    fn a_large_release_is_stored_in_chunks_that_read_back_as_it() {
        let big = release(262_144);
        let (header, chunks) = big.encode().expect("encode");
        assert!(chunks.len() > 1, "{} bytes in one chunk", header.bytes);
        assert!(chunks.iter().all(|chunk| chunk.len() <= CHUNK_BYTES));
        assert_eq!(Release::decode(&header, &chunks).expect("decode"), big);
    }

    #[test]
    fn waves_in_the_header_must_be_those_of_the_content() {
        let mut waved = release(10);
        waved.rollout = Some(
            crate::fleet::rollout::Rollout::plan(&["a".into()], &["a".into(), "b".into()], None)
                .expect("plan"),
        );
        let (mut header, chunks) = waved.encode().expect("encode");
        assert_eq!(
            header.rollout, waved.rollout,
            "a host learns its wave from the header"
        );
        assert_eq!(Release::decode(&header, &chunks).expect("decode"), waved);
        header.rollout = None;
        let err = Release::decode(&header, &chunks).expect_err("a header without the waves");
        assert!(err.to_string().contains("waves"), "{err}");
    }

    #[test]
    fn a_missing_or_changed_chunk_is_found_out() {
        let (header, mut chunks) = release(100_000).encode().expect("encode");
        let last = chunks.pop().expect("chunks");
        let err = Release::decode(&header, &chunks).expect_err("missing chunk");
        assert!(err.to_string().contains("its chunks hold"), "{err}");
        chunks.push(last);
        chunks[0][10] ^= 1;
        assert!(Release::decode(&header, &chunks).is_err(), "a flipped bit");
    }
}
