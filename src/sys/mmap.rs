//! Read-only windows over a file, the one place refract maps memory.
//!
//! SIGBUS: a mapping of a file that another process truncates faults on
//! access to the pages past the new end. Callers `fstat` first and map only
//! `[offset, offset + len)` with `offset + len <= st_size` just seen; the
//! window is dropped before the loop waits again, so the race is confined to
//! the microseconds between `fstat` and the last read of the window.

use std::fs::File;
use std::io;

use memmap2::{Mmap, MmapOptions};

/// Maps `len` bytes of `file` from `offset` (any alignment: memmap2 aligns
/// the mapping and offsets the slice). `len` must be non-zero.
pub fn map_window(file: &File, offset: u64, len: usize) -> io::Result<Mmap> {
    // SAFETY: the map is read-only and private to this process; the caller
    // fstat'ed the file and maps only bytes below the size it saw (see the
    // module doc for the truncation race), and the map is dropped before
    // control returns to the event loop.
    unsafe { MmapOptions::new().offset(offset).len(len).map(file) }
}
