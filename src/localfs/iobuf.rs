//! A write buffer whose first byte sits on a block boundary in memory, as
//! `O_DIRECT` requires of the memory it writes from (see
//! [`TempFile::write_at`](super::TempFile::write_at)).

/// The alignment of direct I/O, in memory and in the file: 4 KiB, a multiple
/// of the 512-byte and 4 KiB logical blocks of disks (a filesystem that needs
/// more refuses the write, and the file is then written buffered).
pub const ALIGN: usize = 4096;

/// A fixed-capacity byte buffer starting on an [`ALIGN`] boundary. It never
/// grows: [`IoBuf::push`] takes what fits.
pub struct IoBuf {
    raw: Vec<u8>,
    start: usize,
    len: usize,
    cap: usize,
}

impl std::fmt::Debug for IoBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoBuf").field("len", &self.len).field("cap", &self.cap).finish()
    }
}

impl Default for IoBuf {
    /// A buffer of no capacity, allocating nothing.
    fn default() -> IoBuf {
        IoBuf { raw: Vec::new(), start: 0, len: 0, cap: 0 }
    }
}

impl IoBuf {
    /// A buffer of `cap` bytes, rounded up to a whole number of blocks.
    pub fn new(cap: usize) -> IoBuf {
        let cap = cap.max(1).next_multiple_of(ALIGN);
        // Zeroed memory comes from the kernel untouched: pages are mapped as
        // they are first written, and stay mapped as the buffer is reused.
        let raw = vec![0u8; cap + ALIGN];
        let start = raw.as_ptr().align_offset(ALIGN);
        IoBuf { raw, start, len: 0, cap }
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Appends as much of `bytes` as fits below `limit` (at most the
    /// capacity); returns how much was taken.
    pub fn push(&mut self, bytes: &[u8], limit: usize) -> usize {
        let n = limit.min(self.cap).saturating_sub(self.len).min(bytes.len());
        let at = self.start + self.len;
        self.raw[at..at + n].copy_from_slice(&bytes[..n]);
        self.len += n;
        n
    }

    /// The whole capacity, to read into; the caller says how much it filled
    /// with [`IoBuf::set_len`].
    pub fn spare(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + self.cap]
    }

    pub fn set_len(&mut self, len: usize) {
        assert!(len <= self.cap, "an IoBuf holds at most its capacity");
        self.len = len;
    }
}

impl AsRef<[u8]> for IoBuf {
    fn as_ref(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_on_a_block_and_takes_only_what_fits() {
        let mut b = IoBuf::new(5000);
        assert_eq!(b.capacity(), 2 * ALIGN);
        assert_eq!(b.as_ref().as_ptr() as usize % ALIGN, 0);
        assert_eq!(b.push(&[7u8; 100], 60), 60);
        assert_eq!(b.push(&[8u8; 10_000], usize::MAX), 2 * ALIGN - 60);
        assert_eq!(b.len(), 2 * ALIGN);
        assert_eq!(b.push(&[9u8; 5], usize::MAX), 0);
        assert_eq!(&b.as_ref()[58..62], &[7, 7, 8, 8]);
        b.clear();
        assert!(b.is_empty());
        assert_eq!(b.as_ref().as_ptr() as usize % ALIGN, 0);
    }
}
