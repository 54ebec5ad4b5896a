//! Shared helpers of the calmflow benchmarks.
