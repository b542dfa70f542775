//! Bounded gzip decompression: a corrupt or hostile file cannot make a reader allocate more
//! than its caller allows (a gzip bomb expands about 1000x).

use std::io::Read;

use crate::error::{DataError, Result};

/// Default bound of decompressed bytes for files of unknown size: 4 GiB.
pub const DEFAULT_LIMIT: u64 = 4 << 30;

/// Whether `bytes` start with the gzip magic `1f 8b`.
pub fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x1f, 0x8b])
}

/// Decompresses gzip `bytes`, refusing output beyond `limit` bytes
/// ([`DataError::TooLarge`]); `what` names the input in errors.
pub fn gunzip_bounded(bytes: &[u8], what: &str, limit: u64) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|source| DataError::Decode {
            what: what.to_string(),
            source,
        })?;
    if out.len() as u64 > limit {
        return Err(DataError::TooLarge {
            what: what.to_string(),
            limit,
        });
    }
    Ok(out)
}

/// [`gunzip_bounded`] when `bytes` are gzip, else `bytes` unchanged.
pub fn maybe_gunzip(bytes: Vec<u8>, what: &str, limit: u64) -> Result<Vec<u8>> {
    if is_gzip(&bytes) {
        gunzip_bounded(&bytes, what, limit)
    } else {
        Ok(bytes)
    }
}

/// Decompresses gzip `bytes` into UTF-8 text (bounded by `limit`).
pub fn gunzip_to_string(bytes: &[u8], what: &str, limit: u64) -> Result<String> {
    String::from_utf8(gunzip_bounded(bytes, what, limit)?).map_err(|e| DataError::Decode {
        what: what.to_string(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        z.write_all(bytes).unwrap();
        z.finish().unwrap()
    }

    #[test]
    fn a_bomb_is_refused_at_the_limit_and_honest_input_passes() {
        let zeros = gzip(&vec![0u8; 1 << 20]); // 1 MiB of zeros compresses to ~1 KiB
        assert!(zeros.len() < 4096);
        let err = gunzip_bounded(&zeros, "bomb.gz", 1000).unwrap_err();
        assert_eq!(
            err.to_string(),
            "bomb.gz: decompressed size exceeds the limit of 1000 bytes"
        );
        assert_eq!(
            gunzip_bounded(&zeros, "ok.gz", 1 << 20).unwrap().len(),
            1 << 20
        );
        assert_eq!(maybe_gunzip(b"raw".to_vec(), "raw", 1).unwrap(), b"raw");
        assert!(gunzip_bounded(b"\x1f\x8bnot gzip", "bad.gz", 100)
            .unwrap_err()
            .to_string()
            .starts_with("cannot decode bad.gz"));
    }
}
