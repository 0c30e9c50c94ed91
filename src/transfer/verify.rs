//! Verification: what was received against what the store states, before a
//! file is committed.
//!
//! | the store states | checked with |
//! |---|---|
//! | a full-object CRC | the ranges' CRCs, combined |
//! | a composite CRC (per uploaded part) | the ranges' CRCs combined per part, then composed; needs ranges aligned to the parts |
//! | a SHA256/SHA1 | the segment hashed in order (the whole object, or each part for a composite) |
//! | no checksum, an MD5 ETag | the MD5 of the object, or of each uploaded part (multipart ETag) |
//! | nothing usable | committed as unverified, or failed with `--verify require` |
//!
//! A mismatch fails the object (and the engine fetches it again whole); the
//! same MD5 twice from an ETag check means the store's ETags are not MD5s.

use std::collections::HashMap;
use std::sync::Mutex;

use super::job::{KnownChecksum, Outcome, Verification};
use super::object::{ObjectState, Received};
use super::settings::VerifyMode;
use crate::error::Error;
use crate::integrity::{self, Stated};

/// The MD5 ETag computed from each object that failed its ETag check, for
/// the run: the same value from a second download means the bytes were not
/// corrupted on the way; the store's ETags are simply not MD5s.
#[derive(Debug, Default)]
pub(super) struct EtagSamples(Mutex<HashMap<String, String>>);

/// What a failed check means for what was written, ending its message.
pub(super) const NOTHING_WRITTEN: &str = "nothing was written";

/// Compares what was received with what the store states; `consequence`
/// ends a mismatch's message (e.g. [`NOTHING_WRITTEN`]).
pub(super) fn verify(object: &ObjectState, mode: VerifyMode, samples: &EtagSamples, consequence: &str) -> Outcome {
    if mode == VerifyMode::Off {
        return Ok(Verification::Off);
    }
    let url = object.job.source_url();
    if object.job.size == 0 {
        return Ok(Verification::Verified("empty"));
    }
    let Received { stated, crcs, segment_sums } = object.received();
    let crcs = || crcs.clone().ok_or_else(|| Error::Internal(format!("{url}: a part's checksum is missing")));
    let mismatch = |what: &str, got: String, stated: String| {
        Error::Mismatch(format!(
            "{url}: {what} of the bytes received is {got}, the store states {stated}; {consequence}"
        ))
    };
    let why = match stated {
        KnownChecksum::Stated(Stated::Full { algorithm, value }) => {
            let got = integrity::combine(algorithm, &crcs()?);
            if got != value {
                let b64 = |v| integrity::to_base64(algorithm, v);
                return Err(mismatch(algorithm.name(), b64(got), b64(value)));
            }
            return Ok(Verification::Verified(algorithm.name()));
        }
        KnownChecksum::Stated(Stated::Composite { algorithm, parts, value }) => match object.aligned {
            Some(_) => {
                // Ranges are aligned to the uploaded parts, and each part is
                // a segment: its ranges' CRCs combine into the part's.
                let part_crcs: Vec<u64> = crcs()?.iter().map(|c| c.crc).collect();
                let got = integrity::composite(algorithm, &part_crcs);
                if got != value || (parts != 0 && parts as usize != part_crcs.len()) {
                    let show = |v, n| format!("{}-{n}", integrity::to_base64(algorithm, v));
                    let what = format!("composite {}", algorithm.name());
                    return Err(mismatch(&what, show(got, part_crcs.len() as u32), show(value, parts)));
                }
                return Ok(Verification::Verified(algorithm.name()));
            }
            None => match &object.job.layout_unknown {
                Some(why) => format!("its {} checksum is composite (per uploaded part), and {why}", algorithm.name()),
                None => format!(
                    "its {} checksum is composite (per uploaded part), and the parts are not of equal size",
                    algorithm.name()
                ),
            },
        },
        KnownChecksum::Stated(Stated::Sha { algorithm, parts, value }) => match object.segment_kind() {
            None => match &object.job.layout_unknown {
                Some(why) => format!("its {} checksum is composite (per uploaded part), and {why}", algorithm.name()),
                None => format!(
                    "its {} checksum is composite (per uploaded part), and the parts are not of equal size",
                    algorithm.name()
                ),
            },
            Some(_) => {
                let Some(sums) = segment_sums else {
                    return Err(Error::Internal(format!("{url}: a segment's hash is missing")));
                };
                let (got, stated) = match parts {
                    None => (sums[0].base64(), value.base64()),
                    Some(n) => {
                        let got = integrity::sha_composite(algorithm, &sums);
                        let stated = if n == 0 { value.base64() } else { format!("{}-{n}", value.base64()) };
                        let shown = if n == 0 { got.base64() } else { format!("{}-{}", got.base64(), sums.len()) };
                        (shown, stated)
                    }
                };
                if got != stated {
                    let what = if parts.is_some() {
                        format!("composite {}", algorithm.name())
                    } else {
                        algorithm.name().to_string()
                    };
                    return Err(mismatch(&what, got, stated));
                }
                return Ok(Verification::Verified(algorithm.name()));
            }
        },
        KnownChecksum::NoneStated | KnownChecksum::NotAsked => match object.md5_unverifiable() {
            Some(why) => why,
            None => {
                let Some(md5s) = segment_sums else {
                    return Err(Error::Internal(format!("{url}: a segment's MD5 is missing")));
                };
                let got = integrity::etag_of(&md5s, object.job.multipart());
                let stated = object.job.etag.clone().unwrap_or_default();
                if got.eq_ignore_ascii_case(&stated) {
                    return Ok(Verification::Verified("MD5"));
                }
                let before = samples.0.lock().unwrap().insert(object.job.key.clone(), got.clone());
                if before.as_deref() == Some(got.as_str()) {
                    // The same bytes twice: not corrupted on the way. Another
                    // download would bring them again; fail it with what to do.
                    return Err(Error::Integrity(format!(
                        "{url}: two downloads gave the same bytes, whose MD5 ETag is {got}, but the store states \
                         ETag {stated} and no checksum: the object is damaged in the store, or (more likely on an \
                         S3-compatible store) its ETags are not MD5s; {consequence}. If the store's ETags are \
                         not MD5s, use --verify off (or have the store keep CRC64NVME checksums)"
                    )));
                }
                // Corrupted on the way, or a store whose ETags are not MD5s: a
                // second download tells which.
                return Err(mismatch("the MD5 ETag", got, stated));
            }
        },
    };
    if mode == VerifyMode::Require {
        return Err(Error::Unverified(format!("{url}: cannot be verified: {why} (--verify require)")));
    }
    Ok(Verification::Unverified(why))
}
