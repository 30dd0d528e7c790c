//! Named tensors of a safetensors file, checked against the shapes the model
//! expects and handed out as candle tensors (f32) or int8 values.

use candle_core::safetensors::Load;
use candle_core::{DType, Device, Tensor};
use safetensors::{Dtype, SafeTensors};

use super::ModelError;

/// The tensors of one safetensors file (borrowed, not copied until asked for).
pub struct Weights<'a> {
    tensors: SafeTensors<'a>,
    origin: String,
    device: Device,
}

impl<'a> Weights<'a> {
    /// Parses the header of a safetensors file; `origin` names it in errors.
    pub fn from_bytes(bytes: &'a [u8], origin: &str) -> Result<Self, ModelError> {
        let tensors =
            SafeTensors::deserialize(bytes).map_err(|e| ModelError::Safetensors { origin: origin.to_string(), reason: e.to_string() })?;
        Ok(Weights { tensors, origin: origin.to_string(), device: Device::Cpu })
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.tensor(name).is_ok()
    }

    /// Every tensor name in the file.
    pub fn names(&self) -> Vec<String> {
        self.tensors.names().into_iter().map(str::to_string).collect()
    }

    fn view(&self, name: &str, shape: &[usize]) -> Result<safetensors::tensor::TensorView<'_>, ModelError> {
        let view = self.tensors.tensor(name).map_err(|_| self.missing(name))?;
        if view.shape() != shape {
            return Err(ModelError::Shape {
                origin: self.origin.clone(),
                name: name.to_string(),
                expected: shape.to_vec(),
                found: view.shape().to_vec(),
            });
        }
        Ok(view)
    }

    pub(crate) fn missing(&self, name: &str) -> ModelError {
        ModelError::MissingTensor { origin: self.origin.clone(), name: name.to_string() }
    }

    fn dtype_error(&self, name: &str, expected: &str, found: Dtype) -> ModelError {
        ModelError::Dtype {
            origin: self.origin.clone(),
            name: name.to_string(),
            expected: expected.to_string(),
            found: format!("{found:?}"),
        }
    }

    /// The float tensor `name` of exactly `shape`, as f32 (f16, bf16 and f64
    /// files are converted).
    pub fn f32(&self, name: &str, shape: &[usize]) -> Result<Tensor, ModelError> {
        let view = self.view(name, shape)?;
        if !matches!(view.dtype(), Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::F64) {
            return Err(self.dtype_error(name, "a float type", view.dtype()));
        }
        Ok(view.load(&self.device)?.to_dtype(DType::F32)?)
    }

    /// The bytes of the u8 tensor `name` of exactly `shape` (row-major).
    pub fn u8(&self, name: &str, shape: &[usize]) -> Result<&[u8], ModelError> {
        let view = self.view(name, shape)?;
        if view.dtype() != Dtype::U8 {
            return Err(self.dtype_error(name, "U8", view.dtype()));
        }
        Ok(view.data())
    }

    /// The values of the int8 tensor `name` of exactly `shape` (row-major).
    pub fn int8(&self, name: &str, shape: &[usize]) -> Result<Vec<i8>, ModelError> {
        let view = self.view(name, shape)?;
        if view.dtype() != Dtype::I8 {
            return Err(self.dtype_error(name, "I8", view.dtype()));
        }
        Ok(view.data().iter().map(|&b| b as i8).collect())
    }
}
