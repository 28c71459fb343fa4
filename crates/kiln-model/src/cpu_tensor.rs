//! The flex tensors behind burn's `Tensor`, for kiln's own CPU kernels (`cpu_matmul.rs`,
//! `cpu_attention.rs`). burn's `extension` feature hands them out; the kernels read their f32
//! storage and hand a plain `Tensor` back.

use burn::backend::Flex;
use burn::backend::flex::FlexTensor;
use burn::prelude::*;
use burn::tensor::DType;

/// The flex primitive of an f32 tensor without autodiff (a cheap handle: the storage is shared),
/// in whatever layout it has; `None` for anything else (the caller keeps burn's op).
pub(crate) fn inference_f32<const D: usize>(t: &Tensor<D>) -> Option<FlexTensor> {
    if t.is_autodiff() || t.dtype() != DType::F32 || t.device().inner() != Device::flex() {
        return None;
    }
    t.clone().try_into_primitive::<Flex>().ok()
}

/// [`inference_f32`], laid out row-major from the start of its storage (copied if it was not).
pub(crate) fn contiguous_f32<const D: usize>(t: &Tensor<D>) -> Option<FlexTensor> {
    inference_f32(t).map(contiguous)
}

/// The same tensor, row-major from the start of its storage (copied if it was not).
pub(crate) fn contiguous(t: FlexTensor) -> FlexTensor {
    if t.is_contiguous() && t.layout().start_offset() == 0 {
        t
    } else {
        t.to_contiguous()
    }
}

/// A kernel's output as a burn tensor on flex (the vector becomes its storage, no copy).
pub(crate) fn from_f32<const D: usize>(data: Vec<f32>, shape: [usize; D]) -> Tensor<D> {
    Tensor::from_primitive::<Flex>(FlexTensor::from_data(TensorData::new(data, shape)))
}

/// Whether two handles view the same storage the same way: a packed copy of one is a copy of
/// the other.
pub(crate) fn same_view(a: &FlexTensor, b: &FlexTensor) -> bool {
    a.bytes().as_ptr() == b.bytes().as_ptr()
        && a.bytes().len() == b.bytes().len()
        && a.layout().start_offset() == b.layout().start_offset()
        && a.layout().strides() == b.layout().strides()
        && a.layout().shape() == b.layout().shape()
}

/// Tests: the largest absolute difference between two tensors.
#[cfg(test)]
pub(crate) fn max_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
    (a - b).abs().max().into_scalar::<f32>()
}
