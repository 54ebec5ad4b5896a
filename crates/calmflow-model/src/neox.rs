//! GPT-NeoX / Pythia weights in Hugging Face's safetensors layout: import into the
//! backbone, export back to the same tensor names.
//!
//! The backbone *is* a GPT-NeoX stack (parallel residual, partial rotary, fused QKV), so
//! import is a renaming plus a transpose: Hugging Face stores a `Linear` weight as
//! `[out, in]`, burn as `[in, out]`. The fused `query_key_value` output keeps NeoX's
//! per-head interleaving `[heads, 3, head_dim]` (q, k, v of head 0, then of head 1, …),
//! which is exactly how [`CausalSelfAttention`](crate::CausalSelfAttention) splits it.
//! The encoder and decoder have no pretrained counterpart and keep their initialisation;
//! `embed_out` (the language-model head) and buffers such as `rotary_emb.inv_freq` are not
//! used and are reported as ignored. Nothing here touches the network.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::{TensorData, backend::Backend};

use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};
use crate::model::CalmFlowModel;
use crate::model_config::CalmFlowConfig;
use crate::neox_visit::Slot;

/// The fields of a GPT-NeoX `config.json` that define the backbone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NeoxConfig {
    /// Width `H`.
    pub hidden_size: usize,
    /// Number of transformer blocks.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// MLP width (a multiple of `hidden_size`).
    pub intermediate_size: usize,
    /// Fraction of each head's dimensions that rotary embedding rotates.
    #[serde(default = "default_rotary_pct")]
    pub rotary_pct: f64,
    /// Rotary base.
    #[serde(default = "default_rotary_base")]
    pub rotary_emb_base: f64,
    /// LayerNorm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// Whether attention and MLP read the same input (Pythia: true).
    #[serde(default = "yes")]
    pub use_parallel_residual: bool,
    /// Rows of `embed_in`.
    pub vocab_size: usize,
    /// Activation (only the exact `gelu` is supported).
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Whether the attention projections have biases (only `true` is supported).
    #[serde(default = "yes")]
    pub attention_bias: bool,
}

fn default_rotary_pct() -> f64 {
    0.25
}
fn default_rotary_base() -> f64 {
    10000.0
}
fn default_eps() -> f64 {
    1e-5
}
fn yes() -> bool {
    true
}
fn default_act() -> String {
    "gelu".into()
}

fn pretrained(path: &Path, message: impl Into<String>) -> ModelError {
    ModelError::Pretrained {
        path: path.display().to_string(),
        message: message.into(),
    }
}

impl NeoxConfig {
    /// Reads and checks a `config.json`.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| pretrained(path, e.to_string()))?;
        let config: Self = serde_json::from_str(&text)
            .map_err(|e| pretrained(path, format!("not a GPT-NeoX config.json: {e}")))?;
        config.check().map_err(|m| pretrained(path, m))?;
        Ok(config)
    }

    fn check(&self) -> std::result::Result<(), String> {
        if self.hidden_act != "gelu" {
            return Err(format!(
                "hidden_act = {:?}: only the exact \"gelu\" of GPT-NeoX/Pythia is implemented",
                self.hidden_act
            ));
        }
        if !self.attention_bias {
            return Err("attention_bias = false is not supported".into());
        }
        if self.hidden_size == 0 || !self.intermediate_size.is_multiple_of(self.hidden_size) {
            return Err(format!(
                "intermediate_size = {} must be a multiple of hidden_size = {}",
                self.intermediate_size, self.hidden_size
            ));
        }
        Ok(())
    }

    /// A CaLMFlow configuration whose backbone has this shape, for data of dimension
    /// `dim` in `n_space` spatial tokens; the other fields keep their defaults.
    pub fn calmflow_config(&self, dim: usize, n_space: usize) -> CalmFlowConfig {
        let mut c = CalmFlowConfig::new(dim);
        self.apply(&mut c);
        c.n_space = n_space;
        c
    }

    /// Overwrites the backbone fields of `config` with this shape.
    pub fn apply(&self, config: &mut CalmFlowConfig) {
        config.hidden = self.hidden_size;
        config.layers = self.num_hidden_layers;
        config.heads = self.num_attention_heads;
        config.mlp_ratio = self.intermediate_size / self.hidden_size.max(1);
        config.rotary_fraction = self.rotary_pct;
        config.rotary_base = self.rotary_emb_base;
        config.layer_norm_eps = self.layer_norm_eps;
        config.parallel_residual = self.use_parallel_residual;
        config.vocab_size = self.vocab_size;
    }

    /// The GPT-NeoX configuration of `config`'s backbone.
    pub fn from_calmflow(config: &CalmFlowConfig) -> Self {
        Self {
            hidden_size: config.hidden,
            num_hidden_layers: config.layers,
            num_attention_heads: config.heads,
            intermediate_size: config.mlp_ratio * config.hidden,
            rotary_pct: config.rotary_fraction,
            rotary_emb_base: config.rotary_base,
            layer_norm_eps: config.layer_norm_eps,
            use_parallel_residual: config.parallel_residual,
            vocab_size: config.vocab_size,
            hidden_act: default_act(),
            attention_bias: true,
        }
    }
}

/// A local directory holding a pretrained GPT-NeoX checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct NeoxDir {
    /// `model.safetensors` (or the directory's only `.safetensors` file).
    pub weights: PathBuf,
    /// `config.json`.
    pub config: PathBuf,
    /// `tokenizer.json`, when present.
    pub tokenizer: Option<PathBuf>,
}

impl NeoxDir {
    /// Finds the files of a checkpoint directory.
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(pretrained(dir, "is not a directory"));
        }
        let config = dir.join("config.json");
        if !config.is_file() {
            return Err(pretrained(dir, "has no config.json"));
        }
        let weights = dir.join("model.safetensors");
        let weights = if weights.is_file() {
            weights
        } else {
            let found: Vec<PathBuf> = std::fs::read_dir(dir)
                .map_err(|e| pretrained(dir, e.to_string()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
                .collect();
            match found.as_slice() {
                [one] => one.clone(),
                [] => return Err(pretrained(dir, "has no .safetensors file")),
                _ => {
                    return Err(pretrained(
                        dir,
                        "has several .safetensors files and no model.safetensors (sharded \
                         checkpoints are not supported)",
                    ));
                }
            }
        };
        let tokenizer = Some(dir.join("tokenizer.json")).filter(|p| p.is_file());
        Ok(Self {
            weights,
            config,
            tokenizer,
        })
    }
}

/// The Hugging Face names of the backbone's tensors, in file order.
pub fn neox_tensor_names(layers: usize, with_embedding: bool) -> Vec<String> {
    let mut names = Vec::new();
    if with_embedding {
        names.push("gpt_neox.embed_in.weight".to_string());
    }
    for i in 0..layers {
        for part in LAYER_PARTS {
            for kind in ["weight", "bias"] {
                names.push(format!("gpt_neox.layers.{i}.{part}.{kind}"));
            }
        }
    }
    names.push("gpt_neox.final_layer_norm.weight".into());
    names.push("gpt_neox.final_layer_norm.bias".into());
    names
}

const LAYER_PARTS: [&str; 6] = [
    "input_layernorm",
    "post_attention_layernorm",
    "attention.query_key_value",
    "attention.dense",
    "mlp.dense_h_to_4h",
    "mlp.dense_4h_to_h",
];

/// Tensors read from a safetensors file, as `f32` with their shapes.
struct TensorFile {
    path: PathBuf,
    tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
}

impl TensorFile {
    fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| pretrained(path, e.to_string()))?;
        let file = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| pretrained(path, format!("not a safetensors file: {e}")))?;
        let mut tensors = HashMap::new();
        for (name, view) in file.iter() {
            use safetensors::Dtype;
            let data = view.data();
            let values: Vec<f32> = match view.dtype() {
                Dtype::F32 => data
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
                Dtype::F16 => data
                    .chunks_exact(2)
                    .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
                Dtype::BF16 => data
                    .chunks_exact(2)
                    .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
                Dtype::F64 => data
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32)
                    .collect(),
                // Integer buffers (attention masks of old checkpoints) are never weights.
                _ => continue,
            };
            tensors.insert(name.to_string(), (view.shape().to_vec(), values));
        }
        Ok(Self {
            path: path.to_path_buf(),
            tensors,
        })
    }

    /// Takes tensor `name`, checking its shape.
    fn take(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let (actual, values) =
            self.tensors
                .remove(name)
                .ok_or_else(|| ModelError::MissingTensor {
                    path: self.path.display().to_string(),
                    name: name.to_string(),
                })?;
        if actual != shape {
            return Err(ModelError::TensorShape {
                path: self.path.display().to_string(),
                name: name.to_string(),
                expected: format!("{shape:?}"),
                actual: format!("{actual:?}"),
            });
        }
        if let Some(v) = values.iter().find(|v| !v.is_finite()) {
            return Err(pretrained(
                &self.path,
                format!("tensor `{name}` holds a non-finite value ({v})"),
            ));
        }
        Ok(values)
    }
}

/// `rows × cols` row-major → `cols × rows` row-major.
fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    out
}

/// What an import did besides loading weights.
#[derive(Debug, Clone, PartialEq)]
pub struct NeoxImport {
    /// Tensors in the file that the backbone has no place for (`embed_out.weight`, …).
    pub ignored: Vec<String>,
}

impl<B: Backend> CalmFlowModel<B> {
    /// Loads a GPT-NeoX backbone (and `embed_in`, when this model has a token-embedding
    /// table) from a Hugging Face safetensors file. Every expected tensor must be present
    /// with its exact shape; F32, F16, BF16 and F64 files are accepted.
    pub fn load_neox(self, path: &Path, device: &B::Device) -> Result<(Self, NeoxImport)> {
        let mut file = TensorFile::read(path)?;
        let mut model = self;
        model.backbone = model
            .backbone
            .visit_neox(device, &mut |name, slot, shape, _| {
                let values = match slot {
                    Slot::LinearWeight => {
                        let (d_in, d_out) = (shape[0], shape[1]);
                        transpose(&file.take(name, &[d_out, d_in])?, d_out, d_in)
                    }
                    _ => file.take(name, shape)?,
                };
                Ok(Some(TensorData::new(values, shape.to_vec())))
            })?;
        let mut ignored: Vec<String> = file.tensors.into_keys().collect();
        ignored.sort();
        Ok((model, NeoxImport { ignored }))
    }

    /// Writes the backbone (and `embed_in`, if any) as `f32` tensors with the Hugging
    /// Face names, atomically (temp file + rename).
    pub fn save_neox(&self, path: &Path) -> Result<()> {
        let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        let backbone = self.backbone.clone();
        let device = self.devices().into_iter().next().unwrap_or_default();
        backbone.visit_neox(&device, &mut |name, slot, shape, current| {
            let values = current
                .to_vec::<f32>()
                .map_err(|e| pretrained(path, format!("tensor `{name}`: {e:?}")))?;
            let (values, shape) = match slot {
                Slot::LinearWeight => (
                    transpose(&values, shape[0], shape[1]),
                    vec![shape[1], shape[0]],
                ),
                _ => (values, shape.to_vec()),
            };
            let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            tensors.push((name.to_string(), shape, bytes));
            Ok(None)
        })?;
        let views = tensors
            .iter()
            .map(|(name, shape, bytes)| {
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                    .map(|v| (name.clone(), v))
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| pretrained(path, e.to_string()))?;
        let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
        let bytes = safetensors::serialize(views, Some(metadata))
            .map_err(|e| pretrained(path, e.to_string()))?;
        crate::record_file::write_bytes_atomically(path, &bytes)
    }
}

/// Writes `config.json` for the backbone of `config` (GPT-NeoX keys), atomically.
pub fn save_neox_config(config: &CalmFlowConfig, path: &Path) -> Result<()> {
    let neox = NeoxConfig::from_calmflow(config);
    let mut json = serde_json::to_value(&neox).map_err(|e| pretrained(path, e.to_string()))?;
    if let Some(map) = json.as_object_mut() {
        map.insert("model_type".into(), "gpt_neox".into());
        map.insert(
            "architectures".into(),
            serde_json::json!(["GPTNeoXForCausalLM"]),
        );
        map.insert("torch_dtype".into(), "float32".into());
    }
    let text = serde_json::to_string_pretty(&json).map_err(|e| pretrained(path, e.to_string()))?;
    crate::record_file::write_bytes_atomically(path, text.as_bytes())
}
