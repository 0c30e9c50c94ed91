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
//!
//! Hashes that do not combine (the MD5 of an ETag, SHA256, SHA1) are computed
//! per *segment*: the whole object, or one uploaded part. A segment's bytes are
//! hashed in order as its written prefix grows, off the request path
//! (`transfer::hasher`), so its ranges still download in parallel.

use base64::Engine;
use base64::prelude::BASE64_STANDARD;
use crc_fast::CrcAlgorithm;
use sha1::Digest as _;

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
    /// SHA256 or SHA1: of the whole object (`parts: None`, a single PUT), or
    /// composite (`Some(parts)`, 0 when the store did not say), the hash of the
    /// concatenated part hashes.
    Sha { algorithm: Sha, parts: Option<u32>, value: DigestValue },
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

    /// Parses a SHA checksum header value (`base64`, or `base64-N` for composite);
    /// `composite` when the response's checksum type says so without a `-N`.
    pub fn parse_sha(algorithm: Sha, header: &str, composite: bool) -> Option<Stated> {
        let (b64, parts) = match header.trim().rsplit_once('-') {
            Some((b64, n)) => (b64, Some(n.parse().ok()?)),
            None => (header.trim(), composite.then_some(0)),
        };
        let raw = BASE64_STANDARD.decode(b64).ok()?;
        if raw.len() != algorithm.len() {
            return None;
        }
        Some(Stated::Sha { algorithm, parts, value: DigestValue::new(&raw)? })
    }

    /// The algorithm's name, as S3 spells it.
    pub fn name(self) -> &'static str {
        match self {
            Stated::Full { algorithm, .. } | Stated::Composite { algorithm, .. } => algorithm.name(),
            Stated::Sha { algorithm, .. } => algorithm.name(),
        }
    }
}

/// The cryptographic checksums S3 keeps. They do not combine across ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sha {
    Sha256,
    Sha1,
}

impl Sha {
    /// Strongest first: the order in which a response's headers are read.
    pub const ALL: [Sha; 2] = [Sha::Sha256, Sha::Sha1];

    /// Digest length in bytes.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(self) -> usize {
        match self {
            Sha::Sha256 => 32,
            Sha::Sha1 => 20,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Sha::Sha256 => "SHA256",
            Sha::Sha1 => "SHA1",
        }
    }

    /// The hash of `data` in one call.
    pub fn digest(self, data: &[u8]) -> DigestValue {
        let mut d = PartDigest::new(DigestKind::Sha(self));
        d.update(data);
        match d.finish() {
            PartSum::Hash(v) => v,
            PartSum::Crc(_) => unreachable!("a SHA digest finishes as a hash"),
        }
    }
}

/// An MD5 or SHA digest: up to 32 bytes, kept inline so checksums stay `Copy`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct DigestValue {
    bytes: [u8; 32],
    len: u8,
}

impl DigestValue {
    pub fn new(raw: &[u8]) -> Option<DigestValue> {
        let mut bytes = [0u8; 32];
        bytes.get_mut(..raw.len())?.copy_from_slice(raw);
        Some(DigestValue { bytes, len: raw.len() as u8 })
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    pub fn hex(&self) -> String {
        hex(self.as_bytes())
    }

    pub fn base64(&self) -> String {
        BASE64_STANDARD.encode(self.as_bytes())
    }
}

impl std::fmt::Debug for DigestValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.hex())
    }
}

/// The composite SHA of a multipart upload: the hash of the raw part hashes.
pub fn sha_composite(algorithm: Sha, parts: &[DigestValue]) -> DigestValue {
    let joined: Vec<u8> = parts.iter().flat_map(|p| p.as_bytes().iter().copied()).collect();
    algorithm.digest(&joined)
}

/// What a part's bytes are hashed with while they stream in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestKind {
    Crc(Algorithm),
    /// For ETags, when the store states no checksum: MD5 cannot be combined, so
    /// a segment (the object, or one uploaded part) is hashed in order.
    Md5,
    /// A SHA checksum: like MD5, hashed in order per segment.
    Sha(Sha),
}

impl DigestKind {
    /// Whether the hash combines from ranges hashed apart (else it needs its
    /// segment's bytes in order).
    pub fn combines(self) -> bool {
        matches!(self, DigestKind::Crc(_))
    }
}

/// Running hash of one part's bytes, in order.
#[derive(Clone)]
pub enum PartDigest {
    // Boxed: the CRC state is large, and a digest lives in every in-flight part.
    Crc { digest: Box<crc_fast::Digest>, len: u64 },
    Md5(md5_many::Md5State),
    Sha256(Box<sha2::Sha256>),
    Sha1(Box<sha1::Sha1>),
}

impl std::fmt::Debug for PartDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PartDigest::Crc { .. } => "PartDigest::Crc",
            PartDigest::Md5(_) => "PartDigest::Md5",
            PartDigest::Sha256(_) => "PartDigest::Sha256",
            PartDigest::Sha1(_) => "PartDigest::Sha1",
        })
    }
}

impl PartDigest {
    pub fn new(kind: DigestKind) -> PartDigest {
        match kind {
            DigestKind::Crc(a) => PartDigest::Crc { digest: Box::new(crc_fast::Digest::new(a.crc())), len: 0 },
            DigestKind::Md5 => PartDigest::Md5(md5_many::Md5State::new()),
            DigestKind::Sha(Sha::Sha256) => PartDigest::Sha256(Box::default()),
            DigestKind::Sha(Sha::Sha1) => PartDigest::Sha1(Box::default()),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            PartDigest::Crc { digest, len } => {
                digest.update(data);
                *len += data.len() as u64;
            }
            PartDigest::Md5(m) => m.update(data),
            PartDigest::Sha256(d) => d.update(data),
            PartDigest::Sha1(d) => d.update(data),
        }
    }

    pub fn finish(self) -> PartSum {
        match self {
            PartDigest::Crc { digest, len } => PartSum::Crc(PartCrc { crc: digest.finalize(), len }),
            PartDigest::Md5(m) => PartSum::Hash(DigestValue::new(&m.finalize()).expect("16 bytes")),
            PartDigest::Sha256(d) => PartSum::Hash(DigestValue::new(&d.finalize()).expect("32 bytes")),
            PartDigest::Sha1(d) => PartSum::Hash(DigestValue::new(&d.finalize()).expect("20 bytes")),
        }
    }
}

/// The finished hash of one part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartSum {
    Crc(PartCrc),
    /// MD5 or SHA (the length tells which).
    Hash(DigestValue),
}

/// `crc:<hex>:<len>` or `hash:<hex>`, as recorded in resume journals.
impl std::fmt::Display for PartSum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PartSum::Crc(c) => write!(f, "crc:{:x}:{}", c.crc, c.len),
            PartSum::Hash(h) => write!(f, "hash:{}", h.hex()),
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
/// single PUT, or for a multipart upload (even of one part) the MD5 of the
/// concatenated part MD5s and `-n`.
pub fn etag_of(md5s: &[DigestValue], multipart: bool) -> String {
    match md5s {
        [one] if !multipart => one.hex(),
        many => {
            let joined: Vec<u8> = many.iter().flat_map(|m| m.as_bytes().iter().copied()).collect();
            format!("{}-{}", hex(&md5_many::md5(&joined)), many.len())
        }
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
            PartSum::Hash(_) => unreachable!("a CRC digest"),
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
    fn sha_headers_parse_only_when_well_formed() {
        let sha = Sha::Sha256.digest(b"abc");
        let b64 = sha.base64();
        assert_eq!(
            Stated::parse_sha(Sha::Sha256, &b64, false),
            Some(Stated::Sha { algorithm: Sha::Sha256, parts: None, value: sha })
        );
        assert_eq!(
            Stated::parse_sha(Sha::Sha256, &format!("{b64}-3"), false),
            Some(Stated::Sha { algorithm: Sha::Sha256, parts: Some(3), value: sha })
        );
        // A COMPOSITE type without `-N`: composite, part count unknown.
        assert_eq!(
            Stated::parse_sha(Sha::Sha256, &b64, true),
            Some(Stated::Sha { algorithm: Sha::Sha256, parts: Some(0), value: sha })
        );
        // A SHA1-sized value under the SHA256 header, not base64, a bad count,
        // or longer than any digest: no checksum (the ETag is used, if any).
        let sha1 = Sha::Sha1.digest(b"abc").base64();
        for bad in [sha1.as_str(), "!!!", &format!("{b64}-x"), &BASE64_STANDARD.encode([0u8; 40])] {
            assert_eq!(Stated::parse_sha(Sha::Sha256, bad, false), None, "{bad}");
        }
        assert!(Stated::parse_sha(Sha::Sha1, &sha1, false).is_some());
        // SHA256("abc") is ba7816bf...
        assert!(sha.hex().starts_with("ba7816bf8f01cfea"));
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
        let md5 = |d: &[u8]| DigestValue::new(&md5::Md5::digest(d)).unwrap();
        assert_eq!(etag_of(&[md5(b"")], false), "d41d8cd98f00b204e9800998ecf8427e");
        let two = etag_of(&[md5(b"a"), md5(b"b")], true);
        let expected = hex(&md5::Md5::digest([md5(b"a").as_bytes(), md5(b"b").as_bytes()].concat()));
        assert_eq!(two, format!("{expected}-2"));
        // A multipart upload of one part still has the MD5-of-MD5s form.
        let one = hex(&md5::Md5::digest(md5(b"a").as_bytes()));
        assert_eq!(etag_of(&[md5(b"a")], true), format!("{one}-1"));
    }
}
