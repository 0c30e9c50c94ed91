//! What the engine tells its caller, in both directions.
//!
//! Two separate hooks, because they serve different ends: a [`Reporter`] hears
//! of bytes and of each object's outcome (progress, per-object lines); a
//! [`CommitHook`] hears of each downloaded file renamed into place (the sync
//! record). An embedder that shows no progress still gets its record written.

use std::sync::Arc;

use super::job::{GetJob, Outcome};

/// One object the engine moves, as a reporter names it.
pub trait Item {
    /// The object's key (what progress shows).
    fn key(&self) -> &str;
    fn size(&self) -> u64;
    /// The bytes this run expects to move of it: its size, or about its share
    /// of an object split across shards.
    fn expected_bytes(&self) -> u64 {
        self.size()
    }
    /// Where the bytes come from: an `s3://` URL or a local path.
    fn source(&self) -> String;
    /// Where they go.
    fn destination(&self) -> String;
}

/// Hears of the engine's progress, object by object.
pub trait Reporter: Send + Sync {
    /// `n` more bytes of `item` are written (downloads) or stored (uploads).
    fn bytes(&self, item: &dyn Item, n: u64);
    /// `n` bytes of `item` already reported were thrown away (a failed or
    /// restarted object).
    fn discarded(&self, item: &dyn Item, n: u64);
    /// An object is finished, done or failed. Called once per object.
    fn finished(&self, item: &dyn Item, outcome: &Outcome);
}

/// Hears of each downloaded file as it is renamed into place, before its
/// outcome is reported.
pub trait CommitHook: Send + Sync {
    fn committed(&self, job: &GetJob);
}

/// What a run's engine calls back.
#[derive(Clone)]
pub struct Hooks {
    pub reporter: Arc<dyn Reporter>,
    pub committed: Option<Arc<dyn CommitHook>>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks").field("committed", &self.committed.is_some()).finish_non_exhaustive()
    }
}

/// A reporter that hears nothing (for embedders and tests that need none).
#[derive(Debug)]
pub struct Silent;

impl Reporter for Silent {
    fn bytes(&self, _: &dyn Item, _: u64) {}
    fn discarded(&self, _: &dyn Item, _: u64) {}
    fn finished(&self, _: &dyn Item, _: &Outcome) {}
}

impl Hooks {
    /// Only a reporter.
    pub fn reporting(reporter: Arc<dyn Reporter>) -> Hooks {
        Hooks { reporter, committed: None }
    }
}

impl Item for GetJob {
    fn key(&self) -> &str {
        &self.key
    }
    fn size(&self) -> u64 {
        self.size
    }
    fn expected_bytes(&self) -> u64 {
        self.piece.map_or(self.size, |p| self.size / u64::from(p.count.max(1)))
    }
    fn source(&self) -> String {
        self.source_url()
    }
    fn destination(&self) -> String {
        self.dest.display().to_string()
    }
}
