//! `BPF_MAP_LOOKUP_BATCH` (Linux 5.6): one system call reads many elements instead of one
//! each.

use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use aya::Pod;
use aya::maps::{MapData, MapError};
use aya_obj::generated::bpf_cmd;
use nix::errno::Errno;
use nix::libc;

/// Elements per system call: bounded, so that the buffers of a lookup stay small and no call
/// keeps the kernel busy for long.
const CHUNK: usize = 65_536;

/// The `batch` member of `union bpf_attr` (aya-obj's bindings of the kernel's header).
type BatchAttr = aya_obj::generated::bpf_attr__bindgen_ty_3;

/// Errors of batch operations.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The map's information could not be read.
    #[error("reading the map's sizes")]
    Info(#[source] MapError),
    /// The map's sizes are not those of the types it is used with.
    #[error(
        "the map has keys of {key_size} and values of {value_size} bytes; its use needs {key} and {value}"
    )]
    Layout {
        /// The map's key size.
        key_size: u32,
        /// The map's value size.
        value_size: u32,
        /// The key type's size.
        key: usize,
        /// The value type's size.
        value: usize,
    },
    /// The kernel stopped part way through the map.
    #[error("the kernel stopped after {done} elements")]
    Stopped {
        /// Elements the kernel processed.
        done: usize,
        /// Why it stopped.
        #[source]
        source: Errno,
    },
}

/// Batch access to a map whose keys are `K` and values `V` (one `V` per possible CPU for a
/// per-CPU map), checked against the map's own sizes when made: the buffers handed to the
/// kernel are always as long as it reads or writes.
pub(in crate::dataplane) struct BatchMap<'a, K, V> {
    fd: BorrowedFd<'a>,
    /// Values per element: 1, or the possible CPUs of a per-CPU map.
    per_element: usize,
    types: PhantomData<(K, V)>,
}

impl<'a, K: Pod, V: Pod> BatchMap<'a, K, V> {
    /// Batch access to `map`; `cpus`: the possible CPUs when it is a per-CPU map, whose values
    /// the kernel lays out 8-byte aligned (so `V` must be a multiple of 8 bytes).
    pub(in crate::dataplane) fn new(
        map: &'a MapData,
        cpus: Option<usize>,
    ) -> Result<Self, BatchError> {
        let info = map.info().map_err(BatchError::Info)?;
        let per_cpu_aligned = cpus.is_none() || size_of::<V>().is_multiple_of(8);
        if info.key_size() as usize != size_of::<K>()
            || info.value_size() as usize != size_of::<V>()
            || !per_cpu_aligned
        {
            return Err(BatchError::Layout {
                key_size: info.key_size(),
                value_size: info.value_size(),
                key: size_of::<K>(),
                value: size_of::<V>(),
            });
        }
        Ok(Self {
            fd: map.fd().as_fd(),
            per_element: cpus.unwrap_or(1).max(1),
            types: PhantomData,
        })
    }

    /// Reads the first `limit` elements (or all) in the map's order, in chunks: `visit` gets
    /// each key with its values (one per possible CPU for a per-CPU map).
    pub(in crate::dataplane) fn lookup(
        &self,
        limit: usize,
        mut visit: impl FnMut(&K, &[V]),
    ) -> Result<(), BatchError> {
        if limit == 0 {
            return Ok(());
        }
        let chunk = limit.min(CHUNK);
        let mut keys: Vec<K> = zeroed(chunk);
        let mut values: Vec<V> = zeroed(chunk * self.per_element);
        // The position between calls: a key for most maps, a 4-byte bucket index for hashes.
        let mut token = vec![0u8; size_of::<K>().max(8)];
        let mut next = token.clone();
        let mut started = false;
        let mut read = 0;
        loop {
            let mut attr = BatchAttr {
                in_batch: if started { token.as_ptr() as u64 } else { 0 },
                out_batch: next.as_mut_ptr() as u64,
                map_fd: self.fd.as_raw_fd() as u32,
                keys: keys.as_mut_ptr() as u64,
                values: values.as_mut_ptr() as u64,
                count: (limit - read).min(chunk) as u32,
                elem_flags: 0,
                flags: 0,
            };
            let outcome = bpf(bpf_cmd::BPF_MAP_LOOKUP_BATCH, &mut attr);
            let got = attr.count as usize;
            read += got;
            for (key, per_cpu) in keys[..got].iter().zip(values.chunks(self.per_element)) {
                visit(key, per_cpu);
            }
            match outcome {
                // The end of the map.
                Err(Errno::ENOENT) => return Ok(()),
                Err(source) => {
                    return Err(BatchError::Stopped { done: read, source });
                }
                Ok(()) if read >= limit => return Ok(()),
                Ok(()) => {}
            }
            token.copy_from_slice(&next);
            started = true;
        }
    }
}

/// `len` values of `T` with every byte zero: a valid `T`, since any bytes are (`Pod`).
fn zeroed<T: Pod>(len: usize) -> Vec<T> {
    (0..len)
        // SAFETY: `Pod` types are plain data: every bit pattern, zero included, is a value.
        .map(|_| unsafe { MaybeUninit::<T>::zeroed().assume_init() })
        .collect()
}

/// `bpf(cmd, attr, sizeof attr)`.
fn bpf(cmd: bpf_cmd, attr: &mut BatchAttr) -> Result<(), Errno> {
    // SAFETY: `attr` is a valid `bpf_attr.batch` for the size given. Its `keys` and `values`
    // (and the batch tokens) point into buffers the callers keep alive for the call, each as
    // long as `count` elements of the map's key and value sizes, which `BatchMap::new`
    // checked against the buffers' types; the kernel touches no other memory.
    let result = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr as *mut BatchAttr,
            size_of::<BatchAttr>(),
        )
    };
    Errno::result(result).map(drop)
}
