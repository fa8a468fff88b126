//! `tubelet bench conv`: the convolution, pooling, normalisation and shift kernels at the seed
//! models' real shapes, forward and forward+backward, against an unfused composition of existing
//! engine ops (house style §8):
//! - dense conv (ResNet-50 stem 7×7/2, 3×3, 1×1): im2col as one `index_select` of a
//!   channels-last table (with a zero row for the padding), then one `matmul`;
//! - depthwise conv (UniFormer DPE k3, local MHRA k5; MViT attention pooling k3 with strides
//!   1×2×2 / 1×4×4 / 1×8×8): a depthwise filter is no matmul (one 27-term dot per channel), so
//!   its im2col is per tap: Σ_taps index_select(table, tap) ⊙ w[:, tap];
//! - temporal shift (TSM's slice copies: narrow + zero concat), online shift (cat), channel
//!   LayerNorm (permute → layer_norm → permute).
//!
//! Before timing anything, every kernel and every unfused path is validated against the f64 CPU
//! reference at small shapes (llm.c's "All results match"). The CPU reference is timed at those
//! small shapes only; at the real shapes its f64 loops take minutes, so it is skipped there.
//!
//! ```text
//! tubelet bench conv                          # everything, kernels only at the real shapes
//! tubelet bench conv --only dwconv --iters 10 # one group
//! tubelet bench conv --only target            # depthwise 3×3×3 on (1,96,8,56,56), fwd+bwd
//! tubelet bench conv --only resnet --unfused  # also the im2col + matmul path at real shapes
//! ```

use clap::Args as ClapArgs;
use tubelet::ops::Op;
use tubelet::testing::{compare, forward_case, gpu_backward_case, Tol};
use tubelet::{no_grad, CpuTensor, Error, Indices, Result, Tensor};

use super::{print_table, time_ms, Row};
use crate::outln;
use crate::output::Output;

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// Groups to run (comma-separated): target, dwconv, mvit, resnet, shift, norm, or all.
    #[arg(long, value_delimiter = ',', default_value = "all")]
    only: Vec<String>,
    /// Untimed runs before timing (they also compile the pipelines).
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Timed runs; the median is reported.
    #[arg(long, default_value_t = 3)]
    iters: usize,
    /// Frames (B·T) of the ResNet-50 layers (TSM-R50 runs 8 per clip).
    #[arg(long, default_value_t = 1)]
    frames: usize,
    /// Also time the unfused compositions at the real shapes (slow: the per-tap depthwise
    /// composition takes 0.5-2 minutes per shape on lavapipe). They are always validated and
    /// timed at the small shapes.
    #[arg(long)]
    unfused: bool,
    /// Skip the forward+backward timings.
    #[arg(long)]
    forward_only: bool,
}

/// A differentiable function of the inputs (closures over the op's attributes).
type Fun = Box<dyn Fn(&[Tensor]) -> Result<Tensor>>;

/// One benchmark: the kernel and its unfused twin at one shape.
struct Item {
    group: &'static str,
    name: String,
    shape: String,
    /// Multiply-adds of the forward × 2 (the backward is counted as 2× the forward).
    flops: f64,
    inputs: Vec<Tensor>,
    fused: Fun,
    unfused: Option<Fun>,
}

pub fn run(args: Args) -> Result<()> {
    let mut out = Output::stdout();
    let want = |g: &str| args.only.iter().any(|o| o == "all" || o == g);
    for o in &args.only {
        if !["all", "target", "dwconv", "mvit", "resnet", "shift", "norm"].contains(&o.as_str()) {
            return Err(Error::Config(format!(
                "bench conv: --only {o:?} is not one of all, target, dwconv, mvit, resnet, shift, norm"
            )));
        }
    }
    if args.frames == 0 || args.iters == 0 {
        return Err(Error::Config(
            "bench conv: --frames and --iters must be ≥ 1".into(),
        ));
    }

    // 1. Correctness first, at small shapes: kernels and unfused paths against the reference.
    let mut small_rows = Vec::new();
    validate(&want, &mut small_rows)?;
    outln!(
        out,
        "All results match the CPU reference. Starting benchmarks.\n"
    )?;

    // 2. The seed models' real shapes.
    let items = real_items(&args, &want)?;
    let mut rows = Vec::new();
    for it in &items {
        let dy = rand(&out_shape(it)?, 99)?;
        for grad in [false, true] {
            if grad && args.forward_only {
                continue;
            }
            let pass = if grad { "fwd+bwd" } else { "fwd" };
            let flops = if grad { 3.0 * it.flops } else { it.flops };
            let baseline = match (&it.unfused, !args.unfused) {
                (Some(u), false) => {
                    let (ms, _) =
                        time_ms(args.warmup, args.iters, || step(u, &it.inputs, grad, &dy))?;
                    rows.push(Row {
                        kernel: format!("{} unfused {pass}", it.name),
                        shape: it.shape.clone(),
                        ms,
                        flops,
                        baseline_ms: None,
                    });
                    Some(ms)
                }
                _ => None,
            };
            let (ms, _) = time_ms(args.warmup, args.iters, || {
                step(&it.fused, &it.inputs, grad, &dy)
            })?;
            rows.push(Row {
                kernel: format!("{} kernel {pass}", it.name),
                shape: it.shape.clone(),
                ms,
                flops,
                baseline_ms: baseline,
            });
        }
        eprintln!("  done: [{}] {} {}", it.group, it.name, it.shape);
    }
    if !small_rows.is_empty() {
        outln!(
            out,
            "Small shapes (validation shapes; the CPU reference is the f64 definition):"
        )?;
        print_table(&small_rows)?;
        outln!(out)?;
    }
    let note = if args.unfused {
        ""
    } else {
        "; unfused paths with --unfused"
    };
    outln!(
        out,
        "Seed-model shapes (CPU reference skipped here: its f64 loops take minutes{note}):"
    )?;
    print_table(&rows)?;
    Ok(())
}

/// One forward (no tape) or forward + backward from a fixed upstream gradient.
fn step(f: &Fun, inputs: &[Tensor], grad: bool, dy: &Tensor) -> Result<()> {
    if grad {
        let params: Vec<Tensor> = inputs.iter().map(Tensor::param).collect();
        let y = f(&params)?;
        y.backward_with(dy.clone())?;
    } else {
        no_grad(|| f(inputs))?;
    }
    Ok(())
}

fn out_shape(it: &Item) -> Result<Vec<usize>> {
    Ok(no_grad(|| (it.fused)(&it.inputs))?.shape().to_vec())
}

fn rand(shape: &[usize], seed: u64) -> Result<Tensor> {
    Tensor::rand_uniform(shape, -1.0, 1.0, seed)
}

fn fmt(s: &[usize]) -> String {
    format!(
        "({})",
        s.iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(",")
    )
}

// ------------------------------------------------------------------------ unfused compositions

/// x (B, C, S…) as a channels-last table (B·S + 1, C) whose last row is zero (the padding).
fn channels_last_table(x: &Tensor) -> Result<Tensor> {
    let r = x.rank();
    let mut perm = vec![0];
    perm.extend(2..r);
    perm.push(1);
    let c = x.shape()[1];
    let rows = x.numel() / c.max(1);
    let xl = x.try_permute(&perm)?.try_reshape(&[rows, c])?;
    Tensor::try_cat(&[&xl, &Tensor::zeros(&[1, c])], 0)
}

/// For every output position (b, o) and tap k, the table row it reads (the zero row on padding),
/// tap-major when `tap_major` (one list per tap) else position-major (im2col rows).
fn im2col_rows(x: &[usize], k: &[usize], s: &[usize], p: &[usize]) -> (Vec<usize>, Vec<Vec<u32>>) {
    let sp = &x[2..];
    let nd = sp.len();
    let out: Vec<usize> = (0..nd)
        .map(|d| (sp[d] + 2 * p[d] - k[d]) / s[d] + 1)
        .collect();
    let n_out: usize = out.iter().product();
    let taps: usize = k.iter().product();
    let zero = (x[0] * sp.iter().product::<usize>()) as u32;
    let mut lists = vec![Vec::with_capacity(x[0] * n_out); taps];
    for b in 0..x[0] {
        for o in 0..n_out {
            let mut oc = vec![0; nd];
            let mut r = o;
            for d in (0..nd).rev() {
                oc[d] = r % out[d];
                r /= out[d];
            }
            for (t, list) in lists.iter_mut().enumerate() {
                let mut kc = vec![0; nd];
                let mut r = t;
                for d in (0..nd).rev() {
                    kc[d] = r % k[d];
                    r /= k[d];
                }
                let mut flat = b;
                let mut inside = true;
                for d in 0..nd {
                    let q = (oc[d] * s[d] + kc[d]) as isize - p[d] as isize;
                    inside &= q >= 0 && (q as usize) < sp[d];
                    flat = flat * sp[d] + q.max(0) as usize;
                }
                list.push(if inside { flat as u32 } else { zero });
            }
        }
    }
    (out, lists)
}

/// Depthwise conv as Σ_taps gather(tap) ⊙ w[:, tap], channels-last, then back to channels-first.
fn dw_unfused(xs: &[usize], k: [usize; 3], s: [usize; 3], p: [usize; 3]) -> Result<Fun> {
    let (out, lists) = im2col_rows(xs, &k, &s, &p);
    let idx = lists
        .iter()
        .map(|l| Indices::from_slice(l))
        .collect::<Result<Vec<_>>>()?;
    let (b, c, taps) = (xs[0], xs[1], k.iter().product::<usize>());
    Ok(Box::new(move |t: &[Tensor]| {
        let table = channels_last_table(&t[0])?;
        let wt = t[1].try_reshape(&[c, taps])?.try_transpose(0, 1)?; // (K, C)
        let mut acc: Option<Tensor> = None;
        for (tap, ix) in idx.iter().enumerate() {
            let term = table
                .try_index_select(ix)?
                .try_mul(&wt.try_select(0, tap)?)?; // (B·O, C)
            acc = Some(match acc {
                None => term,
                Some(a) => a.try_add(&term)?,
            });
        }
        let y = acc
            .expect("≥ 1 tap")
            .try_reshape(&[b, out[0], out[1], out[2], c])?;
        y.try_permute(&[0, 4, 1, 2, 3])
    }))
}

/// Dense conv2d as im2col (one gather into (B·O, K·CIN)) + one matmul with w (K·CIN, COUT).
fn conv2d_unfused(xs: &[usize], ws: &[usize], s: [usize; 2], p: [usize; 2]) -> Result<Fun> {
    let (cout, cin, kk) = (ws[0], ws[1], [ws[2], ws[3]]);
    let (out, lists) = im2col_rows(xs, &kk, &s, &p);
    let taps = kk[0] * kk[1];
    let n_pos = lists[0].len();
    let rows: Vec<u32> = (0..n_pos)
        .flat_map(|m| lists.iter().map(move |l| l[m]))
        .collect();
    let idx = Indices::from_slice(&rows)?;
    let b = xs[0];
    Ok(Box::new(move |t: &[Tensor]| {
        let cols = channels_last_table(&t[0])?
            .try_index_select(&idx)?
            .try_reshape(&[n_pos, taps * cin])?;
        let wm = t[1]
            .try_permute(&[2, 3, 1, 0])?
            .try_reshape(&[taps * cin, cout])?;
        cols.try_matmul(&wm)?
            .try_reshape(&[b, out[0], out[1], cout])?
            .try_permute(&[0, 3, 1, 2])
    }))
}

/// TSM's official `shift` (ops/temporal_shift.py) as slice copies: narrow + zero concat.
fn shift_unfused(n_segment: usize, fold_div: usize) -> Fun {
    Box::new(move |t: &[Tensor]| {
        let s = t[0].shape().to_vec();
        let (nt, c, hw) = (s[0], s[1], s[2] * s[3]);
        let (n, tt, fold) = (nt / n_segment, n_segment, c / fold_div);
        let x = t[0].try_reshape(&[n, tt, c, hw])?;
        let z = Tensor::zeros(&[n, 1, fold, hw]);
        let fut = Tensor::try_cat(
            &[&x.try_narrow(1, 1, tt - 1)?.try_narrow(2, 0, fold)?, &z],
            1,
        )?;
        let past = Tensor::try_cat(
            &[&z, &x.try_narrow(1, 0, tt - 1)?.try_narrow(2, fold, fold)?],
            1,
        )?;
        let rest = x.try_narrow(2, 2 * fold, c - 2 * fold)?;
        Tensor::try_cat(&[&fut, &past, &rest], 2)?.try_reshape(&s)
    })
}

/// The online demo's `torch.cat((shift_buffer, x[:, c // 8:]), dim=1)`.
fn online_unfused(fold_div: usize) -> Fun {
    Box::new(move |t: &[Tensor]| {
        let c = t[0].shape()[1];
        let fold = c / fold_div;
        Tensor::try_cat(&[&t[1], &t[0].try_narrow(1, fold, c - fold)?], 1)
    })
}

/// UniFormer's `norm(x.flatten(2).transpose(1, 2))` transposed back: permute → LN → permute.
fn ln_unfused(eps: f32) -> Fun {
    Box::new(move |t: &[Tensor]| {
        let r = t[0].rank();
        let mut to_last = vec![0];
        to_last.extend(2..r);
        to_last.push(1);
        let mut back = vec![0, r - 1];
        back.extend(1..r - 1);
        t[0].try_permute(&to_last)?
            .try_layer_norm(&t[1], &t[2], eps)?
            .try_permute(&back)
    })
}

// ------------------------------------------------------------------------ validation

fn check(what: &str, r: std::result::Result<(), String>) -> Result<()> {
    r.map_err(|e| {
        Error::Config(format!(
            "bench conv: {what} does not match the reference, not timing it:\n{e}"
        ))
    })
}

/// `f` (an unfused path) on the case's inputs against the op's reference.
fn check_unfused<O: Op + Clone>(
    name: &str,
    case: &tubelet::testing::Case<O>,
    f: &Fun,
    tol: Tol,
) -> Result<()> {
    let want = case.op.reference(&case.inputs.iter().collect::<Vec<_>>());
    let xs = case
        .inputs
        .iter()
        .map(Tensor::from_cpu)
        .collect::<Result<Vec<_>>>()?;
    let got = no_grad(|| f(&xs))?.to_cpu()?;
    check(
        name,
        compare(&format!("{name} unfused"), &got.data, &want, tol),
    )
}

/// Times the CPU reference (forward, and forward + reference backward) of a small case, next
/// to the kernel and the unfused path on the same case.
fn small_rows<O: Op + Clone>(
    name: &str,
    case: &tubelet::testing::Case<O>,
    fused: &Fun,
    unfused: Option<&Fun>,
    flops: f64,
    rows: &mut Vec<Row>,
) -> Result<()> {
    let xs_cpu: Vec<&CpuTensor> = case.inputs.iter().collect();
    let t = std::time::Instant::now();
    let y = case.op.reference(&xs_cpu);
    let cpu_fwd = t.elapsed().as_secs_f64() * 1e3;
    let t = std::time::Instant::now();
    case.op.reference(&xs_cpu);
    case.op.reference_backward(&xs_cpu, &y);
    let cpu_both = t.elapsed().as_secs_f64() * 1e3;
    let shape = fmt(&case.inputs[0].shape);
    let xs = case
        .inputs
        .iter()
        .map(Tensor::from_cpu)
        .collect::<Result<Vec<_>>>()?;
    let dy = Tensor::from_cpu(&y)?;
    for (grad, cpu, pass) in [(false, cpu_fwd, "fwd"), (true, cpu_both, "fwd+bwd")] {
        let fl = if grad { 3.0 * flops } else { flops };
        rows.push(Row {
            kernel: format!("{name} cpu-ref f64 {pass}"),
            shape: shape.clone(),
            ms: cpu,
            flops: fl,
            baseline_ms: None,
        });
        if let Some(u) = unfused {
            let (ms, _) = time_ms(1, 3, || step(u, &xs, grad, &dy))?;
            rows.push(Row {
                kernel: format!("{name} unfused {pass}"),
                shape: shape.clone(),
                ms,
                flops: fl,
                baseline_ms: Some(cpu),
            });
        }
        let (ms, _) = time_ms(1, 3, || step(fused, &xs, grad, &dy))?;
        rows.push(Row {
            kernel: format!("{name} kernel {pass}"),
            shape: shape.clone(),
            ms,
            flops: fl,
            baseline_ms: Some(cpu),
        });
    }
    Ok(())
}

/// Validates every op's seed cases (forward and GPU backward) and each unfused path, and times
/// the CPU reference at one small case per group. Speedups in these rows are against the CPU.
fn validate(want: &dyn Fn(&str) -> bool, rows: &mut Vec<Row>) -> Result<()> {
    use tubelet::ops::{
        conv3d, depthwise_conv3d as dw, layer_norm_channels as lnc, temporal_shift as ts,
        temporal_shift_online as tso,
    };
    if want("dwconv") || want("mvit") || want("target") {
        let spec = dw::test_spec();
        for c in dw::seed_cases() {
            check("depthwise_conv3d", forward_case(&c, spec.forward_tol))?;
            check("depthwise_conv3d", gpu_backward_case(&c, spec.backward_tol))?;
        }
        let c = dw::case(
            [1, 8, 4, 14, 14],
            [3, 3, 3],
            [1, 1, 1],
            [1, 1, 1],
            false,
            11,
        );
        let u = dw_unfused(&c.inputs[0].shape, [3, 3, 3], [1, 1, 1], [1, 1, 1])?;
        check_unfused("depthwise_conv3d", &c, &u, spec.forward_tol)?;
        let (s, p) = ([1, 1, 1], [1, 1, 1]);
        let f: Fun = Box::new(move |t| t[0].try_depthwise_conv3d(&t[1], None, s, p));
        small_rows(
            "dwconv3d k3",
            &c,
            &f,
            Some(&u),
            2.0 * 8.0 * 4.0 * 196.0 * 27.0,
            rows,
        )?;
        let c = dw::case(
            [1, 3, 3, 17, 15],
            [3, 3, 3],
            [1, 4, 4],
            [1, 1, 1],
            false,
            12,
        );
        check_unfused(
            "depthwise_conv3d s1×4×4",
            &c,
            &dw_unfused(&c.inputs[0].shape, [3, 3, 3], [1, 4, 4], [1, 1, 1])?,
            spec.forward_tol,
        )?;
    }
    if want("resnet") {
        let spec = conv3d::test_spec();
        for c in conv3d::seed_cases() {
            check("conv3d", forward_case(&c, spec.forward_tol))?;
            check("conv3d", gpu_backward_case(&c, spec.backward_tol))?;
        }
        // conv2d 3×3 p1, 7×7/2 p3 and 1×1: the unfused im2col path against the reference.
        for (k, s, p, seed) in [(3, 1, 1, 13), (7, 2, 3, 14), (1, 1, 0, 19)] {
            let c = conv3d::case(
                [1, 5, 1, 19, 17],
                6,
                [1, k, k],
                [1, s, s],
                [0, p, p],
                1,
                false,
                true,
                seed,
            );
            let u = conv2d_unfused(&c.inputs[0].shape, &c.inputs[1].shape, [s, s], [p, p])?;
            check_unfused(&format!("conv2d {k}×{k}/{s}"), &c, &u, spec.forward_tol)?;
        }
        let c = conv3d::case(
            [1, 16, 1, 14, 14],
            16,
            [1, 3, 3],
            [1, 1, 1],
            [0, 1, 1],
            1,
            false,
            true,
            15,
        );
        let u = conv2d_unfused(&c.inputs[0].shape, &c.inputs[1].shape, [1, 1], [1, 1])?;
        let f: Fun = Box::new(|t| t[0].try_conv2d(&t[1], None, [1, 1], [1, 1], 1));
        small_rows(
            "conv2d 3×3",
            &c,
            &f,
            Some(&u),
            2.0 * 16.0 * 16.0 * 196.0 * 9.0,
            rows,
        )?;
    }
    if want("shift") {
        for c in ts::seed_cases() {
            check(
                "temporal_shift",
                forward_case(&c, ts::test_spec().forward_tol),
            )?;
            check(
                "temporal_shift",
                gpu_backward_case(&c, ts::test_spec().backward_tol),
            )?;
        }
        for c in tso::seed_cases() {
            check(
                "temporal_shift_online",
                forward_case(&c, tso::test_spec().forward_tol),
            )?;
            check(
                "temporal_shift_online",
                gpu_backward_case(&c, tso::test_spec().backward_tol),
            )?;
        }
        let c = ts::case([16, 64, 7, 7], 8, 8, 16);
        let u = shift_unfused(8, 8);
        check_unfused("temporal_shift", &c, &u, Tol::new(0.0, 0.0, "a copy"))?;
        let f: Fun = Box::new(|t| t[0].try_temporal_shift(8, 8));
        small_rows("temporal_shift", &c, &f, Some(&u), 0.0, rows)?;
        let c = tso::case([2, 24, 7, 7], 8, 17);
        check_unfused(
            "temporal_shift_online",
            &c,
            &online_unfused(8),
            Tol::new(0.0, 0.0, "a copy"),
        )?;
    }
    if want("norm") {
        let spec = lnc::test_spec();
        for c in lnc::seed_cases() {
            check("layer_norm_channels", forward_case(&c, spec.forward_tol))?;
            check(
                "layer_norm_channels",
                gpu_backward_case(&c, spec.backward_tol),
            )?;
        }
        let c = lnc::case(vec![1, 64, 2, 14, 14], 1e-5, 0.0, 18);
        let u = ln_unfused(c.op.eps);
        check_unfused("layer_norm_channels", &c, &u, spec.forward_tol)?;
        let eps = c.op.eps;
        let f: Fun = Box::new(move |t| t[0].try_layer_norm_channels(&t[1], &t[2], eps));
        small_rows("layer_norm_channels", &c, &f, Some(&u), 0.0, rows)?;
    }
    Ok(())
}

// ------------------------------------------------------------------------ the real shapes

fn real_items(args: &Args, want: &dyn Fn(&str) -> bool) -> Result<Vec<Item>> {
    let mut items = Vec::new();
    let mut dw = |group: &'static str,
                  name: &str,
                  x: [usize; 5],
                  k: usize,
                  s: [usize; 3],
                  p: usize|
     -> Result<()> {
        let (kk, pp) = ([k; 3], [p; 3]);
        let inputs = vec![rand(&x, 1)?, rand(&[x[1], 1, k, k, k], 2)?];
        let out: usize = (0..3).map(|d| (x[d + 2] + 2 * p - k) / s[d] + 1).product();
        let unfused = if !args.unfused {
            None
        } else {
            Some(dw_unfused(&x, kk, s, pp)?)
        };
        items.push(Item {
            group,
            name: name.into(),
            shape: format!("{} s{}×{}×{}", fmt(&x), s[0], s[1], s[2]),
            flops: 2.0 * (x[0] * x[1] * out * k * k * k) as f64,
            inputs,
            fused: Box::new(move |t| t[0].try_depthwise_conv3d(&t[1], None, s, pp)),
            unfused,
        });
        Ok(())
    };
    if want("target") || want("dwconv") {
        dw(
            "target",
            "dwconv3d k3 (issue target)",
            [1, 96, 8, 56, 56],
            3,
            [1, 1, 1],
            1,
        )?;
    }
    if want("dwconv") {
        dw(
            "dwconv",
            "dwconv3d k3 (UniFormer DPE)",
            [1, 64, 8, 56, 56],
            3,
            [1, 1, 1],
            1,
        )?;
        dw(
            "dwconv",
            "dwconv3d k5 (UniFormer MHRA)",
            [1, 64, 8, 56, 56],
            5,
            [1, 1, 1],
            2,
        )?;
    }
    if want("mvit") {
        for s in [2, 4, 8] {
            dw(
                "mvit",
                &format!("dwconv3d k3 (MViT pool s{s})"),
                [1, 96, 8, 56, 56],
                3,
                [1, s, s],
                1,
            )?;
        }
    }
    if want("resnet") {
        let f = args.frames;
        for (name, x, cout, k, s, p) in [
            ("conv2d 7×7/2 (R50 stem)", [f, 3, 224, 224], 64, 7, 2, 3),
            ("conv2d 3×3 (R50 layer1)", [f, 64, 56, 56], 64, 3, 1, 1),
            ("conv2d 1×1 (R50 layer1)", [f, 64, 56, 56], 256, 1, 1, 0),
        ] {
            let ws = [cout, x[1], k, k];
            let inputs = vec![rand(&x, 3)?, rand(&ws, 4)?];
            let o = (x[2] + 2 * p - k) / s + 1;
            let unfused = if !args.unfused {
                None
            } else {
                Some(conv2d_unfused(&x, &ws, [s, s], [p, p])?)
            };
            items.push(Item {
                group: "resnet",
                name: name.into(),
                shape: format!("{} → {cout}", fmt(&x)),
                flops: 2.0 * (f * cout * o * o * x[1] * k * k) as f64,
                inputs,
                fused: Box::new(move |t| t[0].try_conv2d(&t[1], None, [s, s], [p, p], 1)),
                unfused,
            });
        }
    }
    if want("shift") {
        let x = [8, 64, 56, 56];
        items.push(Item {
            group: "shift",
            name: "temporal_shift (TSM, 8 seg)".into(),
            shape: fmt(&x),
            flops: 0.0,
            inputs: vec![rand(&x, 5)?],
            fused: Box::new(|t| t[0].try_temporal_shift(8, 8)),
            unfused: (args.unfused).then(|| shift_unfused(8, 8)),
        });
        let x = [1, 64, 56, 56];
        items.push(Item {
            group: "shift",
            name: "temporal_shift_online".into(),
            shape: fmt(&x),
            flops: 0.0,
            inputs: vec![rand(&x, 6)?, rand(&[1, 8, 56, 56], 7)?],
            fused: Box::new(|t| Ok(t[0].try_temporal_shift_online(Some(&t[1]), 8)?.0)),
            unfused: (args.unfused).then(|| online_unfused(8)),
        });
    }
    if want("norm") {
        let x = [1, 64, 8, 56, 56];
        items.push(Item {
            group: "norm",
            name: "layer_norm_channels (UniFormer embed1)".into(),
            shape: fmt(&x),
            flops: 0.0,
            inputs: vec![rand(&x, 8)?, rand(&[64], 9)?, rand(&[64], 10)?],
            fused: Box::new(|t| t[0].try_layer_norm_channels(&t[1], &t[2], 1e-5)),
            unfused: (args.unfused).then(|| ln_unfused(1e-5)),
        });
    }
    Ok(items)
}
