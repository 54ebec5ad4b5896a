//! What the backbone's GPT-NeoX walk ([`CausalBackbone::visit_neox`](crate::CausalBackbone))
//! and the safetensors import and export ([`crate::neox`]) agree on: the kind of each
//! tensor and the visitor called on it. It depends on neither, so that the backbone need
//! not import the NeoX module, which imports the model, which holds the backbone.

use burn::tensor::TensorData;

use crate::error::Result;

/// Where one Hugging Face tensor lives in the backbone, and how it is laid out.
pub(crate) enum Slot {
    /// A `Linear` weight: Hugging Face `[out, in]`, burn `[in, out]`.
    LinearWeight,
    /// A vector (bias, LayerNorm weight or bias).
    Vector,
    /// The token-embedding table `[vocab, H]`, the same in both.
    Embedding,
}

/// Called once per backbone tensor with its Hugging Face name, kind, burn shape and current
/// value; a returned value replaces the tensor.
pub(crate) type NeoxVisitor<'a> =
    dyn FnMut(&str, Slot, &[usize], TensorData) -> Result<Option<TensorData>> + 'a;
