//! Checksums: what the store states about an object, and computing the same value
//! from parallel parts without reading the file a second time.
//!
//! S3 keeps one *full-object* checksum per object (CRC64NVME on every object
//! uploaded since late 2024, or CRC32/CRC32C when the uploader chose them), or a
//! *composite* one for multipart uploads (`<value>-<parts>`, a checksum of the
//! part checksums). A full-object CRC can be verified from ranged GETs of any
//! size: each part's CRC is computed while its bytes stream in, and the part CRCs
//! are combined in order (CRC combination is linear algebra over GF(2): `crc-fast`,
//! the crate the AWS SDK itself uses, provides it). So verification costs one CRC
//! pass over bytes already in cache, never a re-read.

use base64::Engine;
use base64::prelude::BASE64_STANDARD;
use crc_fast::CrcAlgorithm;
use md5::{Digest as _, Md5};

/// Checksum algorithms s3load can verify a full object with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Crc64Nvme,
    Crc32,
    Crc32c,
}

impl Algorithm {
    /// Fastest first: the order in which a response's checksum headers are read.
    pub const ALL: [Algorithm; 3] = [Algorithm::Crc64Nvme, Algorithm::Crc32c, Algorithm::Crc32];

    fn crc(self) -> CrcAlgorithm {
        match self {
            Algorithm::Crc64Nvme => CrcAlgorithm::Crc64Nvme,
            Algorithm::Crc32 => CrcAlgorithm::Crc32IsoHdlc,
            Algorithm::Crc32c => CrcAlgorithm::Crc32Iscsi,
        }
    }

    fn width(self) -> usize {
        match self {
            Algorithm::Crc64Nvme => 8,
            Algorithm::Crc32 | Algorithm::Crc32c => 4,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Crc64Nvme => "CRC64NVME",
            Algorithm::Crc32 => "CRC32",
            Algorithm::Crc32c => "CRC32C",
        }
    }
}

/// A checksum the store states for a whole object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stated {
    /// Full-object CRC: verifiable from any split into parts.
    Full { algorithm: Algorithm, value: u64 },
    /// CRC of the concatenated part CRCs of a multipart upload with `parts` parts
    /// (0 when the store did not say): verifiable from ranges aligned to those parts.
    Composite { algorithm: Algorithm, parts: u32, value: u64 },
}

impl Stated {
    /// Parses a checksum header value (`base64`, or `base64-N` for composite).
    pub fn parse(algorithm: Algorithm, header: &str) -> Option<Stated> {
        let (b64, parts) = match header.trim().rsplit_once('-') {
            Some((b64, n)) => (b64, Some(n.parse().ok()?)),
            None => (header.trim(), None),
        };
        let raw = BASE64_STANDARD.decode(b64).ok()?;
        if raw.len() != algorithm.width() {
            return None;
        }
        let value = raw.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        Some(match parts {
            Some(parts) => Stated::Composite { algorithm, parts, value },
            None => Stated::Full { algorithm, value },
        })
    }

    pub fn algorithm(self) -> Algorithm {
        match self {
            Stated::Full { algorithm, .. } | Stated::Composite { algorithm, .. } => algorithm,
        }
    }
}

/// What a part's bytes are hashed with while they stream in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestKind {
    Crc(Algorithm),
    /// For ETags, when the store states no checksum: MD5 cannot be combined, so
    /// it needs the part's bytes in order, in one range per uploaded part.
    Md5,
}

/// Running hash of one part's bytes, in order.
#[derive(Clone)]
pub enum PartDigest {
    // Boxed: the CRC state is large, and a digest lives in every in-flight part.
    Crc { digest: Box<crc_fast::Digest>, len: u64 },
    Md5(Md5),
}

impl PartDigest {
    pub fn new(kind: DigestKind) -> PartDigest {
        match kind {
            DigestKind::Crc(a) => PartDigest::Crc { digest: Box::new(crc_fast::Digest::new(a.crc())), len: 0 },
            DigestKind::Md5 => PartDigest::Md5(Md5::new()),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            PartDigest::Crc { digest, len } => {
                digest.update(data);
                *len += data.len() as u64;
            }
            PartDigest::Md5(m) => m.update(data),
        }
    }

    pub fn finish(self) -> PartSum {
        match self {
            PartDigest::Crc { digest, len } => PartSum::Crc(PartCrc { crc: digest.finalize(), len }),
            PartDigest::Md5(m) => PartSum::Md5(m.finalize().into()),
        }
    }
}

/// The finished hash of one part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartSum {
    Crc(PartCrc),
    Md5([u8; 16]),
}

/// `crc:<hex>:<len>` or `md5:<hex>`, as recorded in resume journals.
impl std::fmt::Display for PartSum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PartSum::Crc(c) => write!(f, "crc:{:x}:{}", c.crc, c.len),
            PartSum::Md5(m) => write!(f, "md5:{}", hex(m)),
        }
    }
}

/// The CRC of one part and how many bytes it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartCrc {
    pub crc: u64,
    pub len: u64,
}

/// The CRC of the concatenation of `parts`, in order.
pub fn combine(algorithm: Algorithm, parts: &[PartCrc]) -> u64 {
    let mut iter = parts.iter();
    let Some(first) = iter.next() else {
        return crc_fast::checksum(algorithm.crc(), b"");
    };
    iter.fold(first.crc, |acc, p| crc_fast::checksum_combine(algorithm.crc(), acc, p.crc, p.len))
}

/// A composite checksum: the CRC of the uploaded parts' CRCs, each as big-endian bytes.
pub fn composite(algorithm: Algorithm, part_crcs: &[u64]) -> u64 {
    let mut joined = Vec::with_capacity(part_crcs.len() * algorithm.width());
    for crc in part_crcs {
        joined.extend_from_slice(&crc.to_be_bytes()[8 - algorithm.width()..]);
    }
    crc_fast::checksum(algorithm.crc(), &joined)
}

/// The ETag S3 gives an upload whose parts have these MD5s: the hex MD5 of a
/// single part, or the MD5 of the concatenated part MD5s and `-n`.
pub fn etag_of(md5s: &[[u8; 16]]) -> String {
    match md5s {
        [one] => hex(one),
        many => format!("{}-{}", hex(&Md5::digest(many.concat())), many.len()),
    }
}

/// Whether an ETag has the form of an MD5 ETag: 32 hex digits, then `-N` for
/// a multipart upload. Stores whose ETags are something else cannot be checked.
pub fn looks_like_md5_etag(etag: &str) -> bool {
    let (md5, parts) = match etag.split_once('-') {
        Some((m, n)) => (m, Some(n)),
        None => (etag, None),
    };
    md5.len() == 32
        && md5.bytes().all(|b| b.is_ascii_hexdigit())
        && parts.is_none_or(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Formats a value the way S3 sends it, for messages.
pub fn to_base64(algorithm: Algorithm, value: u64) -> String {
    BASE64_STANDARD.encode(&value.to_be_bytes()[8 - algorithm.width()..])
}

#[cfg(test)]
mod tests {

    #[test]
    fn only_etags_of_the_md5_form_are_taken_for_md5s() {
        assert!(looks_like_md5_etag("0cc175b9c0f1b6a831c399e269772661"));
        assert!(looks_like_md5_etag("0CC175B9C0F1B6A831C399E269772661-12"));
        for e in [
            "",
            "abc",
            "0cc175b9c0f1b6a831c399e26977266",
            "0cc175b9c0f1b6a831c399e269772661-",
            "z".repeat(32).as_str(),
            "0cc175b9c0f1b6a831c399e269772661-x",
            "1700000000-5f3a",
        ] {
            assert!(!looks_like_md5_etag(e), "{e:?}");
        }
    }

    use super::*;

    fn crc_of(d: PartDigest) -> PartCrc {
        match d.finish() {
            PartSum::Crc(c) => c,
            PartSum::Md5(_) => unreachable!("a CRC digest"),
        }
    }

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect()
    }

    #[test]
    fn combined_part_crcs_equal_the_whole_buffer_crc() {
        let big = data(1_000_003);
        for algorithm in Algorithm::ALL {
            // Tiny parts on a short buffer (each combine costs a few microseconds).
            for (buf, part) in [
                (&big[..2_001], 1usize),
                (&big[..20_011], 7),
                (&big[..], 4096),
                (&big[..], 333_333),
                (&big[..], 1_000_003),
            ] {
                let whole = crc_fast::checksum(algorithm.crc(), buf);
                let parts: Vec<PartCrc> = buf
                    .chunks(part)
                    .map(|c| {
                        let mut d = PartDigest::new(DigestKind::Crc(algorithm));
                        // Feed in uneven pieces, as a body arrives.
                        for piece in c.chunks(1000) {
                            d.update(piece);
                        }
                        crc_of(d)
                    })
                    .collect();
                assert_eq!(combine(algorithm, &parts), whole, "{algorithm:?} split every {part}");
            }
        }
    }

    #[test]
    fn known_values_match_what_s3_states() {
        // CRC64NVME("123456789") = 0xAE8B14860A799888, CRC32 = 0xCBF43926, CRC32C = 0xE3069283.
        let parts = |a| {
            [PartDigest::new(DigestKind::Crc(a))].map(|mut d| {
                d.update(b"123456789");
                crc_of(d)
            })
        };
        assert_eq!(combine(Algorithm::Crc64Nvme, &parts(Algorithm::Crc64Nvme)), 0xAE8B_1486_0A79_9888);
        assert_eq!(combine(Algorithm::Crc32, &parts(Algorithm::Crc32)), 0xCBF4_3926);
        assert_eq!(combine(Algorithm::Crc32c, &parts(Algorithm::Crc32c)), 0xE306_9283);
        assert_eq!(combine(Algorithm::Crc32, &[]), 0);
    }

    #[test]
    fn headers_parse_into_full_or_composite() {
        let v = to_base64(Algorithm::Crc32c, 0xE306_9283);
        assert_eq!(
            Stated::parse(Algorithm::Crc32c, &v),
            Some(Stated::Full { algorithm: Algorithm::Crc32c, value: 0xE306_9283 })
        );
        assert_eq!(
            Stated::parse(Algorithm::Crc32, "7Yy4SQ==-12"),
            Some(Stated::Composite { algorithm: Algorithm::Crc32, parts: 12, value: 0xED8C_B849 })
        );
        // Wrong width for the algorithm, or not base64: not a checksum we can use.
        assert_eq!(Stated::parse(Algorithm::Crc64Nvme, &v), None);
        assert_eq!(Stated::parse(Algorithm::Crc32, "!!"), None);
    }

    #[test]
    fn composite_and_multipart_etag_follow_s3s_definitions() {
        // Two parts "abc" and "defg": composite = CRC32C over CRC32C("abc") ++ CRC32C("defg").
        let c = |d: &[u8]| crc_fast::checksum(CrcAlgorithm::Crc32Iscsi, d);
        let mut joined = c(b"abc").to_be_bytes()[4..].to_vec();
        joined.extend_from_slice(&c(b"defg").to_be_bytes()[4..]);
        assert_eq!(composite(Algorithm::Crc32c, &[c(b"abc"), c(b"defg")]), c(&joined));
        // MD5("") is d41d8cd98f00b204e9800998ecf8427e; a two-part ETag hashes the raw part MD5s.
        let md5 = |d: &[u8]| -> [u8; 16] { Md5::digest(d).into() };
        assert_eq!(etag_of(&[md5(b"")]), "d41d8cd98f00b204e9800998ecf8427e");
        let two = etag_of(&[md5(b"a"), md5(b"b")]);
        let expected = hex(&Md5::digest([md5(b"a"), md5(b"b")].concat()));
        assert_eq!(two, format!("{expected}-2"));
    }
}
