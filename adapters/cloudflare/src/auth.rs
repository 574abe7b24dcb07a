//! The bearer token that guards operator requests (`POST /rebuild/...`), compared in
//! constant time so that response timing reveals nothing about the expected token.

/// Why a request was refused; each maps to an HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// No token is configured: the operation is disabled rather than open.
    #[error("operator requests are disabled: set the REBUILD_TOKEN secret")]
    NotConfigured,
    #[error("missing bearer token: send `Authorization: Bearer <token>`")]
    Missing,
    #[error("wrong bearer token")]
    Wrong,
}

impl Refusal {
    pub fn http_status(self) -> u16 {
        match self {
            Refusal::NotConfigured => 403,
            Refusal::Missing => 401,
            Refusal::Wrong => 403,
        }
    }
}

/// Checks an `Authorization` header against the configured token.
pub fn authorize(header: Option<&str>, expected: Option<&str>) -> Result<(), Refusal> {
    let expected = expected.filter(|t| !t.is_empty()).ok_or(Refusal::NotConfigured)?;
    let header = header.ok_or(Refusal::Missing)?;
    let Some((scheme, token)) = header.trim().split_once(' ') else {
        return Err(Refusal::Missing);
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Refusal::Missing);
    }
    if constant_time_eq(token.trim().as_bytes(), expected.as_bytes()) {
        Ok(())
    } else {
        Err(Refusal::Wrong)
    }
}

/// Equal bytes, in time that depends only on the lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_configured_token_passes() {
        assert_eq!(authorize(Some("Bearer s3cret"), Some("s3cret")), Ok(()));
        assert_eq!(authorize(Some("bearer  s3cret "), Some("s3cret")), Ok(()));
        assert_eq!(authorize(Some("Bearer s3cre"), Some("s3cret")), Err(Refusal::Wrong));
        assert_eq!(authorize(Some("Bearer s3cret\0"), Some("s3cret")), Err(Refusal::Wrong));
        assert_eq!(authorize(Some("Bearer "), Some("s3cret")), Err(Refusal::Missing));
        assert_eq!(authorize(Some("Basic s3cret"), Some("s3cret")), Err(Refusal::Missing));
        assert_eq!(authorize(None, Some("s3cret")), Err(Refusal::Missing));
    }

    #[test]
    fn no_configured_token_refuses_everyone() {
        assert_eq!(authorize(Some("Bearer "), Some("")), Err(Refusal::NotConfigured));
        assert_eq!(authorize(Some("Bearer x"), None), Err(Refusal::NotConfigured));
    }

    #[test]
    fn equality_covers_every_byte_and_the_length() {
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"a", b""));
        assert!(!constant_time_eq(b"ab", b"ac"));
        assert!(constant_time_eq(b"abc", b"abc"));
    }
}
