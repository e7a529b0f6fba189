//! An operator's acknowledgement of a release, as `acks/<id>` holds it: which release (by
//! its id and the digest of its content), up to which wave of its rollout, who, when, and
//! the operators' signatures. A host counts it only when it parses strictly, names the
//! release it has pending, digest included, and covers the host's wave: anything else in
//! that key is reported and ignored, never counted.

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
    /// The last wave of the release's rollout it acknowledges (every wave when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wave: Option<usize>,
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
    /// digest `sha256`) of fleet `fleet`, acknowledges it for a host of wave `wave`: a strict
    /// parse, the same release and digest, a wave at least the host's, and, when the host
    /// trusts keys, enough of their signatures. Else why not.
    pub fn judge(
        value: &[u8],
        fleet: &str,
        (id, sha256): (&str, &str),
        wave: usize,
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
        if let Some(acknowledged) = ack.wave
            && acknowledged < wave
        {
            return Err(format!(
                "release {id} is acknowledged up to wave {acknowledged}; this host is in wave \
                 {wave}"
            ));
        }
        if let Some(trust) = trust {
            let message = acknowledgement_message(fleet, id, sha256, ack.wave);
            trust
                .check(&message, &ack.signatures)
                .map_err(|why| format!("the acknowledgement of {id} is {why}"))?;
        }
        Ok(ack)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(release: &str, sha256: &str) -> Vec<u8> {
        ack_of_wave(release, sha256, None)
    }

    fn ack_of_wave(release: &str, sha256: &str, wave: Option<usize>) -> Vec<u8> {
        serde_json::to_vec(&Acknowledgement {
            release: release.into(),
            sha256: sha256.into(),
            wave,
            by: "ops@admin".into(),
            acknowledged_at: "2027-01-01T00:00:00Z".into(),
            signatures: Vec::new(),
        })
        .expect("json")
    }

    #[test]
    fn only_an_acknowledgement_of_this_very_release_counts() {
        let judge = |value: &[u8], wave| {
            Acknowledgement::judge(value, "web", ("r1", "aa"), wave, None).is_ok()
        };
        assert!(judge(&ack("r1", "aa"), 3), "every wave");
        assert!(judge(&ack_of_wave("r1", "aa", Some(2)), 2));
        assert!(!judge(&ack_of_wave("r1", "aa", Some(1)), 2), "a later wave");
        let cases: [&[u8]; 4] = [
            b"garbage{{",
            br#"{"by":"ops","acknowledged_at":"2027-01-01T00:00:00Z"}"#,
            &ack("r0", "aa"),
            &ack("r1", "bb"),
        ];
        for value in cases {
            assert!(!judge(value, 1), "{}", String::from_utf8_lossy(value));
        }
    }
}
