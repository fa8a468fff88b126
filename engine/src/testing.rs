//! Test helpers shared by the tests and benches crates (feature "testing").
//!
//! Every kernel op exposes `test_spec()`: proptest strategies of cases (op variant + inputs) and
//! declared tolerances. Three checks run on each (tests/tests/ops/property.rs expands them per op):
//! 1. [`check_forward`]: GPU forward against the f64 reference, |gpu − ref| ≤ atol + rtol·|ref|.
//! 2. [`check_reference_backward`]: the reference VJP against central finite differences of the
//!    reference in f64, with a random upstream gradient (never all-ones).
//! 3. [`check_gpu_backward`]: the op recorded on the tape, back-propagated from a random upstream
//!    gradient on the GPU, against the reference VJP.
//!
//! On a mismatch the report names the op, the case, the shapes, and the first 5 bad elements
//! with their coordinates (llm.c's `validate_result`).

use std::ops::RangeInclusive;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use crate::autograd::apply;
use crate::ops::Op;
use crate::reference::{unravel, CpuTensor};
use crate::tensor::Tensor;

/// A tolerance with its reason: |got − want| ≤ atol + rtol·|want|.
#[derive(Clone, Copy, Debug)]
pub struct Tol {
    pub atol: f64,
    pub rtol: f64,
    pub reason: &'static str,
}

impl Tol {
    pub const fn new(atol: f64, rtol: f64, reason: &'static str) -> Tol {
        Tol { atol, rtol, reason }
    }
}

/// One test case: the op (variant and attributes) and its inputs.
#[derive(Clone)]
pub struct Case<O> {
    pub op: O,
    pub inputs: Vec<CpuTensor>,
    pub label: String,
}

impl<O> Case<O> {
    /// Inputs are rounded to f32 so that the GPU and the reference see the same values.
    pub fn new(op: O, inputs: Vec<CpuTensor>, label: String) -> Case<O> {
        let inputs = inputs
            .into_iter()
            .map(|t| t.map(|v| v as f32 as f64))
            .collect();
        Case { op, inputs, label }
    }

    pub fn describe(&self) -> String {
        let shapes: Vec<_> = self.inputs.iter().map(|t| t.shape.clone()).collect();
        format!("{} inputs {shapes:?}", self.label)
    }
}

impl<O> std::fmt::Debug for Case<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// What the generated tests need of an op.
pub struct TestSpec<O> {
    /// Cases for the GPU checks: any size, including 1, primes and non-multiples of tiles.
    pub cases: BoxedStrategy<Case<O>>,
    /// Small cases (≤ ~64 elements an input) for finite differences.
    pub small_cases: BoxedStrategy<Case<O>>,
    pub forward_tol: Tol,
    pub backward_tol: Tol,
}

/// Dimension sizes worth testing: 1, small, primes, and sizes that are not multiples of
/// the usual workgroup (256), tile (8, 16, 64) or window (7) sizes.
pub fn dim_strategy() -> BoxedStrategy<usize> {
    prop_oneof![
        3 => Just(1usize),
        4 => 2usize..=9,
        3 => prop::sample::select(vec![7usize, 11, 13, 16, 17, 31, 33, 49, 61, 64, 65, 97, 127, 257]),
        1 => 100usize..=300,
    ]
    .boxed()
}

/// A shape of rank in `ranks` whose element count is at most `max_numel` (large dims are
/// clamped down so that the product fits).
pub fn shape_strategy(ranks: RangeInclusive<usize>, max_numel: usize) -> BoxedStrategy<Vec<usize>> {
    ranks
        .prop_flat_map(|r| prop::collection::vec(dim_strategy(), r))
        .prop_map(move |mut s| {
            while s.iter().product::<usize>() > max_numel {
                let i = (0..s.len()).max_by_key(|&i| s[i]).unwrap();
                s[i] = (s[i] / 2).max(1);
            }
            s
        })
        .boxed()
}

/// The CI budget of cases per op (`PROPTEST_CASES` overrides it in the tests; `tubelet check
/// --cases N` passes its own): forward, GPU backward, finite differences.
pub const FORWARD_CASES: u32 = 24;
pub const GPU_BACKWARD_CASES: u32 = 16;
pub const NUMERIC_CASES: u32 = 48;

fn cases_from_env(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn run<O: Clone + 'static>(
    name: &str,
    strategy: &BoxedStrategy<Case<O>>,
    cases: u32,
    test: impl Fn(Case<O>) -> Result<(), String>,
) -> Result<(), String> {
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 32,
        ..Config::default()
    });
    runner
        .run(strategy, |case| test(case).map_err(TestCaseError::fail))
        .map_err(|e| format!("{name}: {e}"))
}

/// Compares `got` with `want` element by element; on failure, lists the first 5 mismatches.
pub fn compare(what: &str, got: &[f64], want: &CpuTensor, tol: Tol) -> Result<(), String> {
    if got.len() != want.data.len() {
        return Err(format!(
            "{what}: {} values, expected {} (shape {:?})",
            got.len(),
            want.data.len(),
            want.shape
        ));
    }
    let mut bad = Vec::new();
    let mut count = 0;
    let mut worst: f64 = 0.0;
    for (i, (&g, &w)) in got.iter().zip(&want.data).enumerate() {
        let err = (g - w).abs();
        let allowed = tol.atol + tol.rtol * w.abs();
        if !(err <= allowed) {
            count += 1;
            worst = worst.max(err / allowed.max(1e-300));
            if bad.len() < 5 {
                bad.push(format!(
                    "  at {:?}: got {g:.8e}, want {w:.8e}, |diff| {err:.3e}",
                    unravel(i, &want.shape)
                ));
            }
        }
    }
    if count == 0 {
        Ok(())
    } else {
        Err(format!(
            "{what}: {count} of {} elements outside atol {:e} + rtol {:e} ({}), worst {worst:.1}× allowed, shape {:?}:\n{}",
            got.len(), tol.atol, tol.rtol, tol.reason, want.shape, bad.join("\n")
        ))
    }
}

/// GPU forward against the reference.
pub fn check_forward<O: Op + Clone>(spec: TestSpec<O>) {
    let Some(_) = crate::gpu::gpu_or_skip() else {
        return;
    };
    try_check_forward(spec, cases_from_env(FORWARD_CASES)).unwrap_or_else(|e| panic!("{e}"));
}

/// [`check_forward`] over `cases` cases, returning the first failure (for `tubelet check`).
pub fn try_check_forward<O: Op + Clone>(spec: TestSpec<O>, cases: u32) -> Result<(), String> {
    run("forward_matches_reference", &spec.cases, cases, |case| {
        forward_case(&case, spec.forward_tol)
    })
}

/// One case of [`check_forward`] (also for fixed shapes that must always run, e.g. seed models).
pub fn forward_case<O: Op + Clone>(case: &Case<O>, tol: Tol) -> Result<(), String> {
    let want = case.op.reference(&case.inputs.iter().collect::<Vec<_>>());
    let xs = upload(&case.inputs)?;
    let mut op = case.op.clone();
    let y =
        crate::no_grad(|| op.forward(&xs.iter().collect::<Vec<_>>())).map_err(|e| e.to_string())?;
    if y.shape() != want.shape.as_slice() {
        return Err(format!(
            "{}: shape {:?}, reference {:?}",
            case.describe(),
            y.shape(),
            want.shape
        ));
    }
    let got = y.to_cpu().map_err(|e| e.to_string())?;
    compare(
        &format!("{} forward, {}", op.name(), case.describe()),
        &got.data,
        &want,
        tol,
    )
}

/// Reference VJP against central finite differences of the reference, in f64.
pub fn check_reference_backward<O: Op + Clone>(spec: TestSpec<O>) {
    try_check_reference_backward(spec, cases_from_env(NUMERIC_CASES))
        .unwrap_or_else(|e| panic!("{e}"));
}

/// [`check_reference_backward`] over `cases` cases, returning the first failure (CPU only).
pub fn try_check_reference_backward<O: Op + Clone>(
    spec: TestSpec<O>,
    cases: u32,
) -> Result<(), String> {
    run(
        "backward_matches_numerical",
        &spec.small_cases,
        cases,
        |case| {
            let xs: Vec<&CpuTensor> = case.inputs.iter().collect();
            let y = case.op.reference(&xs);
            let mut rng = crate::Rng::new(y.numel() as u64 * 7919 + 13);
            let r = CpuTensor::uniform(&y.shape, -1.0, 1.0, &mut rng); // random upstream gradient
            let analytic = case.op.reference_backward(&xs, &r);
            if analytic.len() != xs.len() {
                return Err(format!(
                    "{}: reference_backward returned {} gradients for {} inputs",
                    case.describe(),
                    analytic.len(),
                    xs.len()
                ));
            }
            for (k, g) in analytic.iter().enumerate() {
                let Some(g) = g else { continue };
                let mut numeric = CpuTensor::zeros(&case.inputs[k].shape);
                for i in 0..case.inputs[k].numel() {
                    let h = 1e-6 * case.inputs[k].data[i].abs().max(1.0);
                    let mut plus = case.inputs.clone();
                    plus[k].data[i] += h;
                    let mut minus = case.inputs.clone();
                    minus[k].data[i] -= h;
                    let fp = case.op.reference(&plus.iter().collect::<Vec<_>>()).dot(&r);
                    let fm = case.op.reference(&minus.iter().collect::<Vec<_>>()).dot(&r);
                    numeric.data[i] = (fp - fm) / (2.0 * h);
                }
                // Central differences in f64 at h = 1e-6: truncation ~h², rounding ~1e-16/h.
                compare(
                    &format!(
                        "{} reference backward of input {k}, {}",
                        case.op.name(),
                        case.describe()
                    ),
                    &g.data,
                    &numeric,
                    Tol::new(1e-6, 1e-5, "central differences in f64, h = 1e-6"),
                )?;
            }
            Ok(())
        },
    )
}

/// The op on the tape, back-propagated on the GPU from a random upstream gradient, against the
/// reference VJP.
pub fn check_gpu_backward<O: Op + Clone>(spec: TestSpec<O>) {
    let Some(_) = crate::gpu::gpu_or_skip() else {
        return;
    };
    try_check_gpu_backward(spec, cases_from_env(GPU_BACKWARD_CASES))
        .unwrap_or_else(|e| panic!("{e}"));
}

/// [`check_gpu_backward`] over `cases` cases, returning the first failure.
pub fn try_check_gpu_backward<O: Op + Clone>(spec: TestSpec<O>, cases: u32) -> Result<(), String> {
    run(
        "gpu_backward_matches_reference",
        &spec.cases,
        cases,
        |case| gpu_backward_case(&case, spec.backward_tol),
    )
}

/// One case of [`check_gpu_backward`].
pub fn gpu_backward_case<O: Op + Clone>(case: &Case<O>, tol: Tol) -> Result<(), String> {
    let xs_cpu: Vec<&CpuTensor> = case.inputs.iter().collect();
    let y_ref = case.op.reference(&xs_cpu);
    let mut rng = crate::Rng::new(y_ref.numel() as u64 * 104_729 + 7);
    let r = CpuTensor::uniform(&y_ref.shape, -1.0, 1.0, &mut rng).map(|v| v as f32 as f64);
    let want = case.op.reference_backward(&xs_cpu, &r);
    let xs: Vec<Tensor> = upload(&case.inputs)?
        .into_iter()
        .map(|t| t.param())
        .collect();
    let y = apply(case.op.clone(), &xs.iter().collect::<Vec<_>>()).map_err(|e| e.to_string())?;
    let dy = Tensor::from_cpu(&r).map_err(|e| e.to_string())?;
    let grads = y.backward_with(dy).map_err(|e| e.to_string())?;
    for (k, w) in want.iter().enumerate() {
        let Some(w) = w else { continue };
        let g = grads
            .get(&xs[k])
            .ok_or_else(|| format!("{}: input {k} received no gradient", case.describe()))?;
        let got = g.to_cpu().map_err(|e| e.to_string())?;
        compare(
            &format!(
                "{} GPU backward of input {k}, {}",
                case.op.name(),
                case.describe()
            ),
            &got.data,
            w,
            tol,
        )?;
    }
    Ok(())
}

fn upload(inputs: &[CpuTensor]) -> Result<Vec<Tensor>, String> {
    inputs
        .iter()
        .map(|t| Tensor::from_cpu(t).map_err(|e| e.to_string()))
        .collect()
}

/// Asserts that `got` (GPU) is within `tol` of `want` (reference); panics with the report.
pub fn assert_close(what: &str, got: &Tensor, want: &CpuTensor, tol: Tol) {
    let g = got
        .to_cpu()
        .unwrap_or_else(|e| panic!("{what}: readback failed: {e}"));
    assert_eq!(g.shape, want.shape, "{what}: shape");
    if let Err(e) = compare(what, &g.data, want, tol) {
        panic!("{e}");
    }
}
