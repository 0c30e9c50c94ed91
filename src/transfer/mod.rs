//! The engine: downloads (one scheduler over the *parts* of all objects) and
//! uploads, sharing one [`Engine`] context: store, limits, stop token, retry
//! policy and budget, adaptive limiter, I/O bound and the caller's [`Hooks`].
//!
//! Every object is split into byte ranges ([`parts::Ranges`]); an object no larger
//! than one part is fetched with a single plain GET. A pool of `max_requests`
//! workers (`--numworkers`, or the ceiling of the link sizing), each holding a
//! request permit from `limiter.rs` while it runs a part, takes parts from one scheduler (`scheduler.rs`, run by
//! `pass.rs`), so a single
//! 20 GB object and 10,000 small objects both keep every connection busy:
//!
//! - a worker first takes the next part of an object already open, as long as that
//!   object has fewer than `part_concurrency` parts in flight;
//! - otherwise it opens the next object (at most `max_open_files` at once);
//! - otherwise it waits for a part to finish.
//!
//! Each part streams into a per-worker buffer of `buffer_size` bytes that is
//! written at its offset in the object's temporary file whenever it fills, so the
//! memory held for bodies is at most `max_requests × buffer_size`, whatever the
//! object sizes and counts. The limiter sizes the requests in flight to the
//! link (unless `--numworkers` pins them) and lowers them while the store throttles.
//!
//! Integrity (`body.rs`, `fetch.rs`, `verify.rs`, [`crate::integrity`]): every part request carries
//! `If-Match` with the object's ETag, so a file is never assembled from two
//! versions; each part's CRC is computed as its bytes stream in, and the part CRCs
//! are combined and compared with the store's full-object checksum before the file
//! is renamed into place. A part that breaks resumes from the first byte not yet
//! written; a part that stalls is aborted and resumed ([`retry`] decides).
//!
//! Passes (`download.rs`): an object whose ETag changed mid-download (412) or whose bytes did not
//! match its checksum is discarded and fetched again whole, with its identity
//! read afresh (HEAD), at most `max_restarts` times. Resume across runs is in
//! `resume.rs`; uploads in [`upload`].

mod body;
mod download;
mod engine;
mod fetch;
mod hash_state;
mod hash_thread;
mod hasher;
mod job;
mod limiter;
mod memory;
mod object;
pub mod parts;
mod pass;
pub mod report;
mod requests;
mod resume;
pub mod retry;
mod scheduler;
mod segments;
mod settings;
mod straggler;
mod stream;
pub mod upload;
mod verify;

pub use download::download;
pub use engine::Engine;
pub use job::{GetJob, KnownChecksum, Outcome, PartLayout, Verification};
pub use report::{CommitHook, Hooks, Item, Reporter};
pub use requests::{Looped, Requests, Timeouts};
pub use settings::{
    DEFAULT_MAX_MEMORY, Durability, EngineConfig, START_REQUESTS, TUNED_REQUESTS_CEILING, VerifyMode, WriteMode,
};
pub use stream::{Sink, stream};

#[cfg(test)]
mod engine_tests;
#[cfg(test)]
mod hashing_tests;
