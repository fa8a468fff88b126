//! Fused grid attention beyond the generated op tests: fused == unfused (forward and every
//! gradient) for each seed model's pattern, a launch of more than 65,535 groups, and user errors.

use tubelet::ops::grid_attention::{grid_attention_unfused, Cls, Part, Pattern, Span, TokenGrid};
use tubelet::testing::{assert_close, Tol};
use tubelet::{gpu_or_skip, Tensor};

/// Both GPU paths on the same qkv and upstream gradient: outputs and d qkv must agree.
fn fused_matches_unfused(
    what: &str,
    b: usize,
    heads: usize,
    hd: usize,
    grid: TokenGrid,
    parts: &[Part],
    seed: u64,
) {
    let n = grid.n_tokens();
    let qkv = Tensor::rand_uniform(&[b, n, 3 * heads * hd], -2.0, 2.0, seed).unwrap();
    let scale = (hd as f32).powf(-0.5);
    let c_out: usize = parts.iter().map(|p| p.heads.len()).sum::<usize>() * hd;
    let dy = Tensor::rand_uniform(&[b, n, c_out], -1.0, 1.0, seed + 1).unwrap();
    let x1 = qkv.detach().param();
    let y1 = x1.grid_attention_parts(heads, scale, grid, parts);
    let g1 = y1.backward_with(dy.detach()).unwrap();
    let x2 = qkv.detach().param();
    let y2 = grid_attention_unfused(&x2, heads, scale, grid, parts).unwrap();
    let g2 = y2.backward_with(dy.detach()).unwrap();
    // Two f32 computations of the same softmax sums in different orders.
    let tol = Tol::new(
        1e-4,
        1e-4,
        "two f32 evaluation orders of the same group sums",
    );
    assert_close(&format!("{what}: y"), &y1, &y2.to_cpu().unwrap(), tol);
    let (d1, d2) = (g1.get(&x1).unwrap(), g2.get(&x2).unwrap());
    assert_close(
        &format!("{what}: d qkv"),
        d1,
        &d2.to_cpu().unwrap(),
        Tol::new(3e-4, 3e-4, "f32 sums, two orders"),
    );
}

fn all(heads: usize, pattern: Pattern) -> Vec<Part> {
    vec![Part {
        heads: 0..heads,
        pattern,
    }]
}

#[test]
fn grid_attention_fused_matches_unfused_for_the_seed_patterns() {
    let Some(_) = gpu_or_skip() else { return };
    let dims = [3, 5, 4];
    // TimeSformer divided space-time, (h w t) after a cls token: temporal (cls excluded), spatial
    // (cls replicated per frame, averaged).
    fused_matches_unfused(
        "timesformer temporal",
        2,
        2,
        8,
        TokenGrid::space_major(dims, Cls::Excluded),
        &all(2, Pattern::time()),
        1,
    );
    fused_matches_unfused(
        "timesformer spatial",
        2,
        2,
        8,
        TokenGrid::space_major(dims, Cls::Shared),
        &all(2, Pattern::space()),
        2,
    );
    // Axial T + W + H (TimeSformer paper), cls excluded.
    for (k, p) in [Pattern::time(), Pattern::width(), Pattern::height()]
        .into_iter()
        .enumerate()
    {
        fused_matches_unfused(
            "axial",
            1,
            3,
            5,
            TokenGrid::space_major(dims, Cls::Excluded),
            &all(3, p),
            3 + k as u64,
        );
    }
    // ViViT Model 3 (t-major, no cls): time then space; Model 4: heads split in halves.
    let vivit = TokenGrid::t_major(dims, Cls::None);
    fused_matches_unfused(
        "vivit m3 time",
        2,
        2,
        16,
        vivit,
        &all(2, Pattern::time()),
        7,
    );
    fused_matches_unfused(
        "vivit m3 space",
        2,
        2,
        16,
        vivit,
        &all(2, Pattern::space()),
        8,
    );
    let m4 = [
        Part {
            heads: 0..2,
            pattern: Pattern::time(),
        },
        Part {
            heads: 2..4,
            pattern: Pattern::space(),
        },
    ];
    fused_matches_unfused("vivit m4", 2, 4, 8, vivit, &m4, 9);
    // Space-only and joint.
    fused_matches_unfused(
        "joint",
        1,
        1,
        32,
        TokenGrid::space_major(dims, Cls::Shared),
        &all(1, Pattern::joint()),
        10,
    );
    // TimeSformer L+G (paper): local F × H/2 × W/2 blocks, then global stride 2, with cls.
    let lg = TokenGrid::space_major([4, 7, 6], Cls::Shared);
    fused_matches_unfused(
        "l+g local",
        1,
        2,
        8,
        lg,
        &all(2, Pattern::timesformer_local(lg.dims)),
        11,
    );
    fused_matches_unfused(
        "l+g global",
        1,
        2,
        8,
        lg,
        &all(2, Pattern::timesformer_global()),
        12,
    );
    // Ragged blocks and strides on every axis at once.
    let ragged = Pattern([Span::Stride(2), Span::Block(3), Span::Stride(3)]);
    fused_matches_unfused(
        "ragged",
        2,
        1,
        3,
        TokenGrid::t_major([5, 7, 5], Cls::None),
        &all(1, ragged),
        13,
    );
}

/// 1 × 1 × 300 × 300 tokens attending over T = 1: 90,000 groups, more workgroups than one launch
/// axis holds (the instances are folded over y and z). Each output is its own v.
#[test]
fn grid_attention_folds_more_than_65535_groups() {
    let Some(_) = gpu_or_skip() else { return };
    let grid = TokenGrid::t_major([1, 300, 300], Cls::None);
    let qkv = Tensor::rand_uniform(&[1, 90_000, 3], -1.0, 1.0, 5).unwrap();
    let y = qkv
        .grid_attention(1, 1.0, grid, Pattern::time())
        .to_vec()
        .unwrap();
    let x = qkv.to_vec().unwrap();
    for i in (0..90_000).step_by(997).chain([89_999]) {
        assert_eq!(y[i], x[3 * i + 2], "token {i}");
    }
}

#[test]
fn grid_attention_errors_name_the_problem() {
    let Some(_) = gpu_or_skip() else { return };
    let grid = TokenGrid::t_major([2, 3, 4], Cls::Shared);
    let err = |x: Tensor, heads: usize, grid: TokenGrid, parts: &[Part]| {
        x.try_grid_attention_parts(heads, 1.0, grid, parts)
            .expect_err("an error")
            .to_string()
    };
    let e = err(
        Tensor::zeros(&[1, 24, 6]),
        1,
        grid,
        &all(1, Pattern::time()),
    );
    assert!(e.contains("grid_attention") && e.contains("(B, 25,"), "{e}");
    let e = err(
        Tensor::zeros(&[1, 25, 20]),
        2,
        grid,
        &all(2, Pattern::time()),
    );
    assert!(e.contains("3·heads"), "{e}");
    let overlap = [
        Part {
            heads: 0..2,
            pattern: Pattern::time(),
        },
        Part {
            heads: 1..2,
            pattern: Pattern::space(),
        },
    ];
    let e = err(Tensor::zeros(&[1, 25, 6]), 2, grid, &overlap);
    assert!(e.contains("disjoint"), "{e}");
    let bad = TokenGrid {
        dims: [2, 3, 4],
        strides: [1, 2, 3],
        cls: Cls::None,
    };
    let e = err(Tensor::zeros(&[1, 24, 3]), 1, bad, &all(1, Pattern::time()));
    assert!(e.contains("strides"), "{e}");
    let e = err(
        Tensor::zeros(&[1, 25, 3]),
        1,
        grid,
        &all(1, Pattern([Span::Block(0), Span::All, Span::All])),
    );
    assert!(e.contains("Block"), "{e}");
    let long = TokenGrid::t_major([1, 40, 40], Cls::None);
    let e = err(
        Tensor::zeros(&[1, 1600, 3 * 64]),
        1,
        long,
        &all(1, Pattern::space()),
    );
    assert!(e.contains("1600 tokens") && e.contains("budget"), "{e}");
}
