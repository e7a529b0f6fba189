//! Writing a map region element by element as a table is built, through small memory
//! mappings: neither the table nor the region is ever whole in the daemon's memory.

use aya::Pod;
use aya::maps::MapData;

use super::super::error::DataplaneError;
use super::super::sys::{Access, ArrayWindow};

/// Elements buffered before they are copied into the map: 256 KiB of buckets.
const CHUNK: usize = 4096;

/// Copies `values` into `map` (`name`) from element `start` on.
pub(super) fn copy_region<V: Pod>(
    map: &MapData,
    name: &'static str,
    start: usize,
    values: &[V],
) -> Result<(), DataplaneError> {
    if values.is_empty() {
        return Ok(());
    }
    let mapping_error = |source| DataplaneError::Mapping { name, source };
    let window = ArrayWindow::<V>::map(map, start, values.len(), Access::ReadWrite)
        .map_err(mapping_error)?;
    if window.copy_from(values) {
        Ok(())
    } else {
        Err(mapping_error(nix::errno::Errno::EINVAL))
    }
}

/// Writes the elements of one region of a map, in order.
pub(super) struct RegionWriter<'a, V> {
    map: &'a MapData,
    name: &'static str,
    /// The map element the buffer's first goes to.
    next: usize,
    /// The end of the region.
    end: usize,
    buffer: Vec<V>,
}

impl<'a, V: Pod> RegionWriter<'a, V> {
    /// A writer of elements `start..start + len` of `map` (`name`).
    pub(super) fn new(map: &'a MapData, name: &'static str, start: usize, len: usize) -> Self {
        RegionWriter {
            map,
            name,
            next: start,
            end: start + len,
            buffer: Vec::with_capacity(CHUNK.min(len)),
        }
    }

    /// Writes the next element; refuses one past the region.
    pub(super) fn push(&mut self, value: V) -> Result<(), DataplaneError> {
        if self.next + self.buffer.len() >= self.end {
            return Err(DataplaneError::RegionFull { name: self.name });
        }
        self.buffer.push(value);
        if self.buffer.len() == CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    /// Copies what is buffered into the map.
    pub(super) fn flush(&mut self) -> Result<(), DataplaneError> {
        copy_region(self.map, self.name, self.next, &self.buffer)?;
        self.next += self.buffer.len();
        self.buffer.clear();
        Ok(())
    }
}

/// Packs small values (`bits` wide) into the words a [`RegionWriter`] writes, the first in
/// the low bits.
pub(super) struct PackedWriter<'a> {
    words: RegionWriter<'a, u64>,
    bits: usize,
    word: u64,
    in_word: usize,
}

impl<'a> PackedWriter<'a> {
    /// Values of `bits` bits into `words`.
    pub(super) fn new(words: RegionWriter<'a, u64>, bits: usize) -> Self {
        PackedWriter {
            words,
            bits,
            word: 0,
            in_word: 0,
        }
    }

    /// Writes the next value.
    pub(super) fn push(&mut self, value: u64) -> Result<(), DataplaneError> {
        self.word |= value << (self.bits * self.in_word);
        self.in_word += 1;
        if self.in_word * self.bits == 64 {
            self.words.push(self.word)?;
            (self.word, self.in_word) = (0, 0);
        }
        Ok(())
    }

    /// Writes the last, partial word and copies everything into the map.
    pub(super) fn flush(&mut self) -> Result<(), DataplaneError> {
        if self.in_word > 0 {
            self.words.push(self.word)?;
            (self.word, self.in_word) = (0, 0);
        }
        self.words.flush()
    }
}
