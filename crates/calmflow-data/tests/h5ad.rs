//! The `.h5ad` reader against the real pbmc68k_reduced file and its independent `.npy` /
//! `.csv` exports, and against small files written here in other encodings or broken on
//! purpose.

use std::path::{Path, PathBuf};

use calmflow_data::DataError;
use calmflow_data::h5ad::{Column, Expression, bundled_pbmc68k_reduced, read_h5ad};
use calmflow_data::npy::read_npy_matrix;
use hdf5_writer::{AttributeBuilder, DatasetBuilder, Hdf5Builder, WriteOptions};

fn pbmc_dir() -> PathBuf {
    bundled_pbmc68k_reduced().parent().unwrap().to_path_buf()
}

#[test]
fn pbmc68k_reduced_matches_its_npy_and_csv_exports_exactly() {
    let adata = read_h5ad(bundled_pbmc68k_reduced()).unwrap();
    assert_eq!((adata.n_obs(), adata.n_vars()), (700, 765));
    let Expression::Csr(csr) = &adata.x else {
        panic!("pbmc68k_reduced stores X as CSR")
    };
    assert_eq!(csr.indptr.len(), 701);
    let dense = adata.x.to_dense();
    let reference = read_npy_matrix(pbmc_dir().join("X_lognorm.npy")).unwrap();
    assert_eq!(dense.dim(), reference.dim());
    // Bit-for-bit: the reader must not round or reorder anything.
    assert!(
        dense
            .iter()
            .zip(reference.iter())
            .all(|(a, b)| a.to_bits() == b.to_bits())
    );
    let nonzero = reference.iter().filter(|&&v| v != 0.0).count();
    assert_eq!(nonzero, csr.data.iter().filter(|&&v| v != 0.0).count());

    let pca = read_npy_matrix(pbmc_dir().join("X_pca50.npy")).unwrap();
    assert_eq!(adata.obsm["X_pca"], pca);

    let genes = std::fs::read_to_string(pbmc_dir().join("genes.csv")).unwrap();
    let genes: Vec<&str> = genes.lines().skip(1).collect();
    assert_eq!(adata.var.index, genes);

    let obs = std::fs::read_to_string(pbmc_dir().join("obs.csv")).unwrap();
    let rows: Vec<Vec<&str>> = obs
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    assert_eq!(rows.len(), 700);
    let col = |k: usize| rows.iter().map(|r| r[k].to_string()).collect::<Vec<_>>();
    assert_eq!(adata.obs.index, col(0));
    assert_eq!(adata.obs.labels("cell_type").unwrap(), col(1));
    assert_eq!(adata.obs.labels("phase").unwrap(), col(2));
    assert_eq!(adata.obs.labels("louvain").unwrap(), col(3));
    let Column::Categorical { categories, .. } = adata.obs.column("cell_type").unwrap() else {
        panic!("cell_type is categorical")
    };
    assert_eq!(categories.len(), 10);
    let ints: Vec<f64> = col(4).iter().map(|v| v.parse().unwrap()).collect();
    assert_eq!(adata.obs.numeric("n_genes").unwrap(), ints);
    for (k, name) in [(5, "percent_mito"), (6, "n_counts")] {
        let expected: Vec<f32> = col(k).iter().map(|v| v.parse().unwrap()).collect();
        let got: Vec<f32> = adata
            .obs
            .numeric(name)
            .unwrap()
            .iter()
            .map(|&v| v as f32)
            .collect();
        assert_eq!(got, expected, "{name}");
    }
    assert_eq!(
        adata
            .obs
            .columns
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>(),
        [
            "cell_type",
            "phase",
            "louvain",
            "n_genes",
            "percent_mito",
            "n_counts"
        ]
    );
    let e = adata.obs.column("batch").unwrap_err();
    assert!(matches!(e, DataError::UnknownColumn { .. }));
    assert!(
        e.to_string().starts_with(&format!(
            "`{}: obs` has no column `batch`",
            adata.obs.file.display()
        )),
        "{e}"
    );
    assert!(
        adata.obs.labels("n_counts").is_err(),
        "floats are not labels"
    );
}

fn strings_attr(name: &str, value: &str) -> AttributeBuilder {
    AttributeBuilder::vlen_strings(name, &[value]).unwrap()
}

fn encoded(ds: DatasetBuilder, kind: &str) -> DatasetBuilder {
    ds.attribute(strings_attr("encoding-type", kind))
        .attribute(strings_attr("encoding-version", "0.2.0"))
}

fn group_encoding(b: Hdf5Builder, group: &str, kind: &str, version: &str) -> Hdf5Builder {
    b.group_attribute(group, strings_attr("encoding-type", kind))
        .group_attribute(group, strings_attr("encoding-version", version))
}

fn frame(mut b: Hdf5Builder, name: &str, index: &[&str], columns: &[&str]) -> Hdf5Builder {
    b = group_encoding(b, name, "dataframe", "0.2.0");
    b = b.group_attribute(name, strings_attr("_index", "_index"));
    if !columns.is_empty() {
        b = b.group_attribute(
            name,
            AttributeBuilder::vlen_strings("column-order", columns).unwrap(),
        );
    }
    b.dataset(encoded(
        DatasetBuilder::vlen_string_data(format!("{name}/_index"), [index.len() as u64], index)
            .unwrap(),
        "string-array",
    ))
}

fn write(dir: &Path, name: &str, b: Hdf5Builder) -> PathBuf {
    let path = dir.join(name);
    let bytes = b
        .into_plan()
        .unwrap()
        .encode(WriteOptions::default())
        .unwrap();
    std::fs::write(&path, bytes).unwrap();
    path
}

/// A 3-cell × 2-gene file with a dense float64 X and one column of every other kind.
fn small(x: Option<DatasetBuilder>) -> Hdf5Builder {
    let mut b = Hdf5Builder::new();
    if let Some(x) = x {
        b = b.dataset(x);
    }
    b = frame(
        b,
        "obs",
        &["c0", "c1", "c2"],
        &["kind", "dose", "ok", "note"],
    );
    b = group_encoding(b, "obs/kind", "categorical", "0.2.0");
    b = b
        .dataset(encoded(
            DatasetBuilder::typed_data("obs/kind/codes", [3], &[1i8, -1, 0]).unwrap(),
            "array",
        ))
        .dataset(encoded(
            DatasetBuilder::vlen_string_data("obs/kind/categories", [2], &["a", "b"]).unwrap(),
            "string-array",
        ));
    b = group_encoding(b, "obs/dose", "nullable-integer", "0.1.0");
    b = b
        .dataset(DatasetBuilder::typed_data("obs/dose/values", [3], &[5i64, 0, 7]).unwrap())
        .dataset(DatasetBuilder::typed_data("obs/dose/mask", [3], &[0u8, 1, 0]).unwrap());
    b = b.dataset(encoded(
        DatasetBuilder::typed_data("obs/ok", [3], &[1u8, 0, 1]).unwrap(),
        "array",
    ));
    b = b.dataset(encoded(
        DatasetBuilder::vlen_string_data("obs/note", [3], &["x", "y", "z"]).unwrap(),
        "string-array",
    ));
    frame(b, "var", &["g0", "g1"], &[])
}

fn dense_x() -> DatasetBuilder {
    encoded(
        DatasetBuilder::typed_data("X", [3, 2], &[1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap(),
        "array",
    )
}

#[test]
fn dense_x_and_every_column_kind_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "small.h5ad", small(Some(dense_x())));
    let a = read_h5ad(&path).unwrap();
    assert_eq!(
        a.x,
        Expression::Dense(ndarray::array![[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    );
    assert_eq!(a.var.index, ["g0", "g1"]);
    assert!(a.var.columns.is_empty() && a.obsm.is_empty());
    assert_eq!(
        a.obs.column("kind").unwrap(),
        &Column::Categorical {
            codes: vec![1, -1, 0],
            categories: vec!["a".into(), "b".into()],
            ordered: false
        }
    );
    assert_eq!(
        a.obs.column("dose").unwrap(),
        &Column::Int(vec![Some(5), None, Some(7)])
    );
    assert_eq!(a.obs.labels("ok").unwrap(), ["1", "0", "1"]);
    assert_eq!(a.obs.labels("note").unwrap(), ["x", "y", "z"]);
    // A missing categorical value or masked integer cannot be a condition label; the
    // message names the file.
    for column in ["kind", "dose"] {
        let e = a.obs.labels(column).unwrap_err().to_string();
        assert!(
            e.starts_with(&path.display().to_string())
                && e.contains(&format!("/obs/{column}"))
                && e.contains("row 1"),
            "{e}"
        );
    }
}

/// Columns and obsm entries the reader cannot decode (an unknown encoding, codes past the
/// categories, a boolean matrix, a wrong row count) leave the rest of the file readable;
/// each is an error only when asked for.
/// A file whose `obs` has readable columns (`ok`, `note`) beside undecodable ones, and
/// whose `obsm` has a matrix of the wrong row count.
fn broken_columns() -> Hdf5Builder {
    let mut b = Hdf5Builder::new().dataset(dense_x());
    b = frame(
        b,
        "obs",
        &["c0", "c1", "c2"],
        &["ok", "note", "weird", "short", "bad_codes"],
    );
    b = b
        .dataset(encoded(
            DatasetBuilder::typed_data("obs/ok", [3], &[1u8, 0, 1]).unwrap(),
            "array",
        ))
        .dataset(encoded(
            DatasetBuilder::vlen_string_data("obs/note", [3], &["x", "y", "z"]).unwrap(),
            "string-array",
        ));
    b = frame(b, "var", &["g0", "g1"], &[]);
    b = group_encoding(b, "obs/weird", "awkward-array", "0.1.0")
        .dataset(DatasetBuilder::typed_data("obs/weird/data", [3], &[1u8, 2, 3]).unwrap());
    b = b.dataset(encoded(
        DatasetBuilder::typed_data("obs/short", [2], &[1.0f64, 2.0]).unwrap(),
        "array",
    ));
    b = group_encoding(b, "obs/bad_codes", "categorical", "0.2.0")
        .dataset(DatasetBuilder::typed_data("obs/bad_codes/codes", [3], &[0i8, 5, 0]).unwrap())
        .dataset(
            DatasetBuilder::vlen_string_data("obs/bad_codes/categories", [1], &["a"]).unwrap(),
        );
    b = group_encoding(b, "obsm", "dict", "0.1.0").dataset(encoded(
        DatasetBuilder::typed_data("obsm/X_pca", [3, 2], &[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0])
            .unwrap(),
        "array",
    ));
    b.dataset(encoded(
        DatasetBuilder::typed_data("obsm/X_bad", [2, 2], &[1.0f32, 2.0, 3.0, 4.0]).unwrap(),
        "array",
    ))
}

#[test]
fn unreadable_columns_fail_only_when_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "mixed.h5ad", broken_columns());
    let a = read_h5ad(&path).unwrap();
    assert_eq!(a.obs.labels("note").unwrap(), ["x", "y", "z"]);
    assert_eq!(a.obs.labels("ok").unwrap(), ["1", "0", "1"]);
    assert_eq!(a.obsm["X_pca"].dim(), (3, 2));
    assert!(!a.obsm.contains_key("X_bad"));
    assert!(
        a.unreadable_obsm["X_bad"].contains("has 2 rows"),
        "{:?}",
        a.unreadable_obsm
    );
    for (column, needle) in [
        ("weird", "/obs/weird"),
        ("short", "has 2 rows"),
        ("bad_codes", "row 1"),
    ] {
        let e = a.obs.labels(column).unwrap_err().to_string();
        assert!(
            e.starts_with(&path.display().to_string()) && e.contains(needle),
            "{column}: {e}"
        );
        assert!(a.obs.column(column).is_err());
    }
}

/// Categories of integer and float dtype are labels as pandas prints them; an
/// anndata < 0.8 categorical (codes with a `categories` attribute) is refused by name, not
/// read as its codes.
#[test]
fn categories_of_any_dtype_and_old_categoricals() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = Hdf5Builder::new().dataset(dense_x());
    b = frame(b, "obs", &["c0", "c1", "c2"], &["batch", "dose", "old"]);
    for (name, categories) in [
        (
            "batch",
            DatasetBuilder::typed_data("obs/batch/categories", [2], &[3i64, 10]).unwrap(),
        ),
        (
            "dose",
            DatasetBuilder::typed_data("obs/dose/categories", [2], &[0.5f64, 2.0]).unwrap(),
        ),
    ] {
        b = group_encoding(b, &format!("obs/{name}"), "categorical", "0.2.0")
            .dataset(
                DatasetBuilder::typed_data(format!("obs/{name}/codes"), [3], &[1i8, 0, 1]).unwrap(),
            )
            .dataset(encoded(categories, "array"));
    }
    b = b.dataset(
        DatasetBuilder::typed_data("obs/old", [3], &[0i8, 1, 0])
            .unwrap()
            .attribute(strings_attr("categories", "/obs/__categories/old")),
    );
    let path = write(
        dir.path(),
        "categories.h5ad",
        frame(b, "var", &["g0", "g1"], &[]),
    );
    let a = read_h5ad(&path).unwrap();
    assert_eq!(a.obs.labels("batch").unwrap(), ["10", "3", "10"]);
    assert_eq!(a.obs.labels("dose").unwrap(), ["2.0", "0.5", "2.0"]);
    let e = a.obs.labels("old").unwrap_err().to_string();
    assert!(e.contains("/obs/old") && e.contains("anndata < 0.8"), "{e}");
}

fn sparse(
    kind: &str,
    shape: [i64; 2],
    data: &[f32],
    indices: &[i32],
    indptr: &[i32],
) -> Hdf5Builder {
    let mut b = small(None);
    b = group_encoding(b, "X", kind, "0.1.0");
    b.group_attribute("X", AttributeBuilder::vector("shape", &shape).unwrap())
        .dataset(DatasetBuilder::typed_data("X/data", [data.len() as u64], data).unwrap())
        .dataset(DatasetBuilder::typed_data("X/indices", [indices.len() as u64], indices).unwrap())
        .dataset(DatasetBuilder::typed_data("X/indptr", [indptr.len() as u64], indptr).unwrap())
}

#[test]
fn csr_and_csc_matrices_give_the_same_dense_matrix() {
    let dir = tempfile::tempdir().unwrap();
    // [[0, 2], [3, 0], [0, 6]]
    let csr = write(
        dir.path(),
        "csr.h5ad",
        sparse(
            "csr_matrix",
            [3, 2],
            &[2.0, 3.0, 6.0],
            &[1, 0, 1],
            &[0, 1, 2, 3],
        ),
    );
    let csc = write(
        dir.path(),
        "csc.h5ad",
        sparse(
            "csc_matrix",
            [3, 2],
            &[3.0, 2.0, 6.0],
            &[1, 0, 2],
            &[0, 1, 3],
        ),
    );
    let expected = ndarray::array![[0.0f32, 2.0], [3.0, 0.0], [0.0, 6.0]];
    assert_eq!(read_h5ad(&csr).unwrap().x.to_dense(), expected);
    assert_eq!(read_h5ad(&csc).unwrap().x.to_dense(), expected);
}

fn error_of(path: &Path) -> String {
    let e = read_h5ad(path).unwrap_err();
    assert!(matches!(e, DataError::H5ad { .. }), "{e:?}");
    e.to_string()
}

#[test]
fn malformed_files_are_errors_naming_the_element() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases: Vec<(&str, Hdf5Builder, &str)> = vec![
        (
            "indptr_len",
            sparse(
                "csr_matrix",
                [3, 2],
                &[2.0, 3.0, 6.0],
                &[1, 0, 1],
                &[0, 1, 3],
            ),
            "/X/indptr",
        ),
        (
            "indptr_end",
            sparse(
                "csr_matrix",
                [3, 2],
                &[2.0, 3.0, 6.0],
                &[1, 0, 1],
                &[0, 1, 2, 2],
            ),
            "/X/indptr",
        ),
        (
            "column_out_of_range",
            sparse(
                "csr_matrix",
                [3, 2],
                &[2.0, 3.0, 6.0],
                &[1, 0, 2],
                &[0, 1, 2, 3],
            ),
            "/X/indices",
        ),
        (
            "not_a_matrix",
            sparse(
                "coo_matrix",
                [3, 2],
                &[2.0, 3.0, 6.0],
                &[1, 0, 1],
                &[0, 1, 2, 3],
            ),
            "/X",
        ),
        ("no_x", small(None), "/X"),
        (
            "rows_disagree",
            small(Some(encoded(
                DatasetBuilder::typed_data("X", [2, 2], &[1.0f32, 2.0, 3.0, 4.0]).unwrap(),
                "array",
            ))),
            "/obs/_index",
        ),
        (
            "three_d_x",
            small(Some(
                DatasetBuilder::typed_data("X", [3, 2, 1], &[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0])
                    .unwrap(),
            )),
            "/X",
        ),
    ];
    for (name, builder, element) in cases {
        let msg = error_of(&write(d, &format!("{name}.h5ad"), builder));
        assert!(msg.contains(&format!(": {element}:")), "{name}: {msg}");
    }
    // Category codes past the end of the categories.
    let mut b = Hdf5Builder::new().dataset(dense_x());
    b = frame(b, "obs", &["c0", "c1", "c2"], &["kind"]);
    b = group_encoding(b, "obs/kind", "categorical", "0.2.0")
        .dataset(DatasetBuilder::typed_data("obs/kind/codes", [3], &[0i8, 1, 2]).unwrap())
        .dataset(
            DatasetBuilder::vlen_string_data("obs/kind/categories", [2], &["a", "b"]).unwrap(),
        );
    // The file reads (a column nobody asks for cannot make it unreadable); asking for the
    // column is the error, naming the file and the element.
    let path = write(d, "codes.h5ad", frame(b, "var", &["g0", "g1"], &[]));
    let a = read_h5ad(&path).unwrap();
    let e = a.obs.labels("kind").unwrap_err();
    assert!(matches!(e, DataError::H5ad { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.starts_with(&path.display().to_string())
            && msg.contains("/obs/kind/codes")
            && msg.contains("row 2"),
        "{msg}"
    );
    // An obs without anndata's encoding attributes (anndata < 0.8).
    let b = Hdf5Builder::new()
        .dataset(dense_x())
        .dataset(DatasetBuilder::vlen_string_data("obs/_index", [3], &["a", "b", "c"]).unwrap());
    let msg = error_of(&write(d, "old.h5ad", frame(b, "var", &["g0", "g1"], &[])));
    assert!(
        msg.contains("/obs") && msg.contains("anndata < 0.8"),
        "{msg}"
    );
    // Not HDF5 at all, truncated, and missing.
    std::fs::write(d.join("text.h5ad"), "cell,gene\n").unwrap();
    assert!(error_of(&d.join("text.h5ad")).contains("not a readable HDF5 file"));
    let real = std::fs::read(bundled_pbmc68k_reduced()).unwrap();
    std::fs::write(d.join("cut.h5ad"), &real[..real.len() / 3]).unwrap();
    let msg = error_of(&d.join("cut.h5ad"));
    assert!(
        msg.contains(&format!(
            "the file is truncated: it has {} bytes of the {} its header declares",
            real.len() / 3,
            real.len()
        )),
        "{msg}"
    );
    assert!(matches!(
        read_h5ad(d.join("absent.h5ad")),
        Err(DataError::Io { .. })
    ));
}

/// A file of `tests/fixtures/anndata`, written by the anndata package (0.12.19) itself
/// with `make_fixtures.py` there.
fn anndata_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/anndata")
        .join(name)
}

/// The `X` of every fixture: `arange(24).reshape(6, 4) / 4` (exact in float16 too).
fn fixture_x() -> ndarray::Array2<f32> {
    ndarray::Array2::from_shape_fn((6, 4), |(i, j)| (i * 4 + j) as f32 / 4.0)
}

fn fixture_cell_types() -> Vec<String> {
    ["B", "T", "B", "NK", "T", "B"].map(String::from).to_vec()
}

/// `compression="lzf"` (h5py's filter 32000) on every dataset, dense and CSR `X`.
#[test]
fn anndata_lzf_files_read_exactly() {
    for name in ["lzf.h5ad", "csr_lzf.h5ad"] {
        let adata = read_h5ad(anndata_fixture(name)).unwrap();
        assert_eq!(adata.x.to_dense(), fixture_x(), "{name}");
        assert_eq!(
            adata.obs.index,
            (0..6).map(|i| format!("c{i}")).collect::<Vec<_>>()
        );
        assert_eq!(adata.obs.labels("cell_type").unwrap(), fixture_cell_types());
    }
    let adata = read_h5ad(anndata_fixture("csr_lzf.h5ad")).unwrap();
    let Expression::Csr(csr) = &adata.x else {
        panic!("csr_lzf stores X as CSR")
    };
    assert_eq!(csr.data.len(), 23, "every entry but the zero at (0, 0)");
}

#[test]
fn anndata_float16_x_reads_exactly() {
    let adata = read_h5ad(anndata_fixture("float16.h5ad")).unwrap();
    assert_eq!(adata.x.to_dense(), fixture_x());
}

/// pandas' `string` dtype, written unconverted: `nullable-string-array` (values + mask).
#[test]
fn anndata_nullable_strings_keep_their_missing_rows() {
    let adata = read_h5ad(anndata_fixture("nullable_strings.h5ad")).unwrap();
    let donor = adata.obs.column("donor").unwrap();
    let want: Vec<Option<String>> = [Some("d1"), None, Some("d2"), Some("d1"), Some("d2"), None]
        .iter()
        .map(|v| v.map(String::from))
        .collect();
    assert_eq!(donor, &Column::String(want));
    let err = adata.obs.labels("donor").unwrap_err().to_string();
    assert!(err.contains("row 1 has a missing value"), "{err}");
}

/// Integer and boolean categories, and boolean and integer `obsm` matrices.
#[test]
fn anndata_integer_boolean_categories_and_obsm_read() {
    let adata = read_h5ad(anndata_fixture("categories_obsm.h5ad")).unwrap();
    assert_eq!(
        adata.obs.labels("batch").unwrap(),
        ["1", "2", "1", "2", "3", "1"].map(String::from).to_vec()
    );
    assert_eq!(
        adata.obs.labels("treated").unwrap(),
        ["True", "False", "True", "True", "False", "False"]
            .map(String::from)
            .to_vec()
    );
    let counts = ndarray::Array2::from_shape_fn((6, 3), |(i, j)| (i * 3 + j) as f32);
    assert_eq!(adata.obsm["counts"], counts);
    let mask = ndarray::array![[1., 0.], [0., 0.], [1., 1.], [1., 1.], [1., 1.], [1., 0.]];
    assert_eq!(adata.obsm["mask"], mask);
    assert!(
        adata.unreadable_obsm.is_empty(),
        "{:?}",
        adata.unreadable_obsm
    );
}

#[test]
fn anndata_file_without_x_names_its_layers() {
    let err = read_h5ad(anndata_fixture("layers_only.h5ad"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no expression matrix X, only layers (counts)")
            && err.contains("[data] layer = \"counts\""),
        "{err}"
    );
}

#[test]
fn a_chosen_layer_is_the_expression_dense_or_sparse() {
    use calmflow_data::h5ad::{ReadOptions, read_h5ad_with};
    // make_fixtures.py: X = arange(24) / 4 as 6 × 4; layers_only keeps it as a dense
    // layer, sparse_layer has X and 4·X as a CSR layer.
    let x = ndarray::Array2::from_shape_fn((6, 4), |(i, j)| (i * 4 + j) as f32 / 4.0);
    let layer = |file: &str, name: &str| {
        let options = ReadOptions {
            layer: Some(name.into()),
            ..ReadOptions::default()
        };
        read_h5ad_with(anndata_fixture(file), &options)
    };
    assert_eq!(layer("layers_only.h5ad", "counts").unwrap().x.to_dense(), x);
    let sparse = layer("sparse_layer.h5ad", "counts").unwrap();
    assert!(matches!(sparse.x, Expression::Csr(_)));
    assert_eq!(sparse.x.to_dense(), &x * 4.0);
    assert_eq!(
        read_h5ad(anndata_fixture("sparse_layer.h5ad"))
            .unwrap()
            .x
            .to_dense(),
        x
    );
    let e = layer("sparse_layer.h5ad", "spliced")
        .unwrap_err()
        .to_string();
    assert!(e.contains("no layer `spliced`; layers: counts"), "{e}");
    let e = layer("lzf.h5ad", "counts").unwrap_err().to_string();
    assert!(e.contains("the file has no layers"), "{e}");
}

#[test]
fn only_the_columns_asked_for_are_read() {
    use calmflow_data::h5ad::{ReadOptions, read_h5ad_with};
    let dir = tempfile::tempdir().unwrap();
    // `weird` cannot be decoded: reading everything keeps it as unreadable, reading the
    // conditions leaves it (and every other column, var's and obsm) untouched.
    let path = write(dir.path(), "mixed.h5ad", broken_columns());
    let options = ReadOptions::conditions(&["ok".to_string()], None);
    let a = read_h5ad_with(&path, &options).unwrap();
    assert_eq!(a.obs.columns.len(), 1);
    assert_eq!(a.obs.labels("ok").unwrap(), ["1", "0", "1"]);
    assert!(a.var.columns.is_empty() && a.obsm.is_empty() && a.unreadable_obsm.is_empty());
    assert_eq!(a.obs.index.len(), 3);
    let options = ReadOptions::conditions(&["cell_type".to_string()], None);
    let e = read_h5ad_with(&path, &options).unwrap_err().to_string();
    assert!(
        e.contains(&format!(
            "`{}: obs` has no column `cell_type`; columns: ok, note, weird, short, bad_codes",
            path.display()
        )),
        "{e}"
    );
}

#[test]
fn written_anndata_reads_back_exactly() {
    use calmflow_data::h5ad::{AnnData, DataFrame, write_h5ad};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("generated.h5ad");
    let frame = |name: &str, index: &[&str], columns: Vec<(String, Column)>| DataFrame {
        index: index.iter().map(|s| s.to_string()).collect(),
        columns,
        name: name.into(),
        file: path.clone(),
    };
    let adata = AnnData {
        x: Expression::Dense(ndarray::array![[0.5, -1.0], [2.25, 0.0], [1e-3, 7.0]]),
        obs: frame(
            "obs",
            &["cell0", "cell1", "cell2"],
            vec![
                (
                    "cell_type".into(),
                    Column::Categorical {
                        codes: vec![1, 0, 1],
                        categories: vec!["B".into(), "CD14+ Monocyte".into()],
                        ordered: false,
                    },
                ),
                (
                    "note".into(),
                    Column::String(vec![
                        Some("a".into()),
                        Some("b".into()),
                        Some("G2/M".into()),
                    ]),
                ),
                ("dose".into(), Column::Int(vec![Some(3), None, Some(-2)])),
                ("count".into(), Column::Int(vec![Some(1), Some(2), Some(3)])),
                ("score".into(), Column::Float(vec![0.25, f64::NAN, 1.5])),
            ],
        ),
        var: frame("var", &["g0", "g1"], vec![]),
        obsm: [("X_pca".to_string(), ndarray::array![[1.0f32], [2.0], [3.0]])].into(),
        unreadable_obsm: Default::default(),
    };
    write_h5ad(&path, &adata).unwrap();
    let back = read_h5ad(&path).unwrap();
    assert_eq!(back.x, adata.x);
    assert_eq!(back.obs.index, adata.obs.index);
    assert_eq!(back.var.index, adata.var.index);
    assert_eq!(back.obsm, adata.obsm);
    assert_eq!(
        back.obs.labels("cell_type").unwrap(),
        ["CD14+ Monocyte", "B", "CD14+ Monocyte"]
    );
    for name in ["cell_type", "note", "dose", "count"] {
        assert_eq!(
            back.obs.column(name).unwrap(),
            adata.obs.column(name).unwrap(),
            "{name}"
        );
    }
    let Column::Float(score) = back.obs.column("score").unwrap() else {
        panic!("score is a float column")
    };
    assert_eq!((score[0], score[2]), (0.25, 1.5));
    assert!(score[1].is_nan());

    // What cannot be written is an error naming the element, and nothing is left behind.
    let mut bad = adata.clone();
    bad.obs
        .columns
        .push(("flag".into(), Column::Bool(vec![Some(true); 3])));
    let bad_path = dir.path().join("bad.h5ad");
    let e = write_h5ad(&bad_path, &bad).unwrap_err().to_string();
    assert!(e.contains("obs/flag") && e.contains("boolean"), "{e}");
    assert!(!bad_path.exists());
    let mut short = adata;
    short.obs.index.pop();
    let e = write_h5ad(&bad_path, &short).unwrap_err().to_string();
    assert!(
        e.contains("the index has 2 rows where the matrix has 3"),
        "{e}"
    );
}

/// A root group without obs and var (anndata writes both into every file) is called
/// damaged or foreign, not a file that lacks X.
#[test]
fn a_root_without_obs_and_var_is_called_damaged_or_not_anndata() {
    let dir = tempfile::tempdir().unwrap();
    let b = Hdf5Builder::new()
        .dataset(DatasetBuilder::typed_data("values", [2], &[1.0f64, 2.0]).unwrap());
    let err = error_of(&write(dir.path(), "plain.h5", b));
    assert!(
        err.contains(
            "the root group holds neither obs nor var, which anndata writes into every file \
             (it lists values): its root group is damaged, or it is not an AnnData file"
        ),
        "{err}"
    );
    let err = error_of(&write(dir.path(), "empty.h5", Hdf5Builder::new()));
    assert!(err.contains("(it lists nothing)"), "{err}");
    // With obs and var present, a missing X is reported as such.
    let err = error_of(&write(dir.path(), "no_x.h5ad", small(None)));
    assert!(err.contains("the file has no expression matrix X"), "{err}");
}
