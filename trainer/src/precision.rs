//! Mixed-precision autocast with a chosen type per device.
//!
//! `tch::autocast` switches CUDA autocast on with libtorch's default type,
//! fp16, which needs loss scaling and is not the paper's setting. The paper
//! trains under bf16 autocast; this module sets the type through a small C++
//! shim over libtorch (csrc/autocast.cpp) and works on CPU too, which is what
//! lets the tests check it on a machine without a GPU.

use tch::Device;

extern "C" {
    fn vitrine_autocast_dtype(device: i32) -> i32;
    fn vitrine_set_autocast_dtype(device: i32, dtype: i32);
    fn vitrine_autocast_enabled(device: i32) -> bool;
    fn vitrine_set_autocast_enabled(device: i32, enabled: bool);
    fn vitrine_autocast_increment_nesting() -> i32;
    fn vitrine_autocast_decrement_nesting();
}

/// The reduced-precision type autocast computes matmuls and convolutions in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HalfKind {
    Bf16,
    Fp16,
}

impl HalfKind {
    /// libtorch's `c10::ScalarType` code.
    fn scalar_type(self) -> i32 {
        match self {
            HalfKind::Fp16 => 5,
            HalfKind::Bf16 => 15,
        }
    }

    pub fn kind(self) -> tch::Kind {
        match self {
            HalfKind::Fp16 => tch::Kind::Half,
            HalfKind::Bf16 => tch::Kind::BFloat16,
        }
    }
}

fn device_code(device: Device) -> i32 {
    if device.is_cuda() {
        1
    } else {
        0
    }
}

/// The type autocast uses on `device`'s kind of device (this thread).
pub fn autocast_kind(device: Device) -> Option<HalfKind> {
    match unsafe { vitrine_autocast_dtype(device_code(device)) } {
        5 => Some(HalfKind::Fp16),
        15 => Some(HalfKind::Bf16),
        _ => None,
    }
}

/// Runs `f` with autocast to `kind` on `device`'s kind of device (or without
/// autocast when `kind` is `None`), restoring the previous state afterwards.
/// Parameters stay f32; only activations change type.
pub fn autocast<T>(device: Device, kind: Option<HalfKind>, f: impl FnOnce() -> T) -> T {
    let Some(kind) = kind else { return f() };
    let code = device_code(device);
    // Safety: the shim only reads and writes libtorch's thread-local autocast state.
    let (was_enabled, previous_type) = unsafe { (vitrine_autocast_enabled(code), vitrine_autocast_dtype(code)) };
    unsafe {
        vitrine_set_autocast_dtype(code, kind.scalar_type());
        vitrine_set_autocast_enabled(code, true);
        vitrine_autocast_increment_nesting();
    }
    let result = f();
    unsafe {
        vitrine_autocast_decrement_nesting();
        vitrine_set_autocast_enabled(code, was_enabled);
        vitrine_set_autocast_dtype(code, previous_type);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Kind, Tensor};

    #[test]
    fn matmul_runs_in_the_chosen_type_inside_and_f32_outside() {
        let a = Tensor::randn([4, 8], (Kind::Float, Device::Cpu));
        let b = Tensor::randn([8, 3], (Kind::Float, Device::Cpu));
        for kind in [HalfKind::Bf16, HalfKind::Fp16] {
            let inside = autocast(Device::Cpu, Some(kind), || a.matmul(&b));
            assert_eq!(inside.kind(), kind.kind());
            let reference = a.matmul(&b);
            assert_eq!(reference.kind(), Kind::Float);
            let error = (inside.to_kind(Kind::Float) - &reference).abs().max().double_value(&[]);
            assert!(error < 0.1, "{kind:?} matmul differs from f32 by {error}");
        }
        assert_eq!(autocast(Device::Cpu, None, || a.matmul(&b)).kind(), Kind::Float);
    }

    #[test]
    fn cuda_type_is_set_inside_and_restored_after() {
        let cuda = Device::Cuda(0);
        let before = autocast_kind(cuda);
        let inside = autocast(cuda, Some(HalfKind::Bf16), || autocast_kind(cuda));
        assert_eq!(inside, Some(HalfKind::Bf16));
        assert_eq!(autocast_kind(cuda), before);
    }
}
