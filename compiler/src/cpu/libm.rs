//! The float32 math functions kernels call for what Cranelift has no instruction for:
//! Rust's own (`exp`, `ln`, `powf`, `%`, `cos`), so results round as the standard library does.

use super::clif::Helper;

extern "C" fn gdc_expf(x: f32) -> f32 {
    x.exp()
}

extern "C" fn gdc_logf(x: f32) -> f32 {
    x.ln()
}

extern "C" fn gdc_powf(x: f32, y: f32) -> f32 {
    x.powf(y)
}

extern "C" fn gdc_fmodf(x: f32, y: f32) -> f32 {
    x % y
}

extern "C" fn gdc_cosf(x: f32) -> f32 {
    x.cos()
}

/// The address the JIT links a helper's symbol to.
pub fn address(h: Helper) -> *const u8 {
    match h {
        Helper::Exp => gdc_expf as *const u8,
        Helper::Log => gdc_logf as *const u8,
        Helper::Pow => gdc_powf as *const u8,
        Helper::Rem => gdc_fmodf as *const u8,
        Helper::Cos => gdc_cosf as *const u8,
    }
}
