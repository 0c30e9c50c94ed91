//! `--shard K/N`: which share of a listing one of N cooperating runs takes.
//!
//! The share is a pure function of the listing: objects sorted by size (largest
//! first, ties by path) go one by one to the shard with the fewest bytes so far
//! (ties: fewer objects, then the lower index). N runs that list the same
//! source therefore partition it exactly, whatever order they start in, and
//! their bytes differ by at most the largest object. The share is taken from
//! the source listing *before* comparing with the destination: other shards
//! write into the same directory meanwhile, so a share computed after the
//! comparison would differ from pod to pod.
//!
//! An object larger than a fair share (the listing's bytes / N) bounds the
//! speed-up if one shard takes it whole. Downloads split such objects
//! ([`Shard::share`] with `split`): every shard takes one [`Piece`] of it, a
//! run of its ranges, written into one temporary file on the shared volume
//! (`transfer/resume.rs`, `transfer/download.rs`); the other objects are shared out as above. The
//! split too is a function of the listing alone.
//!
//! Deletions (`--delete`) go by path instead ([`Shard::deletes`]): a stale path
//! belongs to the shard a hash of its path names, so each is deleted by exactly
//! one shard, whatever the listing.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use sha2::{Digest, Sha256};

use crate::error::Error;

/// The most shards a run may be one of: far beyond any Job's parallelism,
/// small enough that a typo (`--shard 1/40000000`) is caught.
pub const MAX_SHARDS: u32 = 100_000;

/// This run's place among `count` cooperating runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    /// Parses `K/N` (`0 <= K < N`, decimal digits only).
    pub fn parse(text: &str) -> Result<Shard, Error> {
        let usage = |why: &str| {
            Error::Usage(format!(
                "--shard {text:?}: {why}; give K/N with 0 <= K < N, e.g. --shard $(JOB_COMPLETION_INDEX)/4 in an Indexed Job"
            ))
        };
        let (k, n) = text.split_once('/').ok_or_else(|| usage("no '/'"))?;
        let number = |s: &str, what: &str| -> Result<u32, Error> {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(usage(&format!("{what} is not a whole number")));
            }
            s.parse::<u32>().map_err(|_| usage(&format!("{what} is too large")))
        };
        let (index, count) = (number(k, "K")?, number(n, "N")?);
        if count == 0 {
            return Err(usage("N must be at least 1"));
        }
        if count > MAX_SHARDS {
            return Err(usage(&format!("N may be at most {MAX_SHARDS}")));
        }
        if index >= count {
            return Err(usage("K must be below N (shards are numbered from 0, as JOB_COMPLETION_INDEX is)"));
        }
        Ok(Shard { index, count })
    }

    /// Which of `items` (path, size) this shard takes, in their order.
    pub fn takes(&self, items: &[(&str, u64)]) -> Vec<bool> {
        assign(items, self.count).into_iter().map(|s| s == self.index).collect()
    }

    /// What this shard takes of each of `items` (path, size): with `split`,
    /// objects larger than a fair share and at least `split_min` bytes are
    /// split, one piece to every shard; the rest go whole as [`Shard::takes`]
    /// says.
    pub fn share(&self, items: &[(&str, u64)], split_min: Option<u64>) -> Vec<Take> {
        let splits = split_objects(items, self.count, split_min);
        let rest: Vec<(&str, u64)> = items.iter().zip(&splits).filter(|(_, s)| !**s).map(|(i, _)| *i).collect();
        let mut whole = self.takes(&rest).into_iter();
        splits
            .iter()
            .map(|&split| match split {
                true => Take::Piece(Piece { index: self.index, count: self.count }),
                false if whole.next().unwrap_or(false) => Take::Whole,
                false => Take::No,
            })
            .collect()
    }

    /// Whether this shard deletes the stale path `rel`.
    pub fn deletes(&self, rel: &str) -> bool {
        owner_of_path(rel, self.count) == self.index
    }
}

/// What a shard takes of one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    No,
    Whole,
    Piece(Piece),
}

/// Piece `index` of `count` of an object split across shards: the `index`-th
/// of `count` runs of its ranges, as even as whole ranges allow
/// ([`Piece::ranges`]). Every shard takes the piece of its own index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    pub index: u32,
    pub count: u32,
}

impl Piece {
    /// Which of an object's `n` ranges this piece is (maybe none, when the
    /// object has fewer ranges than pieces).
    pub fn ranges(&self, n: usize) -> std::ops::Range<usize> {
        let at = |i: u32| (n as u128 * u128::from(i) / u128::from(self.count.max(1))) as usize;
        at(self.index)..at(self.index + 1)
    }
}

impl std::fmt::Display for Piece {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "piece {} of {}", self.index + 1, self.count)
    }
}

/// `selected`, a subset of the listing `all` (path, size), cut to `shard`'s
/// share (all of it, whole, without a shard), each with the piece this shard
/// takes when the object is split (see [`Shard::share`]); and how many of the
/// share `selected` leaves out (up to date).
pub fn cut<'a, T>(
    shard: Option<Shard>,
    all: &[(&'a str, u64)],
    selected: Vec<T>,
    split_min: Option<u64>,
    rel: impl Fn(&T) -> &'a str,
) -> (Vec<(T, Option<Piece>)>, usize) {
    let Some(shard) = shard else {
        let up_to_date = all.len() - selected.len();
        return (selected.into_iter().map(|s| (s, None)).collect(), up_to_date);
    };
    let mine: std::collections::HashMap<&str, Option<Piece>> = all
        .iter()
        .zip(shard.share(all, split_min))
        .filter_map(|((p, _), t)| match t {
            Take::No => None,
            Take::Whole => Some((*p, None)),
            Take::Piece(piece) => Some((*p, Some(piece))),
        })
        .collect();
    let selected: Vec<(T, Option<Piece>)> =
        selected.into_iter().filter_map(|s| mine.get(rel(&s)).copied().map(|p| (s, p))).collect();
    let up_to_date = mine.len() - selected.len();
    (selected, up_to_date)
}

/// Which of `items` are split across `count` shards: those larger than a
/// fair share (total bytes / count) and at least `split_min` bytes; none
/// without `split_min` or with one shard.
fn split_objects(items: &[(&str, u64)], count: u32, split_min: Option<u64>) -> Vec<bool> {
    let Some(min) = split_min.filter(|_| count > 1) else { return vec![false; items.len()] };
    let total: u128 = items.iter().map(|i| u128::from(i.1)).sum();
    let fair = total / u128::from(count);
    items.iter().map(|i| i.1 >= min && u128::from(i.1) > fair).collect()
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The shard of each item (path, size), balanced by bytes: see the module doc.
pub fn assign(items: &[(&str, u64)], count: u32) -> Vec<u32> {
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by(|&a, &b| items[b].1.cmp(&items[a].1).then_with(|| items[a].0.cmp(items[b].0)));
    // Least loaded first: (bytes, objects, index), smallest on top.
    let mut load: BinaryHeap<Reverse<(u64, u64, u32)>> = (0..count.max(1)).map(|i| Reverse((0, 0, i))).collect();
    let mut out = vec![0; items.len()];
    for i in order {
        let Reverse((bytes, objects, shard)) = load.pop().expect("at least one shard");
        out[i] = shard;
        load.push(Reverse((bytes.saturating_add(items[i].1), objects + 1, shard)));
    }
    out
}

/// The shard that deletes `rel`: the first 8 bytes of its SHA-256, modulo N
/// (stable across runs, machines and versions of s3load).
fn owner_of_path(rel: &str, count: u32) -> u32 {
    let digest = Sha256::digest(rel.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) % u64::from(count.max(1))) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_shard_arguments_are_refused_with_what_to_give() {
        for bad in [
            "",
            "1",
            "/",
            "1/",
            "/4",
            "4/4",
            "5/4",
            "-1/4",
            "1/-4",
            "+1/4",
            "1/0",
            "0/0",
            " 1/4",
            "1/4 ",
            "1 /4",
            "1/4/2",
            "a/b",
            "1/4x",
            "0x1/4",
            "1.0/4",
            "4294967296/4294967297",
            "0/100001",
            "١/٤",
        ] {
            match Shard::parse(bad) {
                Err(Error::Usage(msg)) => assert!(msg.contains("K/N"), "{bad:?}: {msg}"),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
        assert_eq!(Shard::parse("0/1").unwrap(), Shard { index: 0, count: 1 });
        assert_eq!(Shard::parse("3/4").unwrap(), Shard { index: 3, count: 4 });
        assert_eq!(Shard::parse("007/8").unwrap(), Shard { index: 7, count: 8 }, "leading zeros are digits");
        assert_eq!(Shard::parse("99999/100000").unwrap().count, MAX_SHARDS);
    }

    fn items(n: usize) -> Vec<(String, u64)> {
        (0..n).map(|i| (format!("dir/file-{i:04}"), ((i * 7919) % 1000) as u64 * 1000 + 1)).collect()
    }

    #[test]
    fn shards_partition_a_listing_exactly_whatever_its_order() {
        let owned = items(500);
        let list: Vec<(&str, u64)> = owned.iter().map(|(p, s)| (p.as_str(), *s)).collect();
        let mut reversed = list.clone();
        reversed.reverse();
        for count in [1, 2, 3, 4, 7] {
            let mut taken = vec![0; list.len()];
            for index in 0..count {
                let shard = Shard { index, count };
                for (i, t) in shard.takes(&list).into_iter().enumerate() {
                    taken[i] += usize::from(t);
                }
                // The same listing in another order gives the same paths.
                let a: Vec<&str> = list.iter().zip(shard.takes(&list)).filter(|x| x.1).map(|x| x.0.0).collect();
                let mut b: Vec<&str> =
                    reversed.iter().zip(shard.takes(&reversed)).filter(|x| x.1).map(|x| x.0.0).collect();
                b.sort();
                assert_eq!(a, b, "{index}/{count}");
            }
            assert!(taken.iter().all(|&t| t == 1), "every object taken exactly once with N = {count}");
        }
    }

    #[test]
    fn shares_are_balanced_by_bytes_within_the_largest_object() {
        let owned = items(500);
        let list: Vec<(&str, u64)> = owned.iter().map(|(p, s)| (p.as_str(), *s)).collect();
        let largest = list.iter().map(|x| x.1).max().unwrap();
        let shards = assign(&list, 4);
        let mut bytes = [0u64; 4];
        for (i, s) in shards.iter().enumerate() {
            bytes[*s as usize] += list[i].1;
        }
        let (min, max) = (bytes.iter().min().unwrap(), bytes.iter().max().unwrap());
        assert!(max - min <= largest, "{bytes:?}");
        // Many empty objects are spread by count, not piled on one shard.
        let empty: Vec<(String, u64)> = (0..40).map(|i| (format!("e{i}"), 0)).collect();
        let list: Vec<(&str, u64)> = empty.iter().map(|(p, s)| (p.as_str(), *s)).collect();
        let shards = assign(&list, 4);
        assert!((0..4).all(|k| shards.iter().filter(|&&s| s == k).count() == 10), "{shards:?}");
    }

    #[test]
    fn objects_over_a_fair_share_are_split_one_piece_per_shard_the_rest_taken_whole_once() {
        // 100 + 10 x 10 bytes: with 4 shards the fair share is 50.
        let owned: Vec<(String, u64)> =
            std::iter::once(("big".to_string(), 100)).chain((0..10).map(|i| (format!("s{i}"), 10))).collect();
        let list: Vec<(&str, u64)> = owned.iter().map(|(p, s)| (p.as_str(), *s)).collect();
        let shares: Vec<Vec<Take>> = (0..4).map(|index| Shard { index, count: 4 }.share(&list, Some(20))).collect();
        for (k, share) in shares.iter().enumerate() {
            assert_eq!(share[0], Take::Piece(Piece { index: k as u32, count: 4 }), "shard {k}");
        }
        for i in 1..list.len() {
            let whole = shares.iter().filter(|s| s[i] == Take::Whole).count();
            assert_eq!(whole, 1, "{} taken whole by exactly one shard", list[i].0);
            assert!(shares.iter().all(|s| matches!(s[i], Take::Whole | Take::No)));
        }
        // Under the minimum, or without splitting, or with one shard: whole.
        for (min, count) in [(Some(101), 4), (None, 4), (Some(20), 1)] {
            let takes = Shard { index: 0, count }.share(&list, min);
            assert!(takes.iter().all(|t| !matches!(t, Take::Piece(_))), "{min:?} {count}");
        }
        // The pieces of n ranges cover them exactly, in order, evenly.
        for n in [0, 1, 3, 4, 12, 1001] {
            let ranges: Vec<_> = (0..4).map(|index| Piece { index, count: 4 }.ranges(n)).collect();
            assert_eq!(ranges[0].start, 0);
            assert_eq!(ranges[3].end, n);
            assert!(ranges.windows(2).all(|w| w[0].end == w[1].start), "{ranges:?}");
            assert!(ranges.iter().all(|r| r.len() >= n / 4 && r.len() <= n.div_ceil(4)), "{ranges:?}");
        }
    }

    #[test]
    fn each_stale_path_is_deleted_by_exactly_one_shard() {
        for path in ["a", "dir/b.bin", "é/ü", "x".repeat(300).as_str()] {
            for count in [1, 2, 5] {
                let owners = (0..count).filter(|&index| Shard { index, count }.deletes(path)).count();
                assert_eq!(owners, 1, "{path} with N = {count}");
            }
        }
        // Fixed across versions and machines (shards of one Job may run
        // different builds): these owners must never drift.
        assert_eq!(owner_of_path("model.safetensors", 4), 3);
        assert_eq!(owner_of_path("model.safetensors", 7), 1);
        assert_eq!(owner_of_path("config.json", 7), 5);
        assert_eq!(owner_of_path("a/b", 7), 6);
    }
}
