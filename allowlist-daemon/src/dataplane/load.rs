//! How the embedded eBPF object is loaded: map capacities, pins, the two programs.

use allowlist_common::ranges::{GLOBAL_REGIONS, Regions};
use allowlist_common::{EGRESS_PROGRAM_NAME, PROGRAM_NAME};
use aya::programs::{ProgramError, SchedClassifier, Xdp};
use aya::{Ebpf, EbpfLoader};

use super::error::{DataplaneError, program_error};
use super::layout::{OBJECT, object_layouts, sized_len};
use super::pins::Pins;
use super::types::Capacity;

/// Loads the object with maps of `capacity`, pinned in `pins` (reusing maps pinned there), and loads the
/// XDP and egress programs into the kernel.
pub(super) fn load_object(pins: Option<&Pins>, capacity: Capacity) -> Result<Ebpf, DataplaneError> {
    let regions = Regions::for_prefixes(capacity.v4_prefixes, capacity.v6_prefixes);
    let layouts = object_layouts(capacity)?;
    let mut loader = EbpfLoader::new();
    loader.override_global(GLOBAL_REGIONS, &regions, true);
    for layout in &layouts {
        if let Some(len) = sized_len(&layout.name, capacity) {
            loader.map_max_entries(&layout.name, len);
        }
        if let Some(pins) = pins {
            loader.map_pin_path(&layout.name, pins.dir.join(&layout.name));
        }
    }
    // The benchmark's baseline tries hold the policy in force.
    #[cfg(feature = "bench")]
    loader
        .map_max_entries("BENCH_TRIE_V4", capacity.v4_prefixes.max(1))
        .map_max_entries("BENCH_TRIE_V6", capacity.v6_prefixes.max(1));
    let mut ebpf = loader.load(OBJECT).map_err(DataplaneError::Load)?;
    program_mut::<Xdp>(&mut ebpf, PROGRAM_NAME)?
        .load()
        .map_err(program_error(PROGRAM_NAME))?;
    program_mut::<SchedClassifier>(&mut ebpf, EGRESS_PROGRAM_NAME)?
        .load()
        .map_err(program_error(EGRESS_PROGRAM_NAME))?;
    Ok(ebpf)
}

/// One of the object's programs, by name (to run it on a crafted frame).
#[cfg(feature = "test-util")]
pub(super) fn program<'a, T>(ebpf: &'a Ebpf, name: &'static str) -> Result<&'a T, DataplaneError>
where
    &'a T: TryFrom<&'a aya::programs::Program, Error = ProgramError>,
{
    ebpf.program(name)
        .ok_or(DataplaneError::Missing(name))?
        .try_into()
        .map_err(program_error(name))
}

/// As [`program`], mutable (to load, attach and detach).
pub(super) fn program_mut<'a, T>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut T, DataplaneError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(DataplaneError::Missing(name))?
        .try_into()
        .map_err(program_error(name))
}
