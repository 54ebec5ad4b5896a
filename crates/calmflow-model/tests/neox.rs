//! GPT-NeoX safetensors import/export, checked against an independent plain-Rust GPT-NeoX
//! forward pass built from hand-made Q, K and V matrices that are interleaved into Hugging
//! Face's `[heads, 3, head_dim]` layout here, not by the library.

mod backend;

use std::collections::HashMap;
use std::path::Path;

use burn::tensor::{Int, Tensor, TensorData};
use calmflow_model::neox::{NeoxConfig, NeoxDir, neox_tensor_names, save_neox_config};
use calmflow_model::{CalmFlowModel, ModelError};

type B = backend::TestBackend;

const H: usize = 8;
const HEADS: usize = 2;
const HD: usize = H / HEADS;
const LAYERS: usize = 2;
const INTER: usize = 4 * H;
const VOCAB: usize = 11;
const ROT_PCT: f64 = 0.5;
const BASE: f64 = 10000.0;
const EPS: f64 = 1e-5;

/// A deterministic stream of values in [-scale, scale].
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, scale: f64) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * scale
    }
    fn vec(&mut self, n: usize, scale: f64) -> Vec<f64> {
        (0..n).map(|_| self.next(scale)).collect()
    }
}

/// One layer's weights in the reference's own terms (`[out][in]` matrices).
struct RefLayer {
    ln1: (Vec<f64>, Vec<f64>),
    ln2: (Vec<f64>, Vec<f64>),
    /// `q[h]`: head `h`'s `HD × H` query projection (and its bias), likewise k, v.
    q: Vec<(Vec<f64>, Vec<f64>)>,
    k: Vec<(Vec<f64>, Vec<f64>)>,
    v: Vec<(Vec<f64>, Vec<f64>)>,
    dense: (Vec<f64>, Vec<f64>),
    up: (Vec<f64>, Vec<f64>),
    down: (Vec<f64>, Vec<f64>),
}

struct Reference {
    embed: Vec<f64>,
    layers: Vec<RefLayer>,
    final_ln: (Vec<f64>, Vec<f64>),
}

fn reference(seed: u64) -> Reference {
    let mut r = Lcg(seed);
    let ln = |r: &mut Lcg| ((0..H).map(|_| 1.0 + r.next(0.2)).collect(), r.vec(H, 0.1));
    let heads = |r: &mut Lcg| {
        (0..HEADS)
            .map(|_| (r.vec(HD * H, 0.5), r.vec(HD, 0.1)))
            .collect()
    };
    Reference {
        embed: r.vec(VOCAB * H, 1.0),
        layers: (0..LAYERS)
            .map(|_| RefLayer {
                ln1: ln(&mut r),
                ln2: ln(&mut r),
                q: heads(&mut r),
                k: heads(&mut r),
                v: heads(&mut r),
                dense: (r.vec(H * H, 0.3), r.vec(H, 0.1)),
                up: (r.vec(INTER * H, 0.3), r.vec(INTER, 0.1)),
                down: (r.vec(H * INTER, 0.2), r.vec(H, 0.1)),
            })
            .collect(),
        final_ln: ln(&mut r),
    }
}

/// The Hugging Face tensors of `reference`, with `query_key_value` interleaved per head as
/// GPT-NeoX does: output row `h·3·HD + j·HD + d` is row `d` of part `j ∈ {q, k, v}` of head `h`.
fn hf_tensors(r: &Reference) -> Vec<(String, Vec<usize>, Vec<f64>)> {
    let mut t = vec![(
        "gpt_neox.embed_in.weight".to_string(),
        vec![VOCAB, H],
        r.embed.clone(),
    )];
    for (i, l) in r.layers.iter().enumerate() {
        let p = format!("gpt_neox.layers.{i}");
        let mut qkv_w = vec![0.0; 3 * H * H];
        let mut qkv_b = vec![0.0; 3 * H];
        for h in 0..HEADS {
            for (j, part) in [&l.q, &l.k, &l.v].into_iter().enumerate() {
                for d in 0..HD {
                    let row = h * 3 * HD + j * HD + d;
                    qkv_w[row * H..(row + 1) * H].copy_from_slice(&part[h].0[d * H..(d + 1) * H]);
                    qkv_b[row] = part[h].1[d];
                }
            }
        }
        for (name, (w, b), shape) in [
            ("input_layernorm", &l.ln1, None),
            ("post_attention_layernorm", &l.ln2, None),
            (
                "attention.query_key_value",
                &(qkv_w, qkv_b),
                Some([3 * H, H]),
            ),
            ("attention.dense", &l.dense, Some([H, H])),
            ("mlp.dense_h_to_4h", &l.up, Some([INTER, H])),
            ("mlp.dense_4h_to_h", &l.down, Some([H, INTER])),
        ] {
            let wshape = shape.map_or(vec![w.len()], |s| s.to_vec());
            t.push((format!("{p}.{name}.weight"), wshape, w.clone()));
            t.push((format!("{p}.{name}.bias"), vec![b.len()], b.clone()));
        }
    }
    t.push((
        "gpt_neox.final_layer_norm.weight".into(),
        vec![H],
        r.final_ln.0.clone(),
    ));
    t.push((
        "gpt_neox.final_layer_norm.bias".into(),
        vec![H],
        r.final_ln.1.clone(),
    ));
    t
}

#[derive(Clone, Copy)]
enum Precision {
    F32,
    F16,
}

fn write_safetensors(path: &Path, tensors: &[(String, Vec<usize>, Vec<f64>)], p: Precision) {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, s, v)| {
            let b = match p {
                Precision::F32 => v.iter().flat_map(|&x| (x as f32).to_le_bytes()).collect(),
                Precision::F16 => v
                    .iter()
                    .flat_map(|&x| half::f16::from_f64(x).to_le_bytes())
                    .collect(),
            };
            (n.clone(), s.clone(), b)
        })
        .collect();
    let dtype = match p {
        Precision::F32 => safetensors::Dtype::F32,
        Precision::F16 => safetensors::Dtype::F16,
    };
    let views: Vec<_> = bytes
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(dtype, s.clone(), b).unwrap(),
            )
        })
        .collect();
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

fn config_json() -> serde_json::Value {
    serde_json::json!({
        "architectures": ["GPTNeoXForCausalLM"], "model_type": "gpt_neox",
        "hidden_size": H, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
        "intermediate_size": INTER, "rotary_pct": ROT_PCT, "rotary_emb_base": BASE,
        "layer_norm_eps": EPS, "use_parallel_residual": true, "vocab_size": VOCAB,
        "hidden_act": "gelu", "max_position_embeddings": 2048, "tie_word_embeddings": false
    })
}

fn layer_norm(x: &[f64], (g, b): &(Vec<f64>, Vec<f64>)) -> Vec<f64> {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    x.iter()
        .enumerate()
        .map(|(i, v)| (v - mean) / (var + EPS).sqrt() * g[i] + b[i])
        .collect()
}

fn affine(x: &[f64], (w, b): &(Vec<f64>, Vec<f64>)) -> Vec<f64> {
    let n_in = x.len();
    b.iter()
        .enumerate()
        .map(|(o, bo)| bo + (0..n_in).map(|i| w[o * n_in + i] * x[i]).sum::<f64>())
        .collect()
}

/// erf by Abramowitz–Stegun 7.1.26 (|error| < 1.5e-7).
fn erf(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.3275911 * x.abs());
    let y = 1.0
        - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t
            + 0.254829592)
            * t
            * (-x * x).exp();
    y.copysign(x)
}

fn rotary(v: &[f64], pos: usize) -> Vec<f64> {
    let rot = (HD as f64 * ROT_PCT) as usize;
    let half = rot / 2;
    let mut out = v.to_vec();
    for i in 0..rot {
        let angle = pos as f64 / BASE.powf(2.0 * (i % half) as f64 / rot as f64);
        let rotated = if i < half { -v[i + half] } else { v[i - half] };
        out[i] = v[i] * angle.cos() + rotated * angle.sin();
    }
    out
}

/// GPT-NeoX (parallel residual) on hidden states `x[t]`, causal.
fn reference_forward(r: &Reference, x: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let mut h: Vec<Vec<f64>> = x.to_vec();
    for l in &r.layers {
        let a: Vec<Vec<f64>> = h.iter().map(|v| layer_norm(v, &l.ln1)).collect();
        let proj = |w: &Vec<(Vec<f64>, Vec<f64>)>, head: usize, t: usize| affine(&a[t], &w[head]);
        let mut attn_out = vec![vec![0.0; H]; h.len()];
        for head in 0..HEADS {
            for (t, out) in attn_out.iter_mut().enumerate() {
                let q = rotary(&proj(&l.q, head, t), t);
                let scores: Vec<f64> = (0..=t)
                    .map(|s| {
                        let k = rotary(&proj(&l.k, head, s), s);
                        q.iter().zip(&k).map(|(a, b)| a * b).sum::<f64>() / (HD as f64).sqrt()
                    })
                    .collect();
                let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for (s, w) in e.iter().enumerate() {
                    let v = proj(&l.v, head, s);
                    for d in 0..HD {
                        out[head * HD + d] += w / z * v[d];
                    }
                }
            }
        }
        h = h
            .iter()
            .enumerate()
            .map(|(t, v)| {
                let attn = affine(&attn_out[t], &l.dense);
                let up: Vec<f64> = affine(&layer_norm(v, &l.ln2), &l.up)
                    .iter()
                    .map(|u| 0.5 * u * (1.0 + erf(u / std::f64::consts::SQRT_2)))
                    .collect();
                let mlp = affine(&up, &l.down);
                (0..H).map(|i| v[i] + attn[i] + mlp[i]).collect()
            })
            .collect();
    }
    h.iter().map(|v| layer_norm(v, &r.final_ln)).collect()
}

fn fresh_model(seed: u64) -> CalmFlowModel<B> {
    let neox: NeoxConfig = serde_json::from_value(config_json()).unwrap();
    let mut config = neox.calmflow_config(3, 1);
    config.dropout = 0.0;
    <B as burn::tensor::backend::Backend>::seed(&Default::default(), seed);
    config.init::<B>(&Default::default()).unwrap()
}

fn backbone_output(model: &CalmFlowModel<B>, x: &[Vec<f64>]) -> Vec<f32> {
    let flat: Vec<f32> = x.iter().flatten().map(|&v| v as f32).collect();
    let input =
        Tensor::<B, 3>::from_data(TensorData::new(flat, [1, x.len(), H]), &Default::default());
    model
        .backbone()
        .forward(input, None, None, None)
        .into_data()
        .to_vec()
        .unwrap()
}

fn write_dir(dir: &Path, tensors: &[(String, Vec<usize>, Vec<f64>)], p: Precision) {
    write_safetensors(&dir.join("model.safetensors"), tensors, p);
    std::fs::write(dir.join("config.json"), config_json().to_string()).unwrap();
}

#[test]
fn imported_backbone_matches_an_independent_gpt_neox_forward() {
    let r = reference(42);
    let mut tensors = hf_tensors(&r);
    // Tensors a Pythia file has that the backbone does not use.
    tensors.push((
        "embed_out.weight".into(),
        vec![VOCAB, H],
        vec![0.5; VOCAB * H],
    ));
    tensors.push((
        "gpt_neox.layers.0.attention.rotary_emb.inv_freq".into(),
        vec![1],
        vec![1.0],
    ));
    let x: Vec<Vec<f64>> = (0..6).map(|t| Lcg(t as u64 + 7).vec(H, 1.0)).collect();
    let expected: Vec<f64> = reference_forward(&r, &x).concat();
    for (precision, tol) in [(Precision::F32, 2e-5), (Precision::F16, 2e-2)] {
        let dir = tempfile::tempdir().unwrap();
        write_dir(dir.path(), &tensors, precision);
        let found = NeoxDir::open(dir.path()).unwrap();
        assert_eq!(found.tokenizer, None);
        let neox = NeoxConfig::read(&found.config).unwrap();
        assert_eq!((neox.hidden_size, neox.vocab_size), (H, VOCAB));
        let (model, report) = fresh_model(1)
            .load_neox(&found.weights, &Default::default())
            .unwrap();
        assert_eq!(
            report.ignored,
            [
                "embed_out.weight",
                "gpt_neox.layers.0.attention.rotary_emb.inv_freq"
            ]
        );
        let got = backbone_output(&model, &x);
        let worst = got
            .iter()
            .zip(&expected)
            .map(|(a, b)| (*a as f64 - b).abs())
            .fold(0.0, f64::max);
        assert!(worst < tol, "max |Δ| = {worst:e}");
        // Prompt embedding reads rows of embed_in.
        let ids = Tensor::<B, 2, Int>::from_data(
            TensorData::new(vec![3i64, 10], [1, 2]),
            &Default::default(),
        );
        let e: Vec<f32> = model
            .embed_prompt(ids, None)
            .unwrap()
            .embeddings
            .into_data()
            .to_vec()
            .unwrap();
        for (k, id) in [3usize, 10].into_iter().enumerate() {
            for i in 0..H {
                assert!((e[k * H + i] as f64 - r.embed[id * H + i]).abs() < tol);
            }
        }
    }
}

#[test]
fn export_then_import_gives_identical_outputs_and_tensors() {
    let r = reference(7);
    let dir = tempfile::tempdir().unwrap();
    write_dir(dir.path(), &hf_tensors(&r), Precision::F32);
    let (model, _) = fresh_model(1)
        .load_neox(&dir.path().join("model.safetensors"), &Default::default())
        .unwrap();
    let out = tempfile::tempdir().unwrap();
    model
        .save_neox(&out.path().join("model.safetensors"))
        .unwrap();
    let neox: NeoxConfig = serde_json::from_value(config_json()).unwrap();
    let mut config = neox.calmflow_config(3, 1);
    config.dropout = 0.0;
    save_neox_config(&config, &out.path().join("config.json")).unwrap();
    assert_eq!(
        NeoxConfig::read(&out.path().join("config.json")).unwrap(),
        neox
    );

    let bytes = std::fs::read(out.path().join("model.safetensors")).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<&str> = file.names();
    names.sort_unstable();
    let mut expected = neox_tensor_names(LAYERS, true);
    expected.sort();
    assert_eq!(names, expected);
    let original: HashMap<String, Vec<f64>> =
        hf_tensors(&r).into_iter().map(|(n, _, v)| (n, v)).collect();
    for name in &expected {
        let view = file.tensor(name).unwrap();
        let values: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let want: Vec<f32> = original[name].iter().map(|&v| v as f32).collect();
        assert_eq!(values, want, "{name}");
    }

    let (again, report) = fresh_model(99)
        .load_neox(&out.path().join("model.safetensors"), &Default::default())
        .unwrap();
    assert!(report.ignored.is_empty());
    let x: Vec<Vec<f64>> = (0..4).map(|t| Lcg(t as u64).vec(H, 1.0)).collect();
    assert_eq!(backbone_output(&model, &x), backbone_output(&again, &x));
}

#[test]
fn missing_misshapen_and_unsupported_inputs_are_typed_errors() {
    let r = reference(3);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let mut tensors = hf_tensors(&r);
    tensors.retain(|(n, _, _)| n != "gpt_neox.layers.1.mlp.dense_4h_to_h.bias");
    write_safetensors(&path, &tensors, Precision::F32);
    match fresh_model(0).load_neox(&path, &Default::default()) {
        Err(ModelError::MissingTensor { name, .. }) => {
            assert_eq!(name, "gpt_neox.layers.1.mlp.dense_4h_to_h.bias")
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
    let mut tensors = hf_tensors(&r);
    let qkv = tensors
        .iter_mut()
        .find(|(n, _, _)| n == "gpt_neox.layers.0.attention.query_key_value.weight")
        .unwrap();
    qkv.1 = vec![H, 3 * H]; // transposed: a GPT-2 style layout
    write_safetensors(&path, &tensors, Precision::F32);
    let e = fresh_model(0)
        .load_neox(&path, &Default::default())
        .err()
        .unwrap();
    assert!(
        matches!(&e, ModelError::TensorShape { name, expected, .. }
            if name.ends_with("query_key_value.weight") && expected == "[24, 8]"),
        "{e}"
    );
    std::fs::write(&path, b"not safetensors").unwrap();
    assert!(matches!(
        fresh_model(0).load_neox(&path, &Default::default()),
        Err(ModelError::Pretrained { .. })
    ));
    let mut config = config_json();
    config["hidden_act"] = "relu".into();
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    let e = NeoxConfig::read(&dir.path().join("config.json"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("hidden_act"), "{e}");
    assert!(NeoxDir::open(&dir.path().join("absent")).is_err());
    std::fs::remove_file(&path).unwrap();
    assert!(
        NeoxDir::open(dir.path())
            .unwrap_err()
            .to_string()
            .contains("no .safetensors")
    );
}
