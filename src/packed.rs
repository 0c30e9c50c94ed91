//! What the packed tables (the listing's and the sync record's, the largest
//! things a run holds) share: how their buffers grow.

/// Makes room in `v` for `more` items, growing it by an eighth rather than
/// doubling it: the packed tables are the largest things a run holds, and
/// doubling would leave up to half of a gigabyte-sized buffer unused.
/// (Large buffers are grown in place by the allocator, not copied, so the
/// smaller steps cost little.)
pub fn reserve<T>(v: &mut Vec<T>, more: usize) {
    if v.capacity() - v.len() < more {
        v.reserve_exact(more.max(v.len() / 8).max(64));
    }
}
