//! A window on a memory-mappable array map (`BPF_F_MMAPABLE`, Linux 5.5): its elements read
//! and written as memory, without a system call each. A window maps only part of the array,
//! so that going through a large one never maps all of it at once.

use std::ffi::c_void;
use std::marker::PhantomData;
use std::num::NonZeroUsize;
use std::os::fd::AsFd;
use std::ptr::NonNull;

use aya::Pod;
use aya::maps::MapData;
use nix::errno::Errno;
use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};
use nix::unistd::{SysconfVar, sysconf};

/// What a window may do with the elements it maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::dataplane) enum Access {
    /// Read them.
    Read,
    /// Read and write them.
    ReadWrite,
}

/// Elements `start..start + len` of an array map, mapped.
pub(in crate::dataplane) struct ArrayWindow<V> {
    /// The start of the mapping (page aligned).
    mapping: NonNull<c_void>,
    /// The length of the mapping in bytes.
    mapping_len: usize,
    /// The first element, within the mapping.
    first: NonNull<V>,
    /// Elements in the window.
    len: usize,
    /// Whether the mapping is writable.
    access: Access,
    values: PhantomData<V>,
}

impl<V: Pod> ArrayWindow<V> {
    /// Maps elements `start..start + len` of the memory-mappable array `map`, whose values
    /// are `V`s, for `access`. `len` must be at least 1 and the elements within the map (else
    /// `EINVAL`).
    pub(in crate::dataplane) fn map(
        map: &MapData,
        start: usize,
        len: usize,
        access: Access,
    ) -> Result<Self, Errno> {
        let page = sysconf(SysconfVar::PAGE_SIZE)?
            .and_then(|size| usize::try_from(size).ok())
            .filter(|size| *size > 0)
            .ok_or(Errno::EINVAL)?;
        let size = size_of::<V>();
        // The kernel lays values out every `round_up(size, 8)` bytes: only sizes that are
        // multiples of 8 index as a slice of `V`.
        if size == 0 || !size.is_multiple_of(8) {
            return Err(Errno::EINVAL);
        }
        let from = start.checked_mul(size).ok_or(Errno::EINVAL)?;
        let offset = from / page * page;
        let skip = from - offset;
        let mapping_len = len
            .checked_mul(size)
            .and_then(|bytes| bytes.checked_add(skip))
            .and_then(NonZeroUsize::new)
            .ok_or(Errno::EINVAL)?;
        let offset = i64::try_from(offset).map_err(|_| Errno::EINVAL)?;
        let protection = match access {
            Access::Read => ProtFlags::PROT_READ,
            Access::ReadWrite => ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
        };
        // SAFETY: a new shared mapping of the map's file descriptor; the kernel checks that it
        // lies within the map. Nothing else refers to the address it returns.
        let mapping = unsafe {
            mmap(
                None,
                mapping_len,
                protection,
                MapFlags::MAP_SHARED,
                map.fd().as_fd(),
                offset,
            )?
        };
        // SAFETY: `skip` bytes into a mapping longer than that; array values are laid out
        // at multiples of their size from the page-aligned start of the array, so the
        // element is aligned as `V` is.
        let first = unsafe { NonNull::new_unchecked(mapping.as_ptr().cast::<u8>().add(skip)) };
        Ok(ArrayWindow {
            mapping,
            mapping_len: mapping_len.get(),
            first: first.cast(),
            len,
            access,
            values: PhantomData,
        })
    }

    /// Elements in the window.
    pub(in crate::dataplane) fn len(&self) -> usize {
        self.len
    }

    /// The element `index` of the window, as the kernel holds it now; `None` past the end.
    pub(in crate::dataplane) fn get(&self, index: usize) -> Option<V> {
        if index >= self.len {
            return None;
        }
        // SAFETY: within the mapping, aligned (see `map`), and any bit pattern is a `V`
        // (`Pod`). The program may be writing the element meanwhile: a volatile read takes
        // whatever is there without assuming it stays.
        Some(unsafe { self.first.as_ptr().add(index).read_volatile() })
    }

    /// Sets element `index` of the window to `value`; false past the end or in a read-only
    /// window.
    pub(in crate::dataplane) fn set(&self, index: usize, value: V) -> bool {
        if index >= self.len || self.access != Access::ReadWrite {
            return false;
        }
        // SAFETY: within a writable mapping, aligned (see `map`); the kernel's array is plain
        // memory that the program reads and writes without locks, as this does.
        unsafe { self.first.as_ptr().add(index).write_volatile(value) };
        true
    }
}

impl<V: Pod> ArrayWindow<V> {
    /// Sets byte `byte` of element `index` to `value`, leaving the element's other bytes as
    /// they are (the program may be writing them meanwhile); false past the element or the
    /// window, or in a read-only window.
    pub(in crate::dataplane) fn set_byte(&self, index: usize, byte: usize, value: u8) -> bool {
        if index >= self.len || byte >= size_of::<V>() || self.access != Access::ReadWrite {
            return false;
        }
        // SAFETY: a byte of an element within a writable mapping (checked above).
        unsafe {
            self.first
                .as_ptr()
                .add(index)
                .cast::<u8>()
                .add(byte)
                .write_volatile(value)
        };
        true
    }

    /// Sets the `u32` at byte `offset` of element `index` to `value`, leaving the element's
    /// other bytes as they are (the program may be writing them meanwhile); false past the
    /// element or the window, off a 4-byte boundary, or in a read-only window.
    pub(in crate::dataplane) fn set_u32(&self, index: usize, offset: usize, value: u32) -> bool {
        let fits = offset.is_multiple_of(4) && offset + 4 <= size_of::<V>();
        if index >= self.len || !fits || self.access != Access::ReadWrite {
            return false;
        }
        // SAFETY: a 4-byte-aligned word of an element within a writable mapping (elements
        // are aligned, see `map`, and their size is a multiple of their alignment).
        unsafe {
            self.first
                .as_ptr()
                .add(index)
                .cast::<u8>()
                .add(offset)
                .cast::<u32>()
                .write_volatile(value)
        };
        true
    }

    /// Sets the window's first `values.len()` elements to `values`; false when they do not
    /// fit or the window is read-only.
    pub(in crate::dataplane) fn copy_from(&self, values: &[V]) -> bool {
        if values.len() > self.len || self.access != Access::ReadWrite {
            return false;
        }
        // SAFETY: within a writable mapping, aligned (see `map`), not overlapping `values`
        // (a slice of this process's heap or stack, never a map's mapping handed out).
        unsafe {
            std::ptr::copy_nonoverlapping(values.as_ptr(), self.first.as_ptr(), values.len())
        };
        true
    }
}

impl<V> Drop for ArrayWindow<V> {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped once; nothing refers to it afterwards.
        let _ = unsafe { munmap(self.mapping, self.mapping_len) };
    }
}
