//! Links the program's global functions as global: the verifier checks a global function
//! once, alone, with only its arguments' types known, instead of once for every path of the
//! program that reaches it (what it does for a static subprogram or inlined code). The
//! searches of large buckets and the flow map lookups sit after many branches of the packet
//! parsing: as global functions they cut the instructions the verifier walks at every load
//! of the program (each resize of the tables) from about 129,000 to 87,000 (with the
//! preview's judgement, itself a global function; the egress program's from 10,600 to
//! 2,100). What most packets take (the short lists, the summary and the bucket, the flow
//! filter) stays inline: a call costs a packet 10 to 20 ns.
//!
//! bpf-linker keeps a function global only when it is exported; every other one it makes
//! static. Host builds (`cargo clippy --workspace`) link no BPF and get no flag.
//!
//! It also passes LLVM `--bpf-expand-memcpy-in-order` unless told not to, which turns every
//! `memset` (a zeroed key, an IPv4 address widened into 16 bytes) into a call to a
//! byte-by-byte loop: 12 bytes cost a refused packet about 75 instructions, the preview's
//! record of a packet 240. Without it LLVM writes them as a few wide stores.

/// The program's global functions: each `#[unsafe(no_mangle)] pub extern "C"`.
const GLOBAL_FUNCTIONS: [&str; 5] = [
    "allowlist_search_v4",
    "allowlist_search_v6",
    "allowlist_fresh_flow",
    "allowlist_record_flow",
    "allowlist_preview",
];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("bpf") {
        println!(
            "cargo:rustc-link-arg-bins=--export={}",
            GLOBAL_FUNCTIONS.join(",")
        );
        println!("cargo:rustc-link-arg-bins=--disable-expand-memcpy-in-order");
    }
}
