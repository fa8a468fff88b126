//! MViT pooled attention: the fused `pooled_attention` path of `MultiScaleAttention::forward`
//! against its composed twin `forward_unfused` (materialised scores and rel-pos expansion),
//! forward and every gradient, for v1 (no rel-pos) and v2 (rel-pos, residual pooling), on tiny
//! grids with odd sizes and Nq both below and above Nk. Also the op's user-facing shape errors.

use tubelet::nn::Init;
use tubelet::{gpu_or_skip, Rng, Tensor};
use tubelet_models::mvit::{AttentionSpec, MultiScaleAttention, Pool, PoolMode};

fn spec(v2: bool, thw: [usize; 3], q_stride: [usize; 3], kv_stride: [usize; 3]) -> AttentionSpec {
    let kernel = |s: [usize; 3]| s.map(|s| if s > 1 { s + 1 } else { 3 });
    let pool = |s: [usize; 3]| {
        Some(Pool {
            kernel: kernel(s),
            stride: s,
        })
    };
    let mut a = AttentionSpec {
        dim: 10,
        dim_out: if v2 { 12 } else { 10 },
        heads: 2,
        thw,
        pool_q: pool(q_stride),
        pool_kv: pool(kv_stride),
        mode: PoolMode::Conv,
        qkv_bias: true,
        rel_pos: None,
        residual_pooling: v2,
    };
    if v2 {
        let (q, kv) = a.grids().unwrap();
        a.rel_pos = Some([2 * q[1].max(kv[1]) - 1, 2 * thw[0] - 1]);
    }
    a
}

/// Fused and unfused forward agree, and so do the gradients of Σ y·r for x and every parameter.
fn fused_matches_unfused(spec: AttentionSpec, seed: u64) {
    let Some(_) = gpu_or_skip() else { return };
    let attn = MultiScaleAttention::new(&mut Init::new(seed), spec.clone()).unwrap();
    let mut named = Vec::new();
    attn.params("attn", &mut named);
    // Values far from the 0.02 init so that every term (rel-pos tables included) matters.
    let mut rng = Rng::new(seed + 1);
    for (name, t) in &named {
        let centre = if name.contains("norm_") && name.ends_with("weight") {
            1.0
        } else {
            0.0
        };
        let v: Vec<f32> = (0..t.numel())
            .map(|_| (centre + rng.uniform() - 0.5) as f32)
            .collect();
        t.write(&v).unwrap();
    }
    let b = 2;
    let n = 1 + spec.thw.iter().product::<usize>();
    let xs: Vec<f32> = (0..b * n * spec.dim)
        .map(|_| (2.0 * rng.uniform() - 1.0) as f32)
        .collect();
    let x = Tensor::from_slice(&xs, &[b, n, spec.dim]).unwrap().param();
    let fused = attn.forward(&x).unwrap();
    let unfused = attn.forward_unfused(&x).unwrap();
    assert_eq!(fused.shape(), unfused.shape());
    let (f, u) = (fused.to_vec().unwrap(), unfused.to_vec().unwrap());
    let label = format!(
        "{:?} q {:?} kv {:?} rel {:?}",
        spec.thw, attn.q_thw, attn.kv_thw, spec.rel_pos
    );
    for (i, (a, w)) in f.iter().zip(&u).enumerate() {
        // Two f32 orders of the same sums (online softmax vs a materialised row): ~1e-6 relative.
        assert!(
            (a - w).abs() <= 2e-5 + 2e-5 * w.abs(),
            "{label}: y[{i}] fused {a}, unfused {w}"
        );
    }
    let r: Vec<f32> = (0..f.len())
        .map(|_| (2.0 * rng.uniform() - 1.0) as f32)
        .collect();
    let rt = Tensor::from_slice(&r, fused.shape()).unwrap();
    let gf = fused.mul(&rt).sum_all().backward().unwrap();
    let gu = unfused.mul(&rt).sum_all().backward().unwrap();
    let mut all = named.clone();
    all.push(("x".into(), x.clone()));
    for (name, t) in &all {
        let a = gf
            .get(t)
            .unwrap_or_else(|| panic!("{label}: {name} has no fused gradient"))
            .to_vec()
            .unwrap();
        let w = gu
            .get(t)
            .unwrap_or_else(|| panic!("{label}: {name} has no unfused gradient"))
            .to_vec()
            .unwrap();
        let scale = w.iter().map(|v| v.abs()).fold(0.0, f32::max).max(1e-3);
        for (i, (g, e)) in a.iter().zip(&w).enumerate() {
            // f32 backward, P recomputed from the lse vs the stored softmax: ~1e-5 of the largest;
            // the absolute floor is for norm_k.bias, whose true gradient is 0 (softmax is
            // invariant to a shift shared by all keys) and whose f32 value is rounding noise.
            assert!(
                (g - e).abs() <= 2e-4 * scale + 2e-6,
                "{label}: d{name}[{i}] fused {g}, unfused {e} (scale {scale})"
            );
        }
    }
}

#[test]
fn mvit_fused_attention_matches_unfused_v1() {
    // Q pooled 2×2×2 (3×5×5 -> 2×3×3), K/V 1×2×2 (-> 3×3×3): Nq 19 < Nk 28.
    fused_matches_unfused(spec(false, [3, 5, 5], [2, 2, 2], [1, 2, 2]), 11);
}

#[test]
fn mvit_fused_attention_matches_unfused_v2_rel_pos_residual() {
    // Q pooled 1×2×2 (3×7×7 -> 3×4×4, 49 queries), K/V 1×4×4 (-> 3×2×2, 13 keys).
    fused_matches_unfused(spec(true, [3, 7, 7], [1, 2, 2], [1, 4, 4]), 23);
    // Q not pooled beyond the stride-1 conv (Nq > Nk), kv 1×2×2 on an odd grid.
    fused_matches_unfused(spec(true, [2, 5, 5], [1, 1, 1], [1, 2, 2]), 29);
}

#[test]
fn pooled_attention_rejects_bad_shapes() {
    let Some(_) = gpu_or_skip() else { return };
    let q = Tensor::zeros(&[1, 2, 5, 8]);
    let k = Tensor::zeros(&[1, 2, 9, 8]);
    // Nk = 1 + 2·2·2 with cls; a wrong grid, a wrong v and a wrong rel each name the tensors.
    assert!(q
        .try_pooled_attention(&k, &k, None, 0.3, true, [2, 2, 2])
        .is_ok());
    let e = q
        .try_pooled_attention(&k, &k, None, 0.3, true, [2, 2, 3])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("k [1, 2, 9, 8]") && e.contains("[2, 2, 3]"),
        "{e}"
    );
    let e = q
        .try_pooled_attention(
            &k,
            &Tensor::zeros(&[1, 2, 9, 7]),
            None,
            0.3,
            true,
            [2, 2, 2],
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("v [1, 2, 9, 7]"), "{e}");
    let rel = Tensor::zeros(&[1, 2, 5, 6]);
    let e = q
        .try_pooled_attention(&k, &k, Some(&rel), 0.3, true, [2, 2, 2])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("rel [1, 2, 5, 6]") && e.contains("[1, 2, 4, 6]"),
        "{e}"
    );
}
