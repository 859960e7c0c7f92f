//! The CUDA driver and cuBLAS, found at run time: their libraries are probed before cudarc
//! first touches them (cudarc panics when a library is missing), every driver call's error
//! becomes a [`RuntimeError`] saying what failed, and device memory is reached through
//! [`DevPtr`]s taken from live buffers.

#![allow(unsafe_code)]

use crate::RuntimeError;
use cudarc::cublas::CudaBlas;
use cudarc::driver::{result, sys, CudaContext, CudaSlice, CudaStream, DeviceRepr, ValidAsZeroBits};
use std::sync::Arc;

/// Where the driver library is looked for, in order.
#[cfg(not(windows))]
pub const DRIVER_LIBS: &[&str] = &["libcuda.so.1", "libcuda.so"];
#[cfg(windows)]
pub const DRIVER_LIBS: &[&str] = &["nvcuda.dll"];
/// Where cuBLAS is looked for, in order.
#[cfg(not(windows))]
pub const CUBLAS_LIBS: &[&str] = &["libcublas.so.12", "libcublas.so"];
#[cfg(windows)]
pub const CUBLAS_LIBS: &[&str] = &["cublas64_12.dll"];

/// What every "no GPU" message ends with.
const NO_GPU_HINT: &str = "the cuda backend needs a machine with an NVIDIA GPU and its driver (libcuda); \
     the cpu backend (`--backend cpu`, `Backend::Cpu`) runs anywhere";

/// Tries to load one of `names`; on failure, why each one failed.
fn probe(names: &[&str]) -> Result<(), String> {
    let mut tried = Vec::new();
    for name in names {
        // SAFETY: loading a system library runs its initialisers; these are the NVIDIA
        // driver's and cuBLAS's own libraries, which cudarc would load the same way. The
        // handle is closed again at once: cudarc opens its own.
        match unsafe { libloading::Library::new(*name) } {
            Ok(_) => return Ok(()),
            Err(e) => match std::error::Error::source(&e) {
                Some(why) => tried.push(format!("{name} ({why})")),
                None => tried.push(format!("{name} ({e})")),
            },
        }
    }
    Err(tried.join("; "))
}

/// A `map_err` for driver calls: `Cuda("<what>: <error>")`.
pub fn cuda<E: std::fmt::Display>(what: impl std::fmt::Display) -> impl FnOnce(E) -> RuntimeError {
    move |e| RuntimeError::Cuda(format!("{what}: {e}"))
}

fn no_gpu(what: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::NoGpu(format!("{what}; {NO_GPU_HINT}"))
}

/// A device address and how many elements of `T` live there. Only made from a buffer that
/// outlives every use of the pointer: one the engine owns (freed only with the engine), or
/// one the caller lends for the duration of a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DevPtr {
    pub addr: u64,
    pub len: usize,
}

/// A device buffer of `len` elements (at least one is allocated, so even an empty buffer
/// has a valid address).
pub struct DevBuf<T> {
    slice: CudaSlice<T>,
    len: usize,
}

impl<T: DeviceRepr> DevBuf<T> {
    pub fn ptr(&self, stream: &CudaStream) -> DevPtr {
        slice_ptr(&self.slice, self.len, stream)
    }

    pub fn len(&self) -> usize {
        self.len
    }
}

/// The address of a caller's or the engine's slice, first `len` elements.
pub fn slice_ptr<T>(slice: &CudaSlice<T>, len: usize, stream: &CudaStream) -> DevPtr {
    use cudarc::driver::DevicePtr;
    let (addr, _record) = slice.device_ptr(stream);
    DevPtr { addr, len: len.min(slice.len()) }
}

/// A device buffer reused across launches, grown on demand. It remembers what it last
/// uploaded: a table that has not changed since (the chunk and pointer tables of a kernel,
/// step after step) is not sent again.
pub struct Scratch<T> {
    buf: Option<DevBuf<T>>,
    uploaded: Vec<T>,
}

impl<T: DeviceRepr + ValidAsZeroBits + Copy + PartialEq> Scratch<T> {
    pub fn new() -> Scratch<T> {
        Scratch { buf: None, uploaded: Vec::new() }
    }

    /// At least `len` elements; grown (contents lost) if smaller.
    pub fn ensure(&mut self, dev: &Device, len: usize, what: &str) -> Result<DevPtr, RuntimeError> {
        if self.buf.as_ref().is_none_or(|b| b.len < len) {
            // Drop the old buffer first (its free is ordered on the stream).
            self.buf = None;
            self.uploaded.clear();
            self.buf = Some(dev.zeros(len.next_power_of_two(), what)?);
        }
        let b = self.buf.as_ref().ok_or_else(|| RuntimeError::Cuda(format!("{what}: no buffer")))?;
        Ok(DevPtr { len, ..b.ptr(&dev.stream) })
    }

    /// Uploads `data` (unless the buffer already holds exactly it) and returns its address.
    pub fn upload(&mut self, dev: &Device, data: &[T], what: &str) -> Result<u64, RuntimeError> {
        let p = self.ensure(dev, data.len(), what)?;
        if self.uploaded != data {
            self.uploaded.clear();
            dev.upload(p, data, what)?;
            self.uploaded.extend_from_slice(data);
        }
        Ok(p.addr)
    }
}

/// One device: its context, the stream every launch and copy goes to, cuBLAS if the plan
/// needs it, and what launches need to know.
pub struct Device {
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    pub blas: Option<CudaBlas>,
    pub ordinal: usize,
    pub name: String,
    /// Compute capability (major, minor).
    pub cc: (i32, i32),
    pub multiprocessors: u32,
}

impl Device {
    /// Opens device `ordinal` (and cuBLAS if `blas`), or says why there is no usable GPU.
    pub fn open(ordinal: usize, blas: bool) -> Result<Device, RuntimeError> {
        probe(DRIVER_LIBS)
            .map_err(|tried| no_gpu(format_args!("cannot load the CUDA driver library libcuda: tried {tried}")))?;
        if blas {
            probe(CUBLAS_LIBS).map_err(|tried| {
                no_gpu(format_args!(
                    "libcuda is present but cuBLAS is not (this optimizer's matrix products need it): \
                     tried {tried}; install the CUDA 12 toolkit's libcublas or put it on LD_LIBRARY_PATH"
                ))
            })?;
        }
        // cudarc panics when a symbol it needs is missing (a driver older than CUDA 12.8):
        // report that as an unusable driver rather than unwinding into the caller.
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Device::open_probed(ordinal, blas))) {
            Ok(r) => r,
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("unknown failure");
                Err(no_gpu(format_args!("libcuda is present but unusable: {msg}")))
            }
        }
    }

    fn open_probed(ordinal: usize, blas: bool) -> Result<Device, RuntimeError> {
        let count = CudaContext::device_count().map_err(|e| {
            no_gpu(format_args!(
                "libcuda is present but the driver does not initialise ({e}): is the NVIDIA kernel module \
                 loaded and a GPU visible (`nvidia-smi`, CUDA_VISIBLE_DEVICES)?"
            ))
        })?;
        if count <= 0 {
            return Err(no_gpu("libcuda is present but the driver sees no CUDA device"));
        }
        if ordinal >= count as usize {
            return Err(no_gpu(format_args!(
                "libcuda sees {count} CUDA device(s) (ordinals 0..{count}), not device {ordinal}"
            )));
        }
        let ctx = CudaContext::new(ordinal)
            .map_err(|e| no_gpu(format_args!("libcuda cannot open a context on device {ordinal}: {e}")))?;
        let name = ctx.name().map_err(cuda(format_args!("reading the name of device {ordinal}")))?;
        let cc = ctx.compute_capability().map_err(cuda(format_args!("reading the compute capability of {name}")))?;
        let multiprocessors = ctx
            .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(cuda(format_args!("reading the multiprocessor count of {name}")))?;
        let stream = ctx.default_stream();
        let blas = if blas {
            Some(CudaBlas::new(Arc::clone(&stream)).map_err(cuda(format_args!("creating a cuBLAS handle on {name}")))?)
        } else {
            None
        };
        Ok(Device { ctx, stream, blas, ordinal, name, cc, multiprocessors: multiprocessors.max(1) as u32 })
    }

    /// Makes the context current on the calling thread (an optimizer may move between
    /// threads).
    pub fn bind(&self) -> Result<(), RuntimeError> {
        self.ctx.bind_to_thread().map_err(cuda(format_args!("making the context of {} current", self.name)))
    }

    /// Waits for everything queued on the stream.
    pub fn sync(&self, what: &str) -> Result<(), RuntimeError> {
        self.stream.synchronize().map_err(cuda(format_args!("{what} (synchronising {})", self.name)))
    }

    /// A zeroed buffer of `len` elements.
    pub fn zeros<T: DeviceRepr + ValidAsZeroBits>(&self, len: usize, what: &str) -> Result<DevBuf<T>, RuntimeError> {
        let slice = self.stream.alloc_zeros::<T>(len.max(1)).map_err(cuda(format_args!(
            "allocating {} bytes on {} for {what}",
            len.max(1) * std::mem::size_of::<T>(),
            self.name
        )))?;
        Ok(DevBuf { slice, len })
    }

    /// Copies `src` to the start of `dst` (queued on the stream; `src` may be dropped after).
    pub fn upload<T: DeviceRepr>(&self, dst: DevPtr, src: &[T], what: &str) -> Result<(), RuntimeError> {
        if src.len() > dst.len {
            return Err(RuntimeError::Cuda(format!(
                "{what}: {} values do not fit a device buffer of {}",
                src.len(),
                dst.len
            )));
        }
        if src.is_empty() {
            return Ok(());
        }
        // SAFETY: `dst` addresses at least `src.len()` live elements (checked above; see
        // `DevPtr`); a copy from pageable host memory is staged before the call returns, so
        // `src` need not outlive it.
        unsafe { result::memcpy_htod_async(dst.addr, src, self.stream.cu_stream()) }
            .map_err(cuda(format_args!("copying {what} to {}", self.name)))
    }

    /// Copies the first `dst.len()` elements at `src` to the host, and waits for them.
    pub fn download<T: DeviceRepr>(&self, src: DevPtr, dst: &mut [T], what: &str) -> Result<(), RuntimeError> {
        if dst.len() > src.len {
            return Err(RuntimeError::Cuda(format!(
                "{what}: {} values asked of a device buffer of {}",
                dst.len(),
                src.len
            )));
        }
        if dst.is_empty() {
            return Ok(());
        }
        // SAFETY: `src` addresses at least `dst.len()` live elements (checked above); `dst`
        // stays borrowed until the stream is synchronised below.
        unsafe { result::memcpy_dtoh_async(dst, src.addr, self.stream.cu_stream()) }
            .map_err(cuda(format_args!("copying {what} from {}", self.name)))?;
        self.sync(what)
    }

    /// Sets the first `dst.len` elements of `dst` to zero bits.
    pub fn memset_zero<T>(&self, dst: DevPtr, what: &str) -> Result<(), RuntimeError> {
        if dst.len == 0 {
            return Ok(());
        }
        // SAFETY: `dst` addresses `dst.len` live elements of `T`.
        unsafe { result::memset_d8_async(dst.addr, 0, dst.len * std::mem::size_of::<T>(), self.stream.cu_stream()) }
            .map_err(cuda(format_args!("zeroing {what} on {}", self.name)))
    }
}

/// `sm_90` → (9, 0); `sm_100` → (10, 0).
pub fn parse_arch(arch: &str) -> Option<(i32, i32)> {
    let digits = arch.strip_prefix("sm_")?;
    let digits = digits.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    if digits.len() < 2 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (major, minor) = digits.split_at(digits.len() - 1);
    Some((major.parse().ok()?, minor.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arches_parse() {
        assert_eq!(parse_arch("sm_80"), Some((8, 0)));
        assert_eq!(parse_arch("sm_90"), Some((9, 0)));
        assert_eq!(parse_arch("sm_90a"), Some((9, 0)));
        assert_eq!(parse_arch("sm_100"), Some((10, 0)));
        assert_eq!(parse_arch("sm_8"), None);
        assert_eq!(parse_arch("compute_80"), None);
    }
}
