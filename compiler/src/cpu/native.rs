//! The CPU's LLVM tier where it runs: which x86-64 feature levels exist, which this CPU has,
//! and loading an object file of kernels compiled at `gdc build` ([`super::llvm`]) into
//! executable memory without LLVM (a small ELF loader: the code and read-only data
//! sections, PC-relative and absolute relocations between them; nothing external).

#![allow(unsafe_code)]

use object::{Object, ObjectSection, ObjectSymbol, RelocationFlags, RelocationTarget, SectionKind};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// An x86-64 microarchitecture level the LLVM tier compiles kernels for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Level {
    /// AVX2 and FMA (Haswell, Zen 1 and later): 256-bit vectors.
    #[serde(rename = "x86-64-v3")]
    V3,
    /// AVX-512 F/BW/CD/DQ/VL (Skylake-X, Ice Lake, Zen 4 and later): 512-bit vectors.
    #[serde(rename = "x86-64-v4")]
    V4,
}

impl Level {
    /// Every level, best first.
    pub const ALL: [Level; 2] = [Level::V4, Level::V3];

    /// The level's name, which is also LLVM's CPU name for it.
    pub fn name(self) -> &'static str {
        match self {
            Level::V3 => "x86-64-v3",
            Level::V4 => "x86-64-v4",
        }
    }

    /// Float32 lanes of the kernels' main loop.
    pub fn lanes(self) -> usize {
        match self {
            Level::V3 => 8,
            Level::V4 => 16,
        }
    }

    /// LLVM target features of the level's functions. A function's features replace the
    /// compiling machine's (LLVM's per-function subtarget), so they are spelt out.
    pub fn features(self) -> &'static [&'static str] {
        match self {
            Level::V3 => &["+avx", "+avx2", "+bmi", "+bmi2", "+f16c", "+fma", "+lzcnt", "+movbe", "+popcnt", "+sse4.2"],
            Level::V4 => &[
                "+avx",
                "+avx2",
                "+bmi",
                "+bmi2",
                "+f16c",
                "+fma",
                "+lzcnt",
                "+movbe",
                "+popcnt",
                "+sse4.2",
                "+avx512f",
                "+avx512bw",
                "+avx512cd",
                "+avx512dq",
                "+avx512vl",
            ],
        }
    }

    /// Whether this CPU has every feature of the level.
    pub fn available(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            let v3 = has!("avx")
                && has!("avx2")
                && has!("bmi1")
                && has!("bmi2")
                && has!("f16c")
                && has!("fma")
                && has!("lzcnt")
                && has!("movbe")
                && has!("popcnt")
                && has!("sse4.2");
            match self {
                Level::V3 => v3,
                Level::V4 => {
                    v3 && has!("avx512f")
                        && has!("avx512bw")
                        && has!("avx512cd")
                        && has!("avx512dq")
                        && has!("avx512vl")
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// The best level this CPU runs, if any; `GDC_NO_NATIVE=1` says none (every kernel
    /// on Cranelift).
    pub fn best_available() -> Option<Level> {
        if std::env::var("GDC_NO_NATIVE").is_ok_and(|v| v == "1") {
            return None;
        }
        Level::ALL.into_iter().find(|l| l.available())
    }
}

/// The native kernels of a plan for one level, as an artifact carries them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NativeLevel {
    pub level: Level,
    /// The ELF object file, hex.
    pub object: String,
    /// Per kernel item of the plan, in (variant, init then update, item) order: the symbol
    /// of its function in the object, or `None` (the kernel runs on Cranelift).
    pub kernels: Vec<Option<String>>,
}

/// Executable memory holding one loaded object's code and read-only data.
pub struct Loaded {
    map: memmap2::Mmap,
    symbols: HashMap<String, usize>,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Loaded({} bytes, {} functions)", self.map.len(), self.symbols.len())
    }
}

impl Loaded {
    /// The address of function `name`.
    pub fn function(&self, name: &str) -> Option<*const u8> {
        // SAFETY: every offset in `symbols` lies inside the mapping (checked at load).
        self.symbols.get(name).map(|off| unsafe { self.map.as_ptr().add(*off) })
    }
}

/// x86-64 ELF relocation types the loader applies.
const R_X86_64_64: u32 = 1;
const R_X86_64_PC32: u32 = 2;
const R_X86_64_PLT32: u32 = 4;
const R_X86_64_PC64: u32 = 24;

/// Loads an x86-64 ELF relocatable object: maps its code and read-only data sections,
/// applies their relocations and makes them executable. Refuses writable data, external
/// symbols and relocation types it does not know.
pub fn load(bytes: &[u8]) -> Result<Loaded, String> {
    let file = object::File::parse(bytes).map_err(|e| format!("not an object file: {e}"))?;
    if file.architecture() != object::Architecture::X86_64 {
        return Err(format!("the object is for {:?}, not x86-64", file.architecture()));
    }
    let mut offsets: HashMap<object::SectionIndex, usize> = HashMap::new();
    let mut size = 0usize;
    for s in file.sections() {
        let name = s.name().unwrap_or("");
        match s.kind() {
            SectionKind::Text | SectionKind::ReadOnlyData | SectionKind::ReadOnlyString
                if s.size() > 0 && name != ".eh_frame" =>
            {
                let align = (s.align() as usize).max(1);
                size = size.div_ceil(align) * align;
                offsets.insert(s.index(), size);
                size += s.size() as usize;
            }
            SectionKind::Data | SectionKind::UninitializedData | SectionKind::Tls | SectionKind::UninitializedTls
                if s.size() > 0 =>
            {
                return Err(format!("the object has writable data (section {name}), which kernels never need"));
            }
            _ => {}
        }
    }
    let mut map = memmap2::MmapMut::map_anon(size.max(1)).map_err(|e| format!("cannot map {size} bytes: {e}"))?;
    let base = map.as_ptr() as usize;
    for s in file.sections() {
        let Some(off) = offsets.get(&s.index()) else { continue };
        let data = s.data().map_err(|e| format!("section {}: {e}", s.name().unwrap_or("?")))?;
        map[*off..*off + data.len()].copy_from_slice(data);
    }
    let address_of = |target: RelocationTarget| -> Result<usize, String> {
        let RelocationTarget::Symbol(i) = target else {
            return Err(format!("relocation against {target:?}"));
        };
        let sym = file.symbol_by_index(i).map_err(|e| e.to_string())?;
        let section = sym
            .section_index()
            .ok_or_else(|| format!("the object refers to `{}`, which it does not define", sym.name().unwrap_or("?")))?;
        let off = offsets
            .get(&section)
            .ok_or_else(|| format!("relocation against `{}` in a section not loaded", sym.name().unwrap_or("?")))?;
        Ok(base + off + sym.address() as usize)
    };
    for s in file.sections() {
        let Some(off) = offsets.get(&s.index()).copied() else { continue };
        for (at, r) in s.relocations() {
            let RelocationFlags::Elf { r_type } = r.flags() else {
                return Err("not an ELF relocation".into());
            };
            let place = off + at as usize;
            let s_plus_a = (address_of(r.target())? as i64).wrapping_add(r.addend());
            let p = (base + place) as i64;
            match r_type {
                R_X86_64_PC32 | R_X86_64_PLT32 => {
                    let v =
                        i32::try_from(s_plus_a - p).map_err(|_| "a PC-relative relocation overflows".to_string())?;
                    map[place..place + 4].copy_from_slice(&v.to_le_bytes());
                }
                R_X86_64_PC64 => map[place..place + 8].copy_from_slice(&(s_plus_a - p).to_le_bytes()),
                R_X86_64_64 => map[place..place + 8].copy_from_slice(&s_plus_a.to_le_bytes()),
                other => return Err(format!("relocation type {other} is not supported")),
            }
        }
    }
    let mut symbols = HashMap::new();
    for sym in file.symbols() {
        if sym.kind() != object::SymbolKind::Text || !sym.is_definition() {
            continue;
        }
        let Some(off) = sym.section_index().and_then(|i| offsets.get(&i)) else { continue };
        let at = off + sym.address() as usize;
        if at >= size {
            return Err("a function lies outside its section".into());
        }
        symbols.insert(sym.name().map_err(|e| e.to_string())?.to_string(), at);
    }
    let map = map.make_exec().map_err(|e| format!("cannot make the kernels executable: {e}"))?;
    Ok(Loaded { map, symbols })
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of lowercase or uppercase hex `text`.
pub fn unhex(text: &str) -> Result<Vec<u8>, String> {
    if !text.len().is_multiple_of(2) {
        return Err("odd number of hex digits".into());
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).map_err(|_| format!("not hex at {i}")))
        .collect()
}
