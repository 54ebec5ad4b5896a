//! The valid files each target's inputs are mutated from: written by the project's own
//! writers, or the anndata-written fixtures committed with `calmflow-data`.

use std::io::Write as _;
use std::path::Path;

use calmflow::backend::Cpu;
use calmflow::data::npy::{encode_npy, encode_npy_nd};
use calmflow::model::CalmFlowConfig;
use ndarray::{Array2, ArrayD, IxDyn};

use crate::Target;

/// A word-level Hugging Face tokenizer with a padding token.
const TOKENIZER_JSON: &str = r#"{
  "version": "1.0",
  "truncation": null,
  "padding": null,
  "added_tokens": [{"id": 0, "content": "[PAD]", "single_word": false, "lstrip": false,
    "rstrip": false, "normalized": false, "special": true}],
  "normalizer": {"type": "Lowercase"},
  "pre_tokenizer": {"type": "Whitespace"},
  "post_processor": null,
  "decoder": null,
  "model": {"type": "WordLevel", "vocab": {"[PAD]": 0, "[UNK]": 1, "cd4": 2, "t": 3,
    "cell": 4, "treated": 5, "with": 6, "ifn": 7}, "unk_token": "[UNK]"}
}"#;

/// A run configuration as a user writes one.
const CONFIG_TOML: &str = r#"[data]
source = "normal"
target = "moons"
dim = 2

[model]
hidden = 32
layers = 2
head = "flow"

[flow]
n_times = 4
rollout_fraction = 0.5

[flow.path]
noise = "bridge"
sigma = 0.3

[train]
steps = 10
batch_size = 16
"#;

fn matrix(rows: usize, cols: usize) -> Array2<f32> {
    Array2::from_shape_fn((rows, cols), |(i, j)| (i * cols + j) as f32 * 0.5 - 1.0)
}

fn npz(members: &[(&str, Vec<u8>, bool)]) -> Vec<u8> {
    use zip::write::SimpleFileOptions;
    let mut cursor = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut cursor);
        for (name, bytes, deflated) in members {
            let method = if *deflated {
                zip::CompressionMethod::Deflated
            } else {
                zip::CompressionMethod::Stored
            };
            let options = SimpleFileOptions::default().compression_method(method);
            let written = zip
                .start_file(*name, options)
                .and_then(|()| zip.write_all(bytes).map_err(Into::into));
            if let Err(e) = written {
                panic!("the fuzzer's .npz seed cannot be written: {e}");
            }
        }
        if let Err(e) = zip.finish() {
            panic!("the fuzzer's .npz seed cannot be written: {e}");
        }
    }
    cursor.into_inner()
}

/// A 6-cell × 4-gene `.h5ad` laid out as anndata writes it, with `X` in gzip-compressed
/// chunks (deflate and shuffle, as `h5py`'s `compression="gzip", shuffle=True`) and a
/// categorical `obs` column.
fn gzip_h5ad() -> Vec<u8> {
    use hdf5_writer::{
        AttributeBuilder, DatasetBuilder, FILTER_DEFLATE, FILTER_SHUFFLE, FilterDescription,
        Hdf5Builder, WriteOptions,
    };
    let fail = |e: hdf5_writer::Error| -> ! { panic!("the fuzzer's gzip seed: {e}") };
    let text = |name: &str, value: &str| {
        AttributeBuilder::vlen_strings(name, &[value]).unwrap_or_else(|e| fail(e))
    };
    let encoded = |ds: DatasetBuilder, kind: &str| {
        ds.attribute(text("encoding-type", kind))
            .attribute(text("encoding-version", "0.2.0"))
    };
    let filter = |id, client_data| FilterDescription {
        id,
        name: None,
        client_data,
    };
    let x: Vec<f32> = (0..24).map(|v| v as f32 * 0.25).collect();
    let cells = ["c0", "c1", "c2", "c3", "c4", "c5"];
    let genes = ["g0", "g1", "g2", "g3"];
    let mut b = Hdf5Builder::new().dataset(encoded(
        DatasetBuilder::typed_data("X", [6, 4], &x)
            .unwrap_or_else(|e| fail(e))
            .chunked([3, 4])
            .filter(filter(FILTER_SHUFFLE, vec![]))
            .filter(filter(FILTER_DEFLATE, vec![4])),
        "array",
    ));
    for (frame, index, columns) in [
        ("obs", &cells[..], &["kind"][..]),
        ("var", &genes[..], &[][..]),
    ] {
        b = b
            .group_attribute(frame, text("encoding-type", "dataframe"))
            .group_attribute(frame, text("encoding-version", "0.2.0"))
            .group_attribute(frame, text("_index", "_index"));
        if !columns.is_empty() {
            b = b.group_attribute(
                frame,
                AttributeBuilder::vlen_strings("column-order", columns).unwrap_or_else(|e| fail(e)),
            );
        }
        b = b.dataset(encoded(
            DatasetBuilder::vlen_string_data(
                format!("{frame}/_index"),
                [index.len() as u64],
                index,
            )
            .unwrap_or_else(|e| fail(e)),
            "string-array",
        ));
    }
    b = b
        .group_attribute("obs/kind", text("encoding-type", "categorical"))
        .group_attribute("obs/kind", text("encoding-version", "0.2.0"))
        .dataset(encoded(
            DatasetBuilder::typed_data("obs/kind/codes", [6], &[0i8, 1, 1, 0, 1, 0])
                .unwrap_or_else(|e| fail(e)),
            "array",
        ))
        .dataset(encoded(
            DatasetBuilder::vlen_string_data("obs/kind/categories", [2], &["B", "T"])
                .unwrap_or_else(|e| fail(e)),
            "string-array",
        ));
    b.into_plan()
        .and_then(|plan| plan.encode(WriteOptions::default()))
        .unwrap_or_else(|e| fail(e))
}

/// A file written by `write` into a scratch folder, read back.
fn written(write: impl FnOnce(&Path) -> Result<(), String>) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("no scratch folder: {e}"));
    let path = dir.path().join("seed");
    write(&path).unwrap_or_else(|e| panic!("the fuzzer's seed cannot be written: {e}"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("the fuzzer's seed cannot be read: {e}"))
}

fn fixture(relative: &str) -> (String, Vec<u8>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative);
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("the fuzzer's seed {} cannot be read: {e}", path.display()));
    let name = relative.rsplit('/').next().unwrap_or(relative).to_string();
    (name, bytes)
}

pub(crate) fn seeds(target: Target, tiny: &CalmFlowConfig) -> Vec<(String, Vec<u8>)> {
    let named = |name: &str, bytes: Vec<u8>| (name.to_string(), bytes);
    match target {
        Target::Npy => vec![
            named("2x3.npy", encode_npy(matrix(2, 3).view())),
            named("16x5.npy", encode_npy(matrix(16, 5).view())),
            named(
                "3d.npy",
                encode_npy_nd(
                    ArrayD::from_shape_vec(IxDyn(&[2, 2, 3]), (0..12).map(|v| v as f32).collect())
                        .unwrap_or_else(|e| panic!("{e}"))
                        .view(),
                ),
            ),
        ],
        Target::Npz => vec![
            named(
                "stored.npz",
                npz(&[("x.npy", encode_npy(matrix(4, 3).view()), false)]),
            ),
            named(
                "two-members.npz",
                npz(&[
                    ("x.npy", encode_npy(matrix(2, 2).view()), false),
                    ("y.npy", encode_npy(matrix(8, 2).view()), true),
                ]),
            ),
        ],
        Target::Csv => vec![
            named("header.csv", b"x,y,z\n1,2,3\n4.5,-6,7e-3\n".to_vec()),
            named("plain.csv", b"1,2\n3,4\n5,6\n".to_vec()),
            named("whitespace.txt", b"1 2 3\n\t4 5 6\n".to_vec()),
            named("quoted.csv", b"\"a\",\"b\"\n1,2\n".to_vec()),
        ],
        Target::H5ad => [
            "categories_obsm.h5ad",
            "csr_lzf.h5ad",
            "float16.h5ad",
            "lzf.h5ad",
            "nullable_strings.h5ad",
            "sparse_layer.h5ad",
        ]
        .iter()
        .map(|f| fixture(&format!("crates/calmflow-data/tests/fixtures/anndata/{f}")))
        .chain([named("gzip.h5ad", gzip_h5ad())])
        .collect(),
        Target::Safetensors => {
            let model = tiny
                .init::<Cpu>(&Default::default())
                .unwrap_or_else(|e| panic!("{e}"));
            vec![named(
                "model.safetensors",
                written(|p| model.save_neox(p).map_err(|e| e.to_string())),
            )]
        }
        Target::NeoxConfig => vec![named(
            "config.json",
            written(|p| {
                calmflow::model::neox::save_neox_config(tiny, p).map_err(|e| e.to_string())
            }),
        )],
        Target::Tokenizer => vec![named("tokenizer.json", TOKENIZER_JSON.as_bytes().to_vec())],
        Target::Config => vec![
            named("run.toml", CONFIG_TOML.as_bytes().to_vec()),
            named(
                "documented.toml",
                calmflow::run::config::RunConfig::documented_defaults()
                    .documented_toml()
                    .into_bytes(),
            ),
        ],
        Target::Checkpoint => {
            let model = tiny
                .init::<Cpu>(&Default::default())
                .unwrap_or_else(|e| panic!("{e}"));
            vec![named(
                "model.mpk",
                written(|p| model.save_weights(p).map_err(|e| e.to_string())),
            )]
        }
        Target::CheckpointState
        | Target::CheckpointConfig
        | Target::CheckpointManifest
        | Target::Optimizer => {
            let file = crate::resume::file_of(target).unwrap_or("checkpoint file");
            let bytes = crate::resume::seed(target).unwrap_or_else(|e| panic!("{e}"));
            vec![named(file, bytes)]
        }
    }
}
