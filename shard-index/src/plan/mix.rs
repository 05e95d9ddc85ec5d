//! Epoch composition: how many samples each stream contributes to one epoch.
//!
//! A stream's [`Mix`] becomes an exact integer count `T_s` before anything else happens, so
//! the rest of the planner only deals with integers and every rank agrees on the totals:
//!
//! * `Repeat(r)` → `floor(r * N_s)`: the stream is seen `r` times per epoch.
//! * `Weight(w)` → the largest-remainder share of `epoch_size` (default: the summed sample
//!   counts of the weighted streams) proportional to `w / Σw`, so the shares add up to
//!   `epoch_size` exactly.
//!
//! Floating-point products that land within a relative 1e-9 of an integer snap to it, so that
//! e.g. `Repeat(0.29)` of 100 samples gives 29 (the f64 product is 28.999999999999996).

use serde::{Deserialize, Serialize};

use super::error::{PlanError, Result};

/// How a stream takes part in the epoch.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mix {
    /// Share of the epoch proportional to this weight among all weighted streams.
    Weight(f64),
    /// Number of passes over the stream per epoch; fractions take a random subset of one more pass.
    Repeat(f64),
}

impl Mix {
    fn value(self) -> f64 {
        match self {
            Mix::Weight(v) | Mix::Repeat(v) => v,
        }
    }
}

/// Relative tolerance for snapping a float product to the nearest integer.
const SNAP: f64 = 1e-9;

/// `floor(v)` as u64, snapping values within `SNAP` (relative) of an integer; `None` on overflow.
fn snapped_floor(v: f64) -> Option<u64> {
    let rounded = v.round();
    let f = if (v - rounded).abs() <= SNAP * v.abs().max(1.0) {
        rounded
    } else {
        v.floor()
    };
    // 2^64 is exactly representable; anything at or above it does not fit.
    if !(0.0..18_446_744_073_709_551_616.0).contains(&f) {
        return None;
    }
    Some(f as u64)
}

/// One stream's input to the composition.
pub(crate) struct MixInput<'a> {
    pub name: &'a str,
    pub samples: u64,
    pub mix: Mix,
}

/// Exact per-stream epoch sample counts, in stream order.
pub(crate) fn epoch_counts(inputs: &[MixInput<'_>], epoch_size: Option<u64>) -> Result<Vec<u64>> {
    for input in inputs {
        let v = input.mix.value();
        if !v.is_finite() || v < 0.0 {
            return Err(PlanError::InvalidMix {
                stream: input.name.to_owned(),
                value: v,
            });
        }
    }

    let mut counts = vec![0u64; inputs.len()];
    let mut weighted = Vec::new();
    let mut weight_sum = 0.0f64;
    let mut weighted_samples = 0u64;
    for (i, input) in inputs.iter().enumerate() {
        match input.mix {
            Mix::Repeat(r) => {
                counts[i] = snapped_floor(r * input.samples as f64).ok_or_else(|| {
                    PlanError::SampleCountOverflow {
                        stream: input.name.to_owned(),
                    }
                })?;
            }
            Mix::Weight(w) => {
                weighted.push(i);
                weight_sum += w;
                weighted_samples =
                    weighted_samples.checked_add(input.samples).ok_or_else(|| {
                        PlanError::SampleCountOverflow {
                            stream: input.name.to_owned(),
                        }
                    })?;
            }
        }
    }

    if weighted.is_empty() {
        if epoch_size.is_some() {
            return Err(PlanError::EpochSizeWithoutWeights);
        }
        return Ok(counts);
    }
    if weight_sum <= 0.0 {
        return Err(PlanError::AllWeightsZero);
    }
    // A huge sum of finite weights can still overflow to infinity.
    if !weight_sum.is_finite() {
        let first = &inputs[weighted[0]];
        return Err(PlanError::InvalidMix {
            stream: first.name.to_owned(),
            value: weight_sum,
        });
    }

    let target = epoch_size.unwrap_or(weighted_samples);
    // Largest remainder (Hamilton) apportionment: floors first, then one extra sample to the
    // streams with the largest fractional parts until the total is exact. Ties go to the
    // earlier stream so the result is deterministic.
    let mut fractions = Vec::with_capacity(weighted.len());
    let mut assigned: u128 = 0;
    for &i in &weighted {
        let input = &inputs[i];
        let quota = target as f64 * (input.mix.value() / weight_sum);
        let floor = snapped_floor(quota)
            .ok_or_else(|| PlanError::SampleCountOverflow {
                stream: input.name.to_owned(),
            })?
            .min(target);
        counts[i] = floor;
        assigned += u128::from(floor);
        fractions.push((quota - floor as f64, i));
    }
    // Sort by descending fraction, then by stream index.
    fractions.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let target128 = u128::from(target);
    if assigned < target128 {
        // Float error can only leave a shortfall of at most a few samples per stream, but loop
        // defensively rather than assuming fewer than `weighted.len()` are missing.
        let mut missing = target128 - assigned;
        'outer: while missing > 0 {
            let mut progressed = false;
            for &(_, i) in &fractions {
                if missing == 0 {
                    break 'outer;
                }
                if inputs[i].mix.value() > 0.0 {
                    counts[i] += 1;
                    missing -= 1;
                    progressed = true;
                }
            }
            if !progressed {
                break;
            }
        }
    } else if assigned > target128 {
        // Rounding pushed the floors over the target: take back from the smallest fractions.
        let mut excess = assigned - target128;
        while excess > 0 {
            let mut progressed = false;
            for &(_, i) in fractions.iter().rev() {
                if excess == 0 {
                    break;
                }
                if counts[i] > 0 {
                    counts[i] -= 1;
                    excess -= 1;
                    progressed = true;
                }
            }
            if !progressed {
                break;
            }
        }
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(samples: u64, mix: Mix) -> MixInput<'static> {
        MixInput {
            name: "s",
            samples,
            mix,
        }
    }

    #[test]
    fn repeats_floor_and_snap() {
        let c = epoch_counts(
            &[
                input(100, Mix::Repeat(0.29)),
                input(10, Mix::Repeat(2.5)),
                input(7, Mix::Repeat(1.0)),
            ],
            None,
        )
        .unwrap();
        assert_eq!(c, vec![29, 25, 7]);
    }

    #[test]
    fn weights_use_largest_remainder() {
        let c = epoch_counts(
            &[
                input(10, Mix::Weight(1.0)),
                input(10, Mix::Weight(1.0)),
                input(10, Mix::Weight(1.0)),
            ],
            Some(100),
        )
        .unwrap();
        assert_eq!(c, vec![34, 33, 33]);
        let c = epoch_counts(
            &[input(30, Mix::Weight(0.7)), input(70, Mix::Weight(0.3))],
            None,
        )
        .unwrap();
        assert_eq!(c, vec![70, 30]);
    }

    #[test]
    fn weights_and_repeats_coexist() {
        let c = epoch_counts(
            &[input(50, Mix::Repeat(2.0)), input(30, Mix::Weight(5.0))],
            None,
        )
        .unwrap();
        assert_eq!(c, vec![100, 30]);
    }

    #[test]
    fn bad_mixes_are_rejected() {
        for bad in [-1.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                epoch_counts(&[input(1, Mix::Weight(bad))], None),
                Err(PlanError::InvalidMix { .. })
            ));
            assert!(matches!(
                epoch_counts(&[input(1, Mix::Repeat(bad))], None),
                Err(PlanError::InvalidMix { .. })
            ));
        }
        assert!(matches!(
            epoch_counts(
                &[input(1, Mix::Weight(0.0)), input(1, Mix::Weight(0.0))],
                None
            ),
            Err(PlanError::AllWeightsZero)
        ));
        assert!(matches!(
            epoch_counts(&[input(1, Mix::Repeat(1.0))], Some(5)),
            Err(PlanError::EpochSizeWithoutWeights)
        ));
        assert!(matches!(
            epoch_counts(&[input(u64::MAX, Mix::Repeat(2.0))], None),
            Err(PlanError::SampleCountOverflow { .. })
        ));
    }
}
