//! An operator's acknowledgement of a release, as `acks/<id>` holds it: which release (by
//! its id and the digest of its content), who, when, and the operators' signatures. A host
//! counts it only when it parses strictly and names the release it has pending, digest
//! included: anything else in that key is reported and ignored, never counted.

use serde::{Deserialize, Serialize};

use super::signature::{Signature, Trust, acknowledgement_message};

/// An acknowledgement, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Acknowledgement {
    /// The release acknowledged.
    pub release: String,
    /// SHA-256 of the release's content, hex (its header's).
    pub sha256: String,
    /// Who acknowledged it (user and host).
    pub by: String,
    /// When (RFC 3339).
    pub acknowledged_at: String,
    /// Operators' signatures of the acknowledgement.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signatures: Vec<Signature>,
}

impl Acknowledgement {
    /// Whether `value`, read from the acknowledgement key of release `id` (whose content has
    /// digest `sha256`) of fleet `fleet`, acknowledges it: a strict parse, the same release
    /// and digest, and, when the host trusts keys, enough of their signatures. Else why not.
    pub fn judge(
        value: &[u8],
        fleet: &str,
        id: &str,
        sha256: &str,
        trust: Option<&Trust>,
    ) -> Result<Acknowledgement, String> {
        let ack: Acknowledgement = serde_json::from_slice(value)
            .map_err(|err| format!("the acknowledgement of {id} is not one ({err})"))?;
        if ack.release != id || ack.sha256 != sha256 {
            return Err(format!(
                "the acknowledgement under {id} names release {} with digest {}, not this \
                 release ({sha256})",
                ack.release, ack.sha256
            ));
        }
        if let Some(trust) = trust {
            trust
                .check(&acknowledgement_message(fleet, id, sha256), &ack.signatures)
                .map_err(|why| format!("the acknowledgement of {id} is {why}"))?;
        }
        Ok(ack)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(release: &str, sha256: &str) -> Vec<u8> {
        serde_json::to_vec(&Acknowledgement {
            release: release.into(),
            sha256: sha256.into(),
            by: "ops@admin".into(),
            acknowledged_at: "2027-01-01T00:00:00Z".into(),
            signatures: Vec::new(),
        })
        .expect("json")
    }

    #[test]
    fn only_an_acknowledgement_of_this_very_release_counts() {
        assert!(Acknowledgement::judge(&ack("r1", "aa"), "web", "r1", "aa", None).is_ok());
        let cases: [&[u8]; 4] = [
            b"garbage{{",
            br#"{"by":"ops","acknowledged_at":"2027-01-01T00:00:00Z"}"#,
            &ack("r0", "aa"),
            &ack("r1", "bb"),
        ];
        for value in cases {
            assert!(
                Acknowledgement::judge(value, "web", "r1", "aa", None).is_err(),
                "{}",
                String::from_utf8_lossy(value)
            );
        }
    }
}
