//! A check of a record file's tensors before burn builds them: each tensor's bytes must
//! fill its shape exactly. burn 0.21 builds CPU tensors from a record's bytes without that
//! check, so a damaged `optimizer.mpk` whose shape says more elements than its bytes hold
//! made the next optimizer step read and write past the buffer (found by `cargo xtask
//! fuzz`: heap corruption, segmentation faults). The file is decoded once as plain
//! MessagePack and every map with `bytes`, `shape` and `dtype` (burn's `TensorData`) is
//! checked; nothing but lengths and small integers is kept.

use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};

/// A decoded MessagePack value, reduced to what the check needs.
#[derive(Debug, PartialEq)]
enum Node {
    Int(u64),
    Text(String),
    /// A byte string, by its length.
    Bytes(usize),
    /// A sequence: its elements when there are at most [`KEPT_ELEMENTS`] (a shape), else
    /// only its length (tensor bytes written as a list of integers).
    Seq(Result<Vec<Node>, usize>),
    Map(Vec<(Node, Node)>),
    Other,
}

/// Sequences up to this length are kept element by element (shapes are shorter).
const KEPT_ELEMENTS: usize = 16;

/// The most values a record may hold: a model's record holds about a dozen per parameter
/// tensor, and a file of small values (two bytes each) would otherwise decode into a tree
/// some thirty times its size.
const MAX_VALUES: usize = 1 << 20;

thread_local! {
    /// Values decoded so far in this thread's current check.
    static VALUES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let count = VALUES.with(|v| {
            v.set(v.get() + 1);
            v.get()
        });
        if count > MAX_VALUES {
            return Err(serde::de::Error::custom(format!(
                "more than {MAX_VALUES} values, far more than a model's record holds"
            )));
        }
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a MessagePack value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Node, E> {
        Ok(Node::Other)
    }
    fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Int(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(u64::try_from(v).map_or(Node::Other, Node::Int))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Node, E> {
        Ok(Node::Other)
    }
    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Text(v.to_string()))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Node, E> {
        Ok(Node::Bytes(v.len()))
    }
    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Other)
    }
    fn visit_none<E>(self) -> Result<Node, E> {
        Ok(Node::Other)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut kept = Vec::new();
        let mut len = 0usize;
        while let Some(node) = seq.next_element::<Node>()? {
            if len < KEPT_ELEMENTS {
                kept.push(node);
            }
            len += 1;
        }
        Ok(Node::Seq(if len <= KEPT_ELEMENTS {
            Ok(kept)
        } else {
            Err(len)
        }))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry::<Node, Node>()? {
            entries.push(entry);
        }
        Ok(Node::Map(entries))
    }
}

impl Node {
    fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Map(entries) => entries
                .iter()
                .find(|(k, _)| matches!(k, Node::Text(t) if t == key))
                .map(|(_, v)| v),
            _ => None,
        }
    }
}

/// The bytes per element of a tensor data type as burn serialises it (`"F32"`, or
/// `{"Bool": "U8"}`); `None` for types calmflow never writes.
fn element_bytes(dtype: &Node) -> Option<usize> {
    match dtype {
        Node::Text(t) => match t.as_str() {
            "F64" | "I64" | "U64" => Some(8),
            "F32" | "Flex32" | "I32" | "U32" => Some(4),
            "F16" | "BF16" | "I16" | "U16" => Some(2),
            "I8" | "U8" => Some(1),
            _ => None,
        },
        Node::Map(entries) if entries.len() == 1 => match &entries[0] {
            (Node::Text(k), Node::Text(store)) if k == "Bool" => match store.as_str() {
                "Native" | "U8" => Some(1),
                "U32" => Some(4),
                _ => None,
            },
            _ => None,
        },
        _ => None,
    }
}

/// Checks one tensor (a map with `bytes`, `shape` and `dtype`); its shape, or `None` for
/// a node that is not a tensor.
fn check_tensor(node: &Node, path: &str) -> Result<Option<Vec<u64>>, String> {
    let (Some(bytes), Some(shape), Some(dtype)) =
        (node.get("bytes"), node.get("shape"), node.get("dtype"))
    else {
        return Ok(None);
    };
    let len = match bytes {
        Node::Bytes(n) => *n,
        Node::Seq(Ok(items)) => items.len(),
        Node::Seq(Err(n)) => *n,
        _ => return Err(format!("tensor `{path}` has no byte string")),
    };
    let dims: Vec<u64> = match shape {
        Node::Seq(Ok(items)) => items
            .iter()
            .map(|d| match d {
                Node::Int(v) => Some(*v),
                _ => None,
            })
            .collect::<Option<_>>()
            .ok_or_else(|| format!("tensor `{path}` has a shape that is not a list of sizes"))?,
        _ => {
            return Err(format!(
                "tensor `{path}` has no shape (or one of too many dimensions)"
            ));
        }
    };
    let size = element_bytes(dtype)
        .ok_or_else(|| format!("tensor `{path}` has an element type calmflow does not write"))?;
    let want = dims
        .iter()
        .try_fold(size as u64, |acc, &d| acc.checked_mul(d))
        .filter(|&w| w == len as u64);
    if want.is_none() {
        return Err(format!(
            "tensor `{path}` holds {len} bytes, its shape {dims:?} needs {}",
            dims.iter()
                .try_fold(size as u64, |acc, &d| acc.checked_mul(d))
                .map_or("more than 2^64".to_string(), |w| w.to_string())
        ));
    }
    Ok(Some(dims))
}

/// Called with each tensor's path and shape.
type OnTensor<'a> = dyn FnMut(&[String], &[u64]) -> Result<(), String> + 'a;

/// Checks every tensor under `node`, calling `seen` with each one's path and shape.
fn walk(node: &Node, path: &mut Vec<String>, seen: &mut OnTensor<'_>) -> Result<(), String> {
    if let Some(shape) = check_tensor(node, &path.join("."))? {
        return seen(path, &shape);
    }
    match node {
        Node::Map(entries) => {
            for (key, value) in entries {
                path.push(match key {
                    Node::Text(t) => t.clone(),
                    Node::Int(i) => i.to_string(),
                    _ => "?".to_string(),
                });
                walk(value, path, seen)?;
                path.pop();
            }
        }
        Node::Seq(Ok(items)) => {
            for (i, item) in items.iter().enumerate() {
                path.push(i.to_string());
                walk(item, path, seen)?;
                path.pop();
            }
        }
        _ => {}
    }
    Ok(())
}

/// The message for a file that cannot be what calmflow wrote, with what was found.
pub(crate) fn damaged(cause: &str) -> String {
    format!(
        "the file is damaged (truncated or corrupted, e.g. by an interrupted copy) or was not \
         written by calmflow ({cause}); restore it or use another checkpoint"
    )
}

/// Decodes a record file, refusing it as damaged when it is not MessagePack or one of its
/// tensors does not fill its shape exactly.
fn decode_checked(bytes: &[u8]) -> Result<Node, String> {
    VALUES.with(|v| v.set(0));
    let root: Node = rmp_serde::from_slice(bytes).map_err(|e| damaged(&format!("decoder: {e}")))?;
    walk(&root, &mut Vec::new(), &mut |_, _| Ok(())).map_err(|cause| damaged(&cause))?;
    Ok(root)
}

/// Checks that every tensor in a named-MessagePack record fills its shape exactly; the
/// message for the user when one does not, or when the bytes are not MessagePack at all.
pub(crate) fn check_record_tensors(bytes: &[u8]) -> Result<(), String> {
    decode_checked(bytes).map(drop)
}

/// [`check_record_tensors`] for a record keyed by parameter id (an optimizer's state,
/// `item: {id: state}`): besides, every tensor under an id must have that parameter's
/// shape in `shapes` (id → shape), and every id must be one of them. burn would add a
/// state of another shape to the parameter's gradient at the next step and panic there.
pub(crate) fn check_param_record(
    bytes: &[u8],
    shapes: &std::collections::BTreeMap<String, Vec<usize>>,
) -> Result<(), String> {
    const OTHER_MODEL: &str = "the optimizer state belongs to a model of another configuration";
    let root = decode_checked(bytes)?;
    let Some(Node::Map(entries)) = root.get("item") else {
        return Err(damaged("it holds no record: no `item` map"));
    };
    for (key, value) in entries {
        let Node::Text(id) = key else {
            return Err(damaged(
                "a state is keyed by something other than a parameter id",
            ));
        };
        let want = shapes.get(id).ok_or_else(|| {
            format!("{OTHER_MODEL}: it holds a state for parameter `{id}`, which the model does not have")
        })?;
        walk(value, &mut vec![id.clone()], &mut |path, got| {
            // burn's per-rank variants (`Rank2`) build tensors of that rank.
            let rank_ok = path.iter().all(|p| {
                p.strip_prefix("Rank")
                    .and_then(|r| r.parse::<usize>().ok())
                    .is_none_or(|r| r == want.len())
            });
            if rank_ok && got.iter().map(|&d| d as usize).eq(want.iter().copied()) {
                Ok(())
            } else {
                Err(format!(
                    "{OTHER_MODEL}: state `{}` has shape {got:?}, its parameter {want:?}",
                    path.join(".")
                ))
            }
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;

    #[derive(Serialize)]
    struct Tensor<'a> {
        #[serde(with = "serde_bytes_slice")]
        bytes: &'a [u8],
        shape: Vec<usize>,
        dtype: &'a str,
    }

    mod serde_bytes_slice {
        pub fn serialize<S: serde::Serializer>(b: &&[u8], s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(b)
        }
    }

    fn record(bytes: &[u8], shape: Vec<usize>, dtype: &str) -> Vec<u8> {
        let mut item = std::collections::BTreeMap::new();
        item.insert(
            "weight",
            Tensor {
                bytes,
                shape,
                dtype,
            },
        );
        rmp_serde::to_vec_named(&item).unwrap()
    }

    #[test]
    fn tensors_whose_bytes_fill_their_shape_pass_and_others_are_named() {
        assert_eq!(
            check_record_tensors(&record(&[0; 24], vec![2, 3], "F32")),
            Ok(())
        );
        assert_eq!(
            check_record_tensors(&record(&[0; 6], vec![2, 3], "U8")),
            Ok(())
        );
        assert_eq!(
            check_record_tensors(&record(&[0; 16], vec![2, 3], "F32")),
            Err(damaged(
                "tensor `weight` holds 16 bytes, its shape [2, 3] needs 24"
            ))
        );
        let huge = check_record_tensors(&record(&[0; 4], vec![1 << 40, 1 << 40], "F32"));
        assert_eq!(
            huge,
            Err(damaged(
                "tensor `weight` holds 4 bytes, its shape [1099511627776, 1099511627776] needs more than 2^64"
            ))
        );
        assert!(check_record_tensors(&record(&[0; 4], vec![1], "Q8")).is_err());
        assert!(check_record_tensors(b"\xc1not msgpack").is_err());
        // A file of two million small values is refused before its tree is built.
        let many = rmp_serde::to_vec(&vec![0u8; 2 << 20]).unwrap();
        let refused = check_record_tensors(&many).unwrap_err();
        assert!(refused.contains("more than 1048576 values"), "{refused}");
    }

    /// An optimizer-state file as burn lays it out: `item: {id: {V1: {RankN: {…}}}}`.
    fn state(id: &str, rank: &str, shape: Vec<usize>) -> Vec<u8> {
        let n: usize = shape.iter().product();
        let bytes = vec![0u8; 4 * n];
        let tensor = Tensor {
            bytes: &bytes,
            shape,
            dtype: "F32",
        };
        let momentum = nest("moment_1", tensor);
        let item = nest(id, nest("V1", nest(rank, nest("momentum", momentum))));
        let root = std::collections::BTreeMap::from([("item", item)]);
        rmp_serde::to_vec_named(&root).unwrap()
    }

    fn nest<V: Serialize>(key: &str, value: V) -> std::collections::BTreeMap<String, V> {
        std::collections::BTreeMap::from([(key.to_string(), value)])
    }

    #[test]
    fn optimizer_states_must_match_their_parameters() {
        let shapes = std::collections::BTreeMap::from([("7".to_string(), vec![2, 3])]);
        assert_eq!(
            check_param_record(&state("7", "Rank2", vec![2, 3]), &shapes),
            Ok(())
        );
        let wrong = check_param_record(&state("7", "Rank2", vec![3, 2]), &shapes).unwrap_err();
        assert_eq!(
            wrong,
            "the optimizer state belongs to a model of another configuration: state \
             `7.V1.Rank2.momentum.moment_1` has shape [3, 2], its parameter [2, 3]"
        );
        assert!(check_param_record(&state("7", "Rank1", vec![2, 3]), &shapes).is_err());
        let stranger = check_param_record(&state("8", "Rank2", vec![2, 3]), &shapes).unwrap_err();
        assert!(
            stranger.contains("parameter `8`, which the model does not have"),
            "{stranger}"
        );
        assert!(check_param_record(b"\x90", &shapes).is_err());
    }

    #[test]
    fn the_weights_calmflow_writes_pass() {
        use burn::backend::NdArray;
        let device = Default::default();
        let model = crate::CalmFlowConfig::new(2)
            .with_hidden(8)
            .with_layers(1)
            .with_heads(2)
            .init::<NdArray<f64>>(&device)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.mpk");
        crate::save_module(&model, &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(check_record_tensors(&bytes), Ok(()));
        // The first tensor's shape claims a row more than its bytes hold: refused.
        let damaged = grow_first_dimension(&bytes);
        let message = check_record_tensors(&damaged).unwrap_err();
        assert!(
            message.contains("holds") && message.contains("needs"),
            "{message}"
        );
    }

    /// The bytes of a record with the first dimension of its first 2-D shape raised by
    /// one (MessagePack's positive fixint `n` → `n + 1`, in the array after `shape`).
    fn grow_first_dimension(bytes: &[u8]) -> Vec<u8> {
        let key = b"\xa5shape\x92";
        let at = bytes
            .windows(key.len())
            .position(|w| w == key)
            .expect("a 2-D shape")
            + key.len();
        let mut out = bytes.to_vec();
        assert!(out[at] < 0x7f, "a small first dimension");
        out[at] += 1;
        out
    }
}
