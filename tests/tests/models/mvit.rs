//! MViT v1 / v2: preset counts (seed-models.md §0.1), the stage schedule (§6.2), the pooled
//! attention against a plain f64 CPU computation (forward and every gradient), which
//! parameters the tiny models cannot reach (`zoo.rs` trains them and checks every gradient).

use std::collections::HashMap;

use tubelet::nn::Init;
use tubelet::{gpu_or_skip, Indices, Rng, Tensor};
use tubelet_data::synthetic::{MovingShapes, Split, NUM_CLASSES};
use tubelet_models::mvit::pooling_attention::{rel_pos_index, rel_pos_resize};
use tubelet_models::mvit::{
    AttentionSpec, Config, MViT, MultiScaleAttention, Pool, PoolMode, Version,
};
use tubelet_models::{InputLayout, VideoModel};

#[test]
fn mvit_preset_counts_match_the_reference() {
    // seed-models.md §0.1: (D) counts, equal to torchvision's mvit_v1_b / mvit_v2_s metadata;
    // MViTv2-L is the count SF's own K400 config builds (its README says 217.6M).
    let cases = [
        ("mvit-b-16x4", Config::mvit_b_16x4(), 36_610_672, 70.599),
        ("mvit-b-32x3", Config::mvit_b_32x3(), 36_611_440, 170.0),
        ("mvitv2-s-16x4", Config::mvitv2_s_16x4(), 34_537_744, 64.224),
        ("mvitv2-b-32x3", Config::mvitv2_b_32x3(), 51_230_128, 224.5),
        (
            "mvitv2-l-40x3",
            Config::mvitv2_l_40x3(),
            213_390_112,
            2823.4,
        ),
    ];
    let presets = tubelet_models::presets();
    for (name, cfg, params, gmacs) in cases {
        assert_eq!(cfg.num_params().unwrap(), params, "{name}");
        let g = cfg.macs().unwrap() / 1e9;
        assert!(
            (g - gmacs).abs() / gmacs < 0.01,
            "{name}: {g} GMACs, expected {gmacs}"
        );
        let p = presets
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("{name} is not registered"));
        assert_eq!((p.params, p.gmacs), (params, g), "{name}");
    }
    for name in ["mvit-tiny", "mvitv2-tiny"] {
        let p = presets.iter().find(|p| p.name == name).unwrap();
        assert!(p.tiny && p.params > 0 && p.clip == [8, 32, 32], "{name}");
    }
}

#[test]
fn mvit_b_schedule_matches_the_stage_table() {
    // seed-models.md §6.2, MViT-B 16×4: (dim, dim_out, heads, q grid, kv grid) per block.
    let s = Config::mvit_b_16x4().schedule().unwrap();
    let row = |i: usize| {
        let (q, kv) = s[i].attn.grids().unwrap();
        (s[i].dim, s[i].dim_out, s[i].attn.heads, q, kv)
    };
    assert_eq!(row(0), (96, 192, 1, [8, 56, 56], [8, 7, 7]));
    assert_eq!(row(1), (192, 192, 2, [8, 28, 28], [8, 14, 14]));
    assert_eq!(row(2), (192, 384, 2, [8, 28, 28], [8, 7, 7]));
    assert_eq!(row(3), (384, 384, 4, [8, 14, 14], [8, 14, 14]));
    assert_eq!(row(13), (384, 768, 4, [8, 14, 14], [8, 7, 7]));
    assert_eq!(row(14), (768, 768, 8, [8, 7, 7], [8, 14, 14]));
    assert_eq!(row(15), (768, 768, 8, [8, 7, 7], [8, 7, 7]));
    // Block 14 keeps a k3³ kv conv at stride 1; v1 blocks without a q stride pool no q.
    assert_eq!(
        s[14].attn.pool_kv,
        Some(Pool {
            kernel: [3, 3, 3],
            stride: [1, 1, 1]
        })
    );
    assert_eq!(s[0].attn.pool_q, None);
    assert_eq!(
        s[1].skip,
        Some(Pool {
            kernel: [1, 3, 3],
            stride: [1, 2, 2]
        })
    );
    assert!(s.iter().all(|b| b.attn.head_dim() == 96));
    // v2: the width changes in the attention of the pooling block, and every block has a q conv.
    let s2 = Config::mvitv2_s_16x4().schedule().unwrap();
    assert_eq!(
        (s2[0].dim_out, s2[1].dim, s2[1].dim_out, s2[1].attn.dim_out),
        (96, 96, 192, 192)
    );
    assert!(s2.iter().all(|b| b.attn.pool_q.is_some()));
    // MViTv2-L: SF sizes rel-pos tables from `input_size`, which floors 39 // 2 = 19, while the
    // pooled grid is 20; from block 8 on, tables are interpolated (`get_rel_pos`).
    let l = Config::mvitv2_l_40x3().schedule().unwrap();
    assert_eq!(
        (l[8].attn.thw, l[8].attn.grids().unwrap()),
        ([20, 39, 39], ([20, 20, 20], [20, 20, 20]))
    );
    assert_eq!(l[8].attn.rel_pos, Some([37, 39])); // 2·19 − 1 rows, used as 2·20 − 1
    assert_eq!(
        (l[45].attn.thw, l[45].attn.rel_pos),
        ([20, 10, 10], Some([17, 39]))
    );
}

#[test]
fn mvit_rel_pos_index_and_resize() {
    // q 8, k 4: dist = i·1 − j·2 + 3·2.
    let idx = rel_pos_index(8, 4);
    for i in 0..8 {
        for j in 0..4 {
            assert_eq!(idx[i * 4 + j] as i64, i as i64 - 2 * j as i64 + 6);
        }
    }
    // q 2, k 4: dist = i·2 − j + 3.
    assert_eq!(rel_pos_index(2, 4), vec![3, 2, 1, 0, 5, 4, 3, 2]);
    // F.interpolate(linear, align_corners=False) from 3 to 5 rows.
    let m = rel_pos_resize(3, 5).unwrap();
    let want = [
        1.0, 0.0, 0.0, 0.6, 0.4, 0.0, 0.0, 1.0, 0.0, 0.0, 0.4, 0.6, 0.0, 0.0, 1.0,
    ];
    for (g, w) in m.iter().zip(want) {
        assert!((g - w).abs() < 1e-6, "{m:?}");
    }
    assert!(rel_pos_resize(7, 7).is_none());
}

// ---- the pooled attention against a plain f64 computation ----

/// q stride 2×2×2, kv stride 1×4×4, kernels 3³, a cls token; v2 adds rel-pos, residual pooling
/// and a width change 6 → 8.
fn small_spec(v2: bool) -> AttentionSpec {
    AttentionSpec {
        dim: if v2 { 6 } else { 8 },
        dim_out: 8,
        heads: 2,
        thw: [4, 8, 8],
        pool_q: Some(Pool {
            kernel: [3, 3, 3],
            stride: [2, 2, 2],
        }),
        pool_kv: Some(Pool {
            kernel: [3, 3, 3],
            stride: [1, 4, 4],
        }),
        mode: PoolMode::Conv,
        qkv_bias: true,
        rel_pos: v2.then_some([7, 7]), // q grid 2×4×4, kv grid 4×2×2: 2·max − 1 = 7 on each axis
        residual_pooling: v2,
    }
}

type Params = HashMap<String, Vec<f64>>;

/// Conv pooling + LayerNorm(hd) of t (N, hd) for one (batch, head), cls first, plain loops.
fn ref_pool(
    t: &[Vec<f64>],
    thw: [usize; 3],
    p: &Pool,
    w: &[f64],
    nw: &[f64],
    nb: &[f64],
) -> Vec<Vec<f64>> {
    let hd = t[0].len();
    let out = p.out(thw).unwrap();
    let k = p.kernel;
    let mut y = vec![t[0].clone()];
    for ot in 0..out[0] {
        for oh in 0..out[1] {
            for ow in 0..out[2] {
                let mut v = vec![0.0; hd];
                for a in 0..k[0] {
                    for i in 0..k[1] {
                        for j in 0..k[2] {
                            let src = [
                                ot * p.stride[0] + a,
                                oh * p.stride[1] + i,
                                ow * p.stride[2] + j,
                            ];
                            let pos: Vec<i64> =
                                (0..3).map(|d| src[d] as i64 - (k[d] / 2) as i64).collect();
                            if (0..3).any(|d| pos[d] < 0 || pos[d] >= thw[d] as i64) {
                                continue;
                            }
                            let n = 1
                                + (pos[0] as usize * thw[1] + pos[1] as usize) * thw[2]
                                + pos[2] as usize;
                            for c in 0..hd {
                                v[c] += w[((c * k[0] + a) * k[1] + i) * k[2] + j] * t[n][c];
                            }
                        }
                    }
                }
                y.push(v);
            }
        }
    }
    for row in &mut y {
        let mean = row.iter().sum::<f64>() / hd as f64;
        let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / hd as f64;
        for c in 0..hd {
            row[c] = (row[c] - mean) / (var + 1e-6).sqrt() * nw[c] + nb[c];
        }
    }
    y
}

/// SF MultiScaleAttention.forward in f64: x (B, N, dim) -> (B, Nq, dim_out).
fn ref_attention(s: &AttentionSpec, p: &Params, x: &[f64], b: usize) -> Vec<f64> {
    let (dim, att, nh) = (s.dim, s.dim_out, s.heads);
    let hd = att / nh;
    let n = x.len() / (b * dim);
    let (qg, kg) = s.grids().unwrap();
    let (w, bias) = (&p["attn.qkv.weight"], &p["attn.qkv.bias"]);
    let mut out = Vec::new();
    for bi in 0..b {
        let qkv: Vec<Vec<f64>> = (0..n)
            .map(|t| {
                (0..3 * att)
                    .map(|o| {
                        bias[o]
                            + (0..dim)
                                .map(|i| w[o * dim + i] * x[(bi * n + t) * dim + i])
                                .sum::<f64>()
                    })
                    .collect()
            })
            .collect();
        let mut y = vec![vec![0.0; att]; 1 + qg.iter().product::<usize>()];
        for h in 0..nh {
            let part = |which: usize| -> Vec<Vec<f64>> {
                qkv.iter()
                    .map(|r| r[which * att + h * hd..which * att + (h + 1) * hd].to_vec())
                    .collect()
            };
            let pool = |t: Vec<Vec<f64>>, pl: &Pool, name: &str| {
                ref_pool(
                    &t,
                    s.thw,
                    pl,
                    &p[&format!("attn.pool_{name}.weight")],
                    &p[&format!("attn.norm_{name}.weight")],
                    &p[&format!("attn.norm_{name}.bias")],
                )
            };
            let q = pool(part(0), s.pool_q.as_ref().unwrap(), "q");
            let k = pool(part(1), s.pool_kv.as_ref().unwrap(), "k");
            let v = pool(part(2), s.pool_kv.as_ref().unwrap(), "v");
            let scale = (hd as f64).powf(-0.5);
            for i in 0..q.len() {
                let mut a: Vec<f64> = k
                    .iter()
                    .map(|kr| scale * (0..hd).map(|c| q[i][c] * kr[c]).sum::<f64>())
                    .collect();
                if s.rel_pos.is_some() && i > 0 {
                    let qi = i - 1;
                    let (t, yy, xx) = (qi / (qg[1] * qg[2]), qi / qg[2] % qg[1], qi % qg[2]);
                    for (j, aj) in a.iter_mut().enumerate().skip(1) {
                        let kj = j - 1;
                        let (t2, y2, x2) = (kj / (kg[1] * kg[2]), kj / kg[2] % kg[1], kj % kg[2]);
                        // dist = i·max(k/q, 1) − j·max(q/k, 1) + (k − 1)·max(q/k, 1)
                        let dist = |i: usize, j: usize, q: usize, k: usize| {
                            let (qr, kr) = (
                                (k as f64 / q as f64).max(1.0),
                                (q as f64 / k as f64).max(1.0),
                            );
                            (i as f64 * qr - j as f64 * kr + (k - 1) as f64 * kr) as usize
                        };
                        let (dt, dh, dw) = (
                            dist(t, t2, qg[0], kg[0]),
                            dist(yy, y2, qg[1], kg[1]),
                            dist(xx, x2, qg[2], kg[2]),
                        );
                        for c in 0..hd {
                            *aj += q[i][c]
                                * (p["attn.rel_pos_t"][dt * hd + c]
                                    + p["attn.rel_pos_h"][dh * hd + c]
                                    + p["attn.rel_pos_w"][dw * hd + c]);
                        }
                    }
                }
                let m = a.iter().cloned().fold(f64::MIN, f64::max);
                let z: f64 = a.iter().map(|v| (v - m).exp()).sum();
                for c in 0..hd {
                    let mut o: f64 = a
                        .iter()
                        .zip(&v)
                        .map(|(aj, vj)| (aj - m).exp() / z * vj[c])
                        .sum();
                    if s.residual_pooling && i > 0 {
                        o += q[i][c];
                    }
                    y[i][h * hd + c] = o;
                }
            }
        }
        let (pw, pb) = (&p["attn.proj.weight"], &p["attn.proj.bias"]);
        for row in &y {
            for o in 0..att {
                out.push(pb[o] + (0..att).map(|i| pw[o * att + i] * row[i]).sum::<f64>());
            }
        }
    }
    out
}

fn pooled_attention_matches_cpu(v2: bool) {
    let Some(_) = gpu_or_skip() else { return };
    let spec = small_spec(v2);
    let attn = MultiScaleAttention::new(&mut Init::new(3), spec.clone()).unwrap();
    let mut named = Vec::new();
    attn.params("attn", &mut named);
    // Values far from the 0.02 init so that every term matters; norm weights around 1.
    let mut rng = Rng::new(if v2 { 17 } else { 5 });
    let mut params = Params::new();
    for (name, t) in &named {
        let centre = if name.contains("norm_") && name.ends_with("weight") {
            1.0
        } else {
            0.0
        };
        let v: Vec<f64> = (0..t.numel())
            .map(|_| centre + rng.uniform() - 0.5)
            .collect();
        t.write(&v.iter().map(|&v| v as f32).collect::<Vec<_>>())
            .unwrap();
        params.insert(name.clone(), v.iter().map(|&v| v as f32 as f64).collect());
    }
    let b = 2;
    let n = 1 + spec.thw.iter().product::<usize>();
    let xs: Vec<f64> = (0..b * n * spec.dim)
        .map(|_| (2.0 * rng.uniform() - 1.0) as f32 as f64)
        .collect();
    let x = Tensor::from_slice(
        &xs.iter().map(|&v| v as f32).collect::<Vec<_>>(),
        &[b, n, spec.dim],
    )
    .unwrap()
    .param();
    let y = attn.forward(&x).unwrap();
    let nq = 1 + attn.q_thw.iter().product::<usize>();
    assert_eq!(y.shape(), [b, nq, spec.dim_out]);
    let want = ref_attention(&spec, &params, &xs, b);
    let got = y.to_vec().unwrap();
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        // f32 dots of ≤ 27·hd (pool) and ≤ 17 keys; |y| is O(1).
        assert!(
            (*g as f64 - w).abs() <= 1e-4 + 1e-4 * w.abs(),
            "v2 {v2}: y[{i}] = {g}, reference {w}"
        );
    }
    // Gradients of L = Σ y·r (random r) against central differences of the f64 computation.
    let r: Vec<f64> = (0..want.len())
        .map(|_| (2.0 * rng.uniform() - 1.0) as f32 as f64)
        .collect();
    let rt =
        Tensor::from_slice(&r.iter().map(|&v| v as f32).collect::<Vec<_>>(), y.shape()).unwrap();
    let grads = y.mul(&rt).sum_all().backward().unwrap();
    let loss = |p: &Params, xs: &[f64]| {
        ref_attention(&spec, p, xs, b)
            .iter()
            .zip(&r)
            .map(|(a, b)| a * b)
            .sum::<f64>()
    };
    let eps = 1e-5;
    let check = |name: &str, g: &Tensor, numeric: &dyn Fn(usize) -> f64| {
        let g = g.to_vec().unwrap();
        let scale = g
            .iter()
            .map(|v| v.abs() as f64)
            .fold(0.0, f64::max)
            .max(1e-3);
        for (i, gi) in g.iter().enumerate() {
            let fd = numeric(i);
            // f32 backward through LayerNorm, softmax and ≤ 27-tap convs, against f64 central
            // differences: errors ~1e-4 of the tensor's largest gradient.
            assert!(
                (*gi as f64 - fd).abs() <= 2e-3 * scale,
                "v2 {v2}: d{name}[{i}] = {gi}, numeric {fd} (scale {scale})"
            );
        }
    };
    for (name, t) in &named {
        let g = grads
            .get(t)
            .unwrap_or_else(|| panic!("{name}: no gradient"));
        check(name, g, &|i| {
            let mut p = params.clone();
            p.get_mut(name).unwrap()[i] += eps;
            let up = loss(&p, &xs);
            p.get_mut(name).unwrap()[i] -= 2.0 * eps;
            (up - loss(&p, &xs)) / (2.0 * eps)
        });
    }
    check("x", grads.get(&x).expect("x: no gradient"), &|i| {
        let mut xp = xs.clone();
        xp[i] += eps;
        let up = loss(&params, &xp);
        xp[i] -= 2.0 * eps;
        (up - loss(&params, &xp)) / (2.0 * eps)
    });
}

#[test]
fn mvit_pooled_attention_matches_cpu_v1() {
    pooled_attention_matches_cpu(false);
}

#[test]
fn mvit_pooled_attention_matches_cpu_v2_rel_pos_residual() {
    pooled_attention_matches_cpu(true);
}

// ---- the tiny models ----

fn batch(cfg: &Config, n: usize, seed: u64) -> (Tensor, Indices) {
    let data = MovingShapes::new(cfg.frames, cfg.crop, seed);
    let (x, y) = data.batch(Split::Train, 0, n);
    let x = Tensor::from_slice(&x, &data.batch_shape(n)).unwrap();
    (
        InputLayout::Bcthw.from_channels_last(&x).unwrap(),
        Indices::from_slice(&y).unwrap(),
    )
}

/// What is specific to MViT of the zoo's gradient check (`zoo.rs` trains both tiny presets and
/// asserts that listed parameters get exactly zero): v2's last block pools q and holds rel-pos
/// tables that act only on the non-cls query rows the head never reads, so v2 lists them; v1,
/// with no such block, lists none. The built count matches the analytic one.
#[test]
fn mvit_v2_lists_its_unreachable_parameters_and_v1_none() {
    let Some(_) = gpu_or_skip() else { return };
    for version in [Version::V1, Version::V2] {
        let cfg = Config::tiny(version, NUM_CLASSES);
        let model = MViT::new(cfg.clone(), 11).unwrap();
        let params = model.named_params();
        let n: usize = params.iter().map(|(_, t)| t.numel()).sum();
        assert_eq!(
            n,
            cfg.num_params().unwrap(),
            "{version:?}: built vs analytic count"
        );
        let unreachable = model.params_unreachable_from_the_loss();
        assert_eq!(
            unreachable.is_empty(),
            version == Version::V1,
            "{version:?}: {unreachable:?}"
        );
        for u in &unreachable {
            assert!(
                params.iter().any(|(k, _)| k == u),
                "{version:?}: {u} is not a parameter"
            );
        }
    }
}

#[test]
fn mvit_rejects_bad_inputs_and_configs() {
    let Some(_) = gpu_or_skip() else { return };
    let model = MViT::new(Config::tiny(Version::V1, 8), 0).unwrap();
    let err = model
        .forward(&Tensor::zeros(&[1, 8, 32, 32, 3]), false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("[1, 8, 32, 32, 3]"), "{err}");
    let err = MViT::new(
        Config {
            crop: 30,
            ..Config::tiny(Version::V2, 8)
        },
        0,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("SF requires"), "{err}");
    // Drop path: trains with finite outputs; eval is unaffected (same logits as rate 0).
    let cfg = Config {
        drop_path_rate: 0.5,
        ..Config::tiny(Version::V1, 8)
    };
    let model = MViT::new(cfg.clone(), 0).unwrap();
    let plain = MViT::new(Config::tiny(Version::V1, 8), 0).unwrap();
    let (x, _) = batch(&cfg, 2, 0);
    assert!(model
        .forward(&x, true)
        .unwrap()
        .to_vec()
        .unwrap()
        .iter()
        .all(|v| v.is_finite()));
    assert_eq!(
        model.forward(&x, false).unwrap().to_vec().unwrap(),
        plain.forward(&x, false).unwrap().to_vec().unwrap()
    );
}
