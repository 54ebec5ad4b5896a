//! Train/validation/test splits, and splits that hold out chosen label combinations for
//! "unseen condition" experiments.

use std::collections::{BTreeMap, BTreeSet};

use rand::seq::SliceRandom;

use crate::error::{DataError, Result};
use crate::rng::seeded_rng;

/// Indices of the three parts of a split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// Training indices.
    pub train: Vec<usize>,
    /// Validation indices.
    pub validation: Vec<usize>,
    /// Test indices.
    pub test: Vec<usize>,
}

/// A seeded random split of `0..n`: `⌊n·validation⌋` validation and `⌊n·test⌋` test
/// indices, the rest for training; each part sorted.
///
/// ```
/// let s = calmflow_data::split_by_fraction(10, 0.2, 0.1, 0).unwrap();
/// assert_eq!((s.train.len(), s.validation.len(), s.test.len()), (7, 2, 1));
/// ```
pub fn split_by_fraction(n: usize, validation: f64, test: f64, seed: u64) -> Result<Split> {
    for (name, f) in [("validation", validation), ("test", test)] {
        if !(0.0..1.0).contains(&f) {
            return Err(DataError::invalid(
                if name == "validation" {
                    "validation"
                } else {
                    "test"
                },
                format!("fraction must lie in [0, 1), got {f}"),
            ));
        }
    }
    if validation + test >= 1.0 {
        return Err(DataError::invalid(
            "validation",
            format!(
                "validation + test = {} leaves no training data",
                validation + test
            ),
        ));
    }
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut seeded_rng(seed));
    let n_val = (n as f64 * validation).floor() as usize;
    let n_test = (n as f64 * test).floor() as usize;
    let mut validation_idx = idx[..n_val].to_vec();
    let mut test_idx = idx[n_val..n_val + n_test].to_vec();
    let mut train = idx[n_val + n_test..].to_vec();
    train.sort_unstable();
    validation_idx.sort_unstable();
    test_idx.sort_unstable();
    Ok(Split {
        train,
        validation: validation_idx,
        test: test_idx,
    })
}

/// Categorical conditions of each point: named columns of string labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Conditions {
    names: Vec<String>,
    /// `columns[c][i]`: label of point `i` in column `c`.
    columns: Vec<Vec<String>>,
}

impl Conditions {
    /// Builds from named columns of equal length.
    pub fn new(columns: Vec<(String, Vec<String>)>) -> Result<Self> {
        let Some(n) = columns.first().map(|c| c.1.len()) else {
            return Err(DataError::invalid(
                "columns",
                "need at least one condition column",
            ));
        };
        if let Some((name, col)) = columns.iter().find(|c| c.1.len() != n) {
            return Err(DataError::Shape {
                what: format!("condition column `{name}`"),
                expected: format!("{n} labels"),
                actual: format!("{} labels", col.len()),
            });
        }
        let (names, columns) = columns.into_iter().unzip();
        Ok(Self { names, columns })
    }

    /// Number of points.
    pub fn len(&self) -> usize {
        self.columns[0].len()
    }

    /// True when there are no points.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Column names.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The label combination of point `i`, one label per column.
    pub fn combination(&self, i: usize) -> Vec<&str> {
        self.columns.iter().map(|c| c[i].as_str()).collect()
    }

    /// Each distinct combination and the points that have it, in sorted order.
    pub fn groups(&self) -> BTreeMap<Vec<String>, Vec<usize>> {
        let mut g: BTreeMap<Vec<String>, Vec<usize>> = BTreeMap::new();
        for i in 0..self.len() {
            g.entry(self.combination(i).into_iter().map(String::from).collect())
                .or_default()
                .push(i);
        }
        g
    }

    /// A combination written as one string, its labels joined by `separator` in column
    /// order ("CD19+ B/S"). A label may itself contain the separator ("G2/M",
    /// "CD4+/CD25 T Reg"): of the ways to cut the string into one part per column, the
    /// one whose every part is a label of its column is taken; none or several are errors
    /// that list the labels.
    pub fn split_joined(&self, joined: &str, separator: char) -> Result<Vec<String>> {
        let k = self.names.len();
        let cuts: Vec<usize> = joined.match_indices(separator).map(|(i, _)| i).collect();
        let known: Vec<BTreeSet<&str>> = self
            .columns
            .iter()
            .map(|c| c.iter().map(String::as_str).collect())
            .collect();
        let mut found: Vec<Vec<String>> = Vec::new();
        // Choose k − 1 of the separators, in increasing order.
        let mut chosen: Vec<usize> = (0..k.saturating_sub(1)).collect();
        if chosen.len() <= cuts.len() {
            loop {
                let mut parts = Vec::with_capacity(k);
                let mut start = 0;
                for &c in &chosen {
                    parts.push(&joined[start..cuts[c]]);
                    start = cuts[c] + separator.len_utf8();
                }
                parts.push(&joined[start..]);
                if parts.iter().zip(&known).all(|(p, set)| set.contains(p)) {
                    found.push(parts.iter().map(|p| p.to_string()).collect());
                }
                // Next combination of k − 1 separator indices out of cuts.len().
                let Some(pos) = (0..chosen.len())
                    .rev()
                    .find(|&p| chosen[p] < cuts.len() - chosen.len() + p)
                else {
                    break;
                };
                chosen[pos] += 1;
                for q in pos + 1..chosen.len() {
                    chosen[q] = chosen[q - 1] + 1;
                }
            }
        }
        let labels = || {
            self.names
                .iter()
                .zip(&known)
                .map(|(n, set)| {
                    format!(
                        "{n}: {}",
                        set.iter().copied().collect::<Vec<_>>().join(", ")
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => Err(DataError::invalid(
                "held_out",
                format!(
                    "`{joined}` is not {k} labels joined by '{separator}' in the order {} (labels: {})",
                    self.names.join(", "),
                    labels()
                ),
            )),
            _ => Err(DataError::invalid(
                "held_out",
                format!(
                    "`{joined}` can be read as {} combinations ({}); give the labels one by one",
                    found.len(),
                    found
                        .iter()
                        .map(|f| f.join(" | "))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
        }
    }

    /// Splits the points into those whose combination is *not* in `held_out` (train) and
    /// those whose combination is (test).
    ///
    /// Every held-out combination must name one label per column, each label must occur
    /// in the data, the combination must have at least one point, and each of its labels
    /// must still occur in the training part (so the test asks for a new *combination* of
    /// known labels). Violations are typed errors.
    pub fn hold_out(&self, held_out: &[Vec<String>]) -> Result<(Vec<usize>, Vec<usize>)> {
        let present: Vec<BTreeSet<&str>> = self
            .columns
            .iter()
            .map(|c| c.iter().map(String::as_str).collect())
            .collect();
        let held: BTreeSet<Vec<&str>> = held_out
            .iter()
            .map(|combo| {
                if combo.len() != self.names.len() {
                    return Err(DataError::Shape {
                        what: "held-out combination".into(),
                        expected: format!(
                            "{} labels ({})",
                            self.names.len(),
                            self.names.join(", ")
                        ),
                        actual: format!("{} labels", combo.len()),
                    });
                }
                for (c, label) in combo.iter().enumerate() {
                    if !present[c].contains(label.as_str()) {
                        return Err(DataError::UnknownLabel {
                            column: self.names[c].clone(),
                            label: label.clone(),
                            present: present[c].iter().copied().collect::<Vec<_>>().join(", "),
                        });
                    }
                }
                Ok(combo.iter().map(String::as_str).collect())
            })
            .collect::<Result<_>>()?;
        let (mut train, mut test) = (Vec::new(), Vec::new());
        for i in 0..self.len() {
            if held.contains(&self.combination(i)) {
                test.push(i);
            } else {
                train.push(i);
            }
        }
        for combo in &held {
            if !test.iter().any(|&i| &self.combination(i) == combo) {
                return Err(DataError::invalid(
                    "held_out",
                    format!("combination {combo:?} has no points"),
                ));
            }
            for (c, label) in combo.iter().enumerate() {
                if !train.iter().any(|&i| self.columns[c][i] == *label) {
                    return Err(DataError::invalid(
                        "held_out",
                        format!(
                            "label `{label}` of column `{}` would not occur in training",
                            self.names[c]
                        ),
                    ));
                }
            }
        }
        Ok((train, test))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn fraction_split_is_a_seeded_partition() {
        let a = split_by_fraction(1000, 0.1, 0.2, 3).unwrap();
        let b = split_by_fraction(1000, 0.1, 0.2, 3).unwrap();
        let c = split_by_fraction(1000, 0.1, 0.2, 4).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(
            (a.train.len(), a.validation.len(), a.test.len()),
            (700, 100, 200)
        );
        let mut all: Vec<usize> = a
            .train
            .iter()
            .chain(&a.validation)
            .chain(&a.test)
            .copied()
            .collect();
        all.sort_unstable();
        assert_eq!(all, (0..1000).collect::<Vec<_>>());
        assert!(split_by_fraction(10, 0.6, 0.4, 0).is_err());
        assert!(split_by_fraction(10, -0.1, 0.0, 0).is_err());
    }

    #[test]
    fn holding_out_combinations() {
        let cond = Conditions::new(vec![
            ("cell".into(), s(&["T", "T", "B", "B", "NK", "NK"])),
            ("phase".into(), s(&["G1", "S", "G1", "S", "G1", "S"])),
        ])
        .unwrap();
        let (train, test) = cond.hold_out(&[s(&["B", "S"])]).unwrap();
        assert_eq!(test, vec![3]);
        assert_eq!(train, vec![0, 1, 2, 4, 5]);
        assert_eq!(cond.groups().len(), 6);
        let e = cond.hold_out(&[s(&["Mono", "S"])]).unwrap_err();
        assert!(matches!(e, DataError::UnknownLabel { .. }), "{e}");
        assert!(e.to_string().contains("B, NK, T"));
        // Holding out both B combinations removes B from training entirely.
        assert!(cond.hold_out(&[s(&["B", "S"]), s(&["B", "G1"])]).is_err());
        assert!(cond.hold_out(&[s(&["B"])]).is_err());
        assert!(Conditions::new(vec![("a".into(), s(&["x"])), ("b".into(), s(&[]))]).is_err());
    }

    /// Joined combinations are cut where every part is a label, whichever column's labels
    /// contain the separator.
    #[test]
    fn joined_combinations_are_split_against_the_labels() {
        let cond = Conditions::new(vec![
            (
                "cell_type".into(),
                s(&["CD4+/CD25 T Reg", "B", "B", "CD4+/CD25 T Reg"]),
            ),
            ("phase".into(), s(&["G2/M", "S", "G2/M", "S"])),
        ])
        .unwrap();
        assert_eq!(cond.split_joined("B/G2/M", '/').unwrap(), s(&["B", "G2/M"]));
        assert_eq!(
            cond.split_joined("CD4+/CD25 T Reg/S", '/').unwrap(),
            s(&["CD4+/CD25 T Reg", "S"])
        );
        assert_eq!(
            cond.split_joined("CD4+/CD25 T Reg/G2/M", '/').unwrap(),
            s(&["CD4+/CD25 T Reg", "G2/M"])
        );
        let e = cond.split_joined("NK/S", '/').unwrap_err().to_string();
        assert!(e.contains("cell_type: B, CD4+/CD25 T Reg"), "{e}");
        assert!(cond.split_joined("B", '/').is_err());
        // Ambiguous: labels "a/b" + "c" and "a" + "b/c" both exist.
        let amb = Conditions::new(vec![
            ("x".into(), s(&["a/b", "a"])),
            ("y".into(), s(&["c", "b/c"])),
        ])
        .unwrap();
        let e = amb.split_joined("a/b/c", '/').unwrap_err().to_string();
        assert!(e.contains("2 combinations"), "{e}");
        // One column: the whole string is the label.
        let one = Conditions::new(vec![("x".into(), s(&["a/b", "c"]))]).unwrap();
        assert_eq!(one.split_joined("a/b", '/').unwrap(), s(&["a/b"]));
    }
}
