//! The benchmark's programs and methods (the `bench` feature): the XDP_DROP floor, and the
//! very lookup of the XDP program over many random sources in one test run. A shipped
//! allowlistd is built without them, and its object has neither these programs nor maps.

use std::net::IpAddr;
use std::time::Duration;

use allowlist_common::RuleId;
use allowlist_common::bench::{
    BENCH_FLOOR_PROGRAM, BENCH_LOOKUPS_PROGRAM, BENCH_SOURCE_SLOTS, BENCH_VARIED_PROGRAM,
};
use aya::Ebpf;
use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, ArrayOfMaps, MapData, MapError};
use aya::programs::{TestRun, Xdp, XdpMode};
use ipnet::IpNet;

use super::Dataplane;
use super::error::{DataplaneError, map_error, program_error};
use super::load::{program, program_mut};
use super::test_run::test_run_options;
use super::types::AttachMode;

/// Where [`Dataplane::bench_lookups`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupDesign {
    /// Nowhere: the loop alone.
    Loop = 0,
    /// A flat array, sized at load: lookups the verifier inlines.
    Flat = 1,
    /// An inner map of any size (`BPF_F_INNER_MAP`): a helper call per lookup.
    Inner = 2,
}

/// What a varied-source run of [`Dataplane::bench_varied`] does with each source.
#[derive(Debug, Clone, Copy)]
pub struct VariedRun {
    /// Look it up at all (else only draw it: the loop's own cost).
    pub lookups: bool,
    /// In the baseline tries rather than the range tables.
    pub trie: bool,
    /// Count the hit on the rule found.
    pub hits: bool,
}

impl Dataplane {
    /// As [`Dataplane::load`], with the benchmark's programs loaded too (see
    /// [`Dataplane::bench_floor`] and [`Dataplane::bench_varied`]).
    pub fn load_for_bench(max_rules: u32) -> Result<Self, DataplaneError> {
        let mut dataplane = Self::load(max_rules, 1024)?;
        for name in [
            BENCH_FLOOR_PROGRAM,
            BENCH_VARIED_PROGRAM,
            BENCH_LOOKUPS_PROGRAM,
        ] {
            program_mut::<Xdp>(&mut dataplane.ebpf, name)?
                .load()
                .map_err(program_error(name))?;
        }
        Ok(dataplane)
    }

    /// Runs the drop-only program on `frame` `repeat` times: the kernel's mean time per run.
    pub fn bench_floor(&self, frame: &[u8], repeat: u32) -> Result<Duration, DataplaneError> {
        Ok(program::<Xdp>(&self.ebpf, BENCH_FLOOR_PROGRAM)?
            .test_run(test_run_options(frame, repeat))
            .map_err(program_error(BENCH_FLOOR_PROGRAM))?
            .duration)
    }

    /// Attaches the drop-only program to `interface` of the calling thread's network
    /// namespace, in native mode: the do-nothing program a flood through the real hook is
    /// measured against. It stays attached while this dataplane lives.
    pub fn bench_attach_floor(&mut self, interface: &str) -> Result<(), DataplaneError> {
        program_mut::<Xdp>(&mut self.ebpf, BENCH_FLOOR_PROGRAM)?
            .attach(interface, XdpMode::Driver)
            .map_err(|source| DataplaneError::Attach {
                interface: interface.to_owned(),
                mode: AttachMode::Native,
                source,
            })?;
        Ok(())
    }

    /// Copies the policy in force into the benchmark's baseline LPM tries (one insert a
    /// prefix: seconds at a million), for [`Dataplane::bench_varied`] with `trie`.
    pub fn bench_tries(&mut self) -> Result<(), DataplaneError> {
        let prefixes: Vec<(IpNet, RuleId)> = self
            .installed()
            .map(|policy| policy.iter().map(|(net, rule)| (*net, *rule)).collect())
            .unwrap_or_default();
        let mut v4: LpmTrie<_, [u8; 4], RuleId> = bench_map(&mut self.ebpf, "BENCH_TRIE_V4")?;
        for (net, rule) in &prefixes {
            if let IpNet::V4(net) = net {
                let key = Key::new(u32::from(net.prefix_len()), net.network().octets());
                v4.insert(&key, rule, 0)
                    .map_err(map_error("BENCH_TRIE_V4"))?;
            }
        }
        let mut v6: LpmTrie<_, [u8; 16], RuleId> = bench_map(&mut self.ebpf, "BENCH_TRIE_V6")?;
        for (net, rule) in &prefixes {
            if let IpNet::V6(net) = net {
                let key = Key::new(u32::from(net.prefix_len()), net.network().octets());
                v6.insert(&key, rule, 0)
                    .map_err(map_error("BENCH_TRIE_V6"))?;
            }
        }
        Ok(())
    }

    /// Fills the table [`Dataplane::bench_varied`] draws its sources from with `sources`
    /// (all of one family, repeated to fill it).
    pub fn bench_sources(&mut self, sources: &[IpAddr]) -> Result<(), DataplaneError> {
        let mut slots: Array<_, [u8; 16]> = bench_map(&mut self.ebpf, "BENCH_SOURCES")?;
        for (slot, source) in (0..BENCH_SOURCE_SLOTS).zip(sources.iter().cycle()) {
            let mut bytes = [0u8; 16];
            match source {
                IpAddr::V4(v4) => bytes[..4].copy_from_slice(&v4.octets()),
                IpAddr::V6(v6) => bytes = v6.octets(),
            }
            slots
                .set(slot, bytes, 0)
                .map_err(map_error("BENCH_SOURCES"))?;
        }
        let family = match sources.first() {
            Some(IpAddr::V6(_)) => 6,
            _ => 4,
        };
        self.bench_setup(0, family)
    }

    /// Runs the varied-source program `repeat` times: each run looks up (or, without
    /// `lookups`, only draws) [`allowlist_common::bench::BENCH_LOOPS`] sources drawn at
    /// random from those [`Dataplane::bench_sources`] set, in the policy in force: in the
    /// tries alone when `how.trie` (the baseline), else as the program does, counting the
    /// hit on the rule found when `how.hits` (as the program does). Returns the kernel's
    /// mean time per run and how many sources of the last run the policy allowed.
    pub fn bench_varied(
        &mut self,
        how: VariedRun,
        repeat: u32,
    ) -> Result<(Duration, u64), DataplaneError> {
        self.bench_setup(1, u32::from(how.lookups))?;
        self.bench_setup(2, u32::from(how.trie))?;
        self.bench_setup(3, u32::from(how.hits))?;
        let frame = [0u8; 64];
        let duration = program::<Xdp>(&self.ebpf, BENCH_VARIED_PROGRAM)?
            .test_run(test_run_options(&frame, repeat))
            .map_err(program_error(BENCH_VARIED_PROGRAM))?
            .duration;
        let found: Array<_, u64> = bench_map(&mut self.ebpf, "BENCH_FOUND")?;
        let found = found.get(&0, 0).map_err(map_error("BENCH_FOUND"))?;
        Ok((duration, found))
    }

    /// Runs the lookup-timing program `repeat` times: each run makes
    /// [`allowlist_common::bench::BENCH_LOOPS`] iterations of `reads` dependent reads at
    /// random lines of a 64 MiB table, flat (`LookupDesign::Flat`, lookups the verifier
    /// inlines) or in an inner map of any size (`LookupDesign::Inner`, a helper call each), or
    /// only draws the first line (`LookupDesign::Loop`). Returns the kernel's mean time per
    /// run.
    pub fn bench_lookups(
        &mut self,
        design: LookupDesign,
        reads: u32,
        repeat: u32,
    ) -> Result<Duration, DataplaneError> {
        if design == LookupDesign::Inner {
            self.bench_inner_table()?;
        }
        let mut setup: Array<_, u32> = bench_map(&mut self.ebpf, "BENCH_LOOKUP_SETUP")?;
        setup
            .set(0, design as u32, 0)
            .map_err(map_error("BENCH_LOOKUP_SETUP"))?;
        setup
            .set(1, reads, 0)
            .map_err(map_error("BENCH_LOOKUP_SETUP"))?;
        let frame = [0u8; 64];
        Ok(program::<Xdp>(&self.ebpf, BENCH_LOOKUPS_PROGRAM)?
            .test_run(test_run_options(&frame, repeat))
            .map_err(program_error(BENCH_LOOKUPS_PROGRAM))?
            .duration)
    }

    /// Puts a table as large as the flat one in the inner-map slot, once.
    fn bench_inner_table(&mut self) -> Result<(), DataplaneError> {
        let mut outer: ArrayOfMaps<_, Array<MapData, [u64; 8]>> =
            bench_map(&mut self.ebpf, "BENCH_OUTER")?;
        if outer.get(&0, 0).is_ok() {
            return Ok(());
        }
        // BPF_F_INNER_MAP: inner maps of any size (the kernel then does not inline lookups).
        let inner = Array::<MapData, [u64; 8]>::create(1 << 20, 1 << 12)
            .map_err(map_error("BENCH_OUTER"))?;
        outer.set(0, &inner, 0).map_err(map_error("BENCH_OUTER"))
    }

    /// Sets entry `index` of the benchmark's setup array.
    fn bench_setup(&mut self, index: u32, value: u32) -> Result<(), DataplaneError> {
        let mut setup: Array<_, u32> = bench_map(&mut self.ebpf, "BENCH_SETUP")?;
        setup.set(index, value, 0).map_err(map_error("BENCH_SETUP"))
    }
}

/// One of the benchmark's maps, by name, borrowed from `ebpf`.
fn bench_map<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<T, DataplaneError>
where
    T: TryFrom<&'a mut aya::maps::Map, Error = MapError>,
{
    ebpf.map_mut(name)
        .ok_or(DataplaneError::Missing(name))?
        .try_into()
        .map_err(map_error(name))
}
