//! burn records (module weights, optimizer state) in files, written atomically.
//!
//! burn's file recorders choose the file extension themselves (`.mpk`), so a user's path of
//! any name is staged through a hidden, extension-free sibling and renamed into place: a
//! crash never leaves a half-written file under the user's name.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::record::{
    FullPrecisionSettings, NamedMpkBytesRecorder, NamedMpkFileRecorder, PrecisionSettings, Record,
    Recorder,
};
use burn::tensor::{Bool, Int, Tensor, backend::Backend};

use crate::error::{ModelError, Result};

fn record_error(path: &Path, message: impl Into<String>) -> ModelError {
    ModelError::Record {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// A hidden, extension-free sibling of `path`, unique to this process and purpose.
fn staging_base(path: &Path, purpose: &str) -> Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| record_error(path, "names no file"))?
        .to_string_lossy()
        .replace('.', "_");
    Ok(path.with_file_name(format!(".{name}-{}-{purpose}", std::process::id())))
}

/// Writes `record` to `path` in burn's named MessagePack format (full precision),
/// atomically: written beside `path`, then renamed over it.
pub fn save_record<B: Backend, R: Record<B>>(record: R, path: &Path) -> Result<()> {
    let base = staging_base(path, "save")?;
    let written = base.with_extension("mpk");
    NamedMpkFileRecorder::<FullPrecisionSettings>::new()
        .record(record, base)
        .map_err(|e| record_error(path, e.to_string()))?;
    std::fs::rename(&written, path).map_err(|e| {
        let _ = std::fs::remove_file(&written);
        record_error(path, e.to_string())
    })
}

/// Writes `bytes` to `path` through a hidden sibling and a rename.
pub(crate) fn write_bytes_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let staged = staging_base(path, "write")?;
    std::fs::write(&staged, bytes)
        .and_then(|()| std::fs::rename(&staged, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&staged);
            record_error(path, e.to_string())
        })
}

/// Reads a record written by [`save_record`] onto `device`. Every tensor's bytes are
/// checked against its shape first (burn builds CPU tensors without that check).
pub fn load_record<B: Backend, R: Record<B>>(path: &Path, device: &B::Device) -> Result<R> {
    load_checked(path, device, crate::record_check::check_record_tensors)
}

/// Reads an optimizer's state (a record keyed by parameter id, written by [`save_record`]
/// from a [`SortedParamRecord`] or burn's own map) for `module`: besides the checks of
/// [`load_record`], every state must belong to one of the module's parameters and have
/// its shape, so a state of another model is refused here rather than failing (or
/// panicking inside burn) at the next optimizer step.
pub fn load_optimizer_record<B: Backend, M: Module<B>, R: Record<B>>(
    module: &M,
    path: &Path,
    device: &B::Device,
) -> Result<R> {
    let shapes = ParameterShapes::of(module).by_id();
    load_checked(path, device, |bytes| {
        crate::record_check::check_param_record(bytes, &shapes)
    })
}

fn load_checked<B: Backend, R: Record<B>>(
    path: &Path,
    device: &B::Device,
    check: impl FnOnce(&[u8]) -> std::result::Result<(), String>,
) -> Result<R> {
    if !path.is_file() {
        return Err(record_error(path, "no such file"));
    }
    let bytes = std::fs::read(path).map_err(|e| record_error(path, e.to_string()))?;
    check(&bytes).map_err(|message| record_error(path, message))?;
    // What the check above does not cover (a decodable file whose items burn cannot
    // turn into its record type) may still make burn assert while building tensors:
    // caught here, it is the damaged file it is. The bytes already read are decoded as
    // they are (the same format as the file recorder's), not read from disk again.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        NamedMpkBytesRecorder::<FullPrecisionSettings>::new().load(bytes, device)
    }));
    match result {
        Ok(result) => result.map_err(|e| record_error(path, unreadable(&e.to_string()))),
        Err(payload) => Err(record_error(
            path,
            unreadable(
                payload
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| payload.downcast_ref::<&str>().copied())
                    .unwrap_or("a tensor's data does not match its shape"),
            ),
        )),
    }
}

/// What to say when burn cannot decode a weight file. burn's decoder reports a truncated
/// or corrupted file as a data-format change and appends advice about an old feature
/// flag, which does not apply to files calmflow wrote: keep the decoder's own first line
/// (burn wraps it as `Unknown("…")` with the advice after an escaped newline).
fn unreadable(burn_message: &str) -> String {
    let first = burn_message
        .split('\n')
        .next()
        .unwrap_or_default()
        .split("\\n")
        .next()
        .unwrap_or_default();
    let cause = first
        .trim()
        .trim_start_matches("Unknown(\"")
        .trim_end_matches("\")")
        .trim();
    let cause = if cause.is_empty() {
        "unknown decoding error"
    } else {
        cause
    };
    crate::record_check::damaged(&format!("decoder: {cause}"))
}

/// Saves a module's weights with [`save_record`].
pub fn save_module<B: Backend, M: Module<B>>(module: &M, path: &Path) -> Result<()> {
    save_record::<B, _>(module.clone().into_record(), path)
}

/// Loads weights saved by [`save_module`] into `module`, which must have the same
/// architecture: every parameter's shape is compared (burn itself replaces tensors
/// without checking, so weights of another configuration would load and fail later).
pub fn load_module<B: Backend, M: Module<B>>(
    module: M,
    path: &Path,
    device: &B::Device,
) -> Result<M> {
    let record = load_record::<B, M::Record>(path, device)?;
    let expected = ParameterShapes::of(&module);
    // burn asserts (panics) when a record's list of layers is longer or shorter than the
    // module's; that is a user error (weights of another configuration), not a bug.
    let loaded =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| module.load_record(record)))
            .map_err(|_| {
                record_error(
                    path,
                    "the file's layers do not match the model's: the weights belong to a model of \
                 another configuration",
                )
            })?;
    let found = ParameterShapes::of(&loaded);
    if let Some(((name, want), (_, got))) =
        expected.0.iter().zip(&found.0).find(|(a, b)| a.1 != b.1)
    {
        return Err(record_error(
            path,
            format!(
                "parameter `{name}` has shape {got:?} in the file, the model expects {want:?}: \
                 the weights belong to a model of another configuration"
            ),
        ));
    }
    if expected.0.len() != found.0.len() {
        return Err(record_error(
            path,
            format!(
                "the file has {} parameters, the model {}",
                found.0.len(),
                expected.0.len()
            ),
        ));
    }
    Ok(loaded)
}

/// A record keyed by parameter (an optimizer's state) written in the order of its
/// parameter ids, so that the same state is always the same bytes.
///
/// burn writes a map `ParamId → T` (its optimizers' records) in the map's iteration order, which the
/// process's hash seed picks: two processes holding the same state wrote different files.
/// This writes the same map, key for key, as a sorted map; a file written either way reads
/// back into it.
pub struct SortedParamRecord<M>(pub M);

impl<M, T, B> Record<B> for SortedParamRecord<M>
where
    M: IntoIterator<Item = (ParamId, T)> + FromIterator<(ParamId, T)> + Send,
    T: Record<B>,
    B: Backend,
{
    type Item<S: PrecisionSettings> = BTreeMap<String, T::Item<S>>;

    fn into_item<S: PrecisionSettings>(self) -> Self::Item<S> {
        self.0
            .into_iter()
            .map(|(id, record)| (id.serialize(), record.into_item()))
            .collect()
    }

    fn from_item<S: PrecisionSettings>(item: Self::Item<S>, device: &B::Device) -> Self {
        Self(
            item.into_iter()
                .map(|(id, item)| (ParamId::deserialize(&id), T::from_item(item, device)))
                .collect(),
        )
    }
}

/// Forces burn's lazy parameter initialisation now, and numbers the parameters `0, 1, 2, …`
/// in visiting order.
///
/// burn draws a parameter from the backend RNG on first access, and clones taken before
/// then initialise independently: materialising right after construction makes
/// `B::seed(s)` followed by `init` reproducible. burn also gives each parameter a random
/// id, drawn afresh in every process and written into every record, so the same weights
/// would be saved as different bytes by two processes: numbered ids make a checkpoint a
/// function of the seed and the configuration alone.
pub fn materialize<B: Backend, M: Module<B>>(module: M) -> M {
    module.map(&mut Materialize { next: 0 })
}

/// Every float parameter's module path and shape, in visiting order, and its id.
struct ParameterShapes(Vec<(String, Vec<usize>)>, Vec<ParamId>);

struct ShapeVisitor {
    path: Vec<String>,
    shapes: Vec<(String, Vec<usize>)>,
    ids: Vec<ParamId>,
}

impl ParameterShapes {
    fn of<B: Backend, M: Module<B>>(module: &M) -> Self {
        let mut v = ShapeVisitor {
            path: Vec::new(),
            shapes: Vec::new(),
            ids: Vec::new(),
        };
        module.visit(&mut v);
        Self(v.shapes, v.ids)
    }

    /// Each parameter's shape by its id as records write it.
    fn by_id(&self) -> BTreeMap<String, Vec<usize>> {
        self.1
            .iter()
            .zip(&self.0)
            .map(|(id, (_, shape))| (id.serialize(), shape.clone()))
            .collect()
    }
}

impl<B: Backend> ModuleVisitor<B> for ShapeVisitor {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.shapes
            .push((self.path.join("."), param.val().dims().to_vec()));
        self.ids.push(param.id);
    }
}

/// Forces lazy parameter initialisation and numbers the parameters.
struct Materialize {
    next: u64,
}

impl Materialize {
    fn id(&mut self) -> ParamId {
        self.next += 1;
        ParamId::from(self.next - 1)
    }
}

impl<B: Backend> ModuleMapper<B> for Materialize {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (_, value, mapper) = param.consume();
        Param::from_mapped_value(self.id(), value, mapper)
    }

    fn map_int<const D: usize>(
        &mut self,
        param: Param<Tensor<B, D, Int>>,
    ) -> Param<Tensor<B, D, Int>> {
        let (_, value, mapper) = param.consume();
        Param::from_mapped_value(self.id(), value, mapper)
    }

    fn map_bool<const D: usize>(
        &mut self,
        param: Param<Tensor<B, D, Bool>>,
    ) -> Param<Tensor<B, D, Bool>> {
        let (_, value, mapper) = param.consume();
        Param::from_mapped_value(self.id(), value, mapper)
    }
}

#[cfg(test)]
mod tests {
    use super::unreadable;

    /// burn 0.21's message for a truncated file, as it prints it.
    #[test]
    fn burns_advice_is_dropped_and_its_cause_kept() {
        let burn = "Unknown(\"InvalidDataRead(Kind(UnexpectedEof))\\nThe internal data format \
                    has changed since version 0.14.0. If you are trying to load a record saved \
                    in a previous version, use the `record-backward-compat` feature flag\\n\")";
        let m = unreadable(burn);
        assert!(
            m.contains("(decoder: InvalidDataRead(Kind(UnexpectedEof)))"),
            "{m}"
        );
        assert!(!m.contains("backward-compat"), "{m}");
        let m = unreadable("line one\nline two");
        assert!(m.contains("(decoder: line one)"), "{m}");
        assert!(unreadable("").contains("(decoder: unknown decoding error)"));
    }
}
