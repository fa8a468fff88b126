//! TimeSformer (models/src/timesformer.rs) and the grid attention every factorised block routes
//! through (models/src/grid_attention.rs): counts against seed-models.md §0.1, the grouping
//! against a plain f64 definition, and gradients reaching every parameter for the attention types without a
//! tiny preset (`zoo.rs` trains every tiny preset).

use tubelet::{gpu_or_skip, Indices, Rng, Tensor};
use tubelet_data::synthetic::{MovingShapes, Split, NUM_CLASSES};
use tubelet_models::grid_attention::{
    group_attention, group_attention_with_cls, head_split_attention, Grid, Groups, Order,
};
use tubelet_models::timesformer::{Attention, Config, TimeSformer};
use tubelet_models::{InputLayout, VideoModel};

const ALL: [Attention; 5] = [
    Attention::DividedSpaceTime,
    Attention::JointSpaceTime,
    Attention::SpaceOnly,
    Attention::SparseLocalGlobal,
    Attention::Axial,
];

fn assert_counts(c: &Config, params: usize, gmacs: f64) {
    assert_eq!(
        c.num_params(),
        params,
        "{:?} {}x{}",
        c.attention,
        c.frames,
        c.height
    );
    let g = c.macs() / 1e9;
    assert!(
        (g - gmacs).abs() / gmacs < 0.01,
        "{:?} {}x{}: {g} GMACs, expected {gmacs}",
        c.attention,
        c.frames,
        c.height
    );
}

#[test]
fn timesformer_counts_match_seed_models() {
    // seed-models.md §0.1 (D) counts, 400 classes.
    assert_counts(&Config::timesformer_base_8x224(), 121_566_352, 195.8);
    assert_counts(&Config::timesformer_hr_16x448(), 122_024_080, 1702.7);
    assert_counts(&Config::timesformer_l_96x224(), 121_633_936, 2379.9);
    assert_counts(
        &Config::vit_base(8, 224, Attention::JointSpaceTime),
        86_112_400,
        179.6,
    );
    assert_counts(
        &Config::vit_base(8, 224, Attention::SpaceOnly),
        86_106_256,
        140.5,
    );
    // L+G has T+S's layout (paper Table 1: both 121.4M at 174 classes).
    assert_eq!(
        Config::vit_base(8, 224, Attention::SparseLocalGlobal).num_params(),
        121_566_352
    );
    // 174 classes (SSv2, the paper's Table 1 setting): T+S 121.4M, axial 156.3M (ours 156.8M).
    let ssv2 = |a| {
        Config {
            num_classes: 174,
            ..Config::vit_base(8, 224, a)
        }
        .num_params()
    };
    assert_eq!(ssv2(Attention::DividedSpaceTime), 121_392_558);
    assert_eq!(ssv2(Attention::Axial), 156_846_510);
    // Every registered preset carries its config's counts.
    for p in tubelet_models::presets()
        .iter()
        .filter(|p| p.name.starts_with("timesformer"))
    {
        assert!(p.params > 0 && p.gmacs > 0.0, "{}", p.name);
    }
    let base = tubelet_models::presets()
        .into_iter()
        .find(|p| p.name == "timesformer-base")
        .unwrap();
    assert_eq!(base.params, 121_566_352);
}

#[test]
fn timesformer_rejects_bad_configs_and_inputs() {
    let err = TimeSformer::new(
        Config {
            embed_dim: 30,
            ..Config::tiny(8)
        },
        0,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("embed_dim 30"), "{err}");
    let err = TimeSformer::new(
        Config {
            height: 36,
            ..Config::tiny(8)
        },
        0,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("36"), "{err}");
    let lg = Config {
        frames: 3,
        attention: Attention::SparseLocalGlobal,
        ..Config::tiny(8)
    };
    let err = TimeSformer::new(lg, 0).err().unwrap().to_string();
    assert!(err.contains("even"), "{err}");
    let Some(_) = gpu_or_skip() else { return };
    let model = TimeSformer::new(
        Config {
            depth: 1,
            ..Config::tiny(8)
        },
        0,
    )
    .unwrap();
    let err = model
        .forward(&Tensor::zeros(&[1, 8, 32, 32, 3]), false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("[1, 8, 32, 32, 3]"), "{err}");
}

/// The group of token (t, h, w), straight from the definitions in grid_attention.rs.
fn group_of(g: Grid, groups: Groups, t: usize, h: usize, w: usize) -> (usize, usize, usize) {
    match groups {
        Groups::Time => (0, h, w),
        Groups::Space => (t, 0, 0),
        Groups::Width => (t, h, 0),
        Groups::Height => (t, 0, w),
        Groups::LocalWindows => (0, h / (g.h / 2), w / (g.w / 2)),
        Groups::StridedGlobal => (t % 2, h % 2, w % 2),
    }
}

/// Token coordinates in storage order.
fn coords(g: Grid) -> Vec<(usize, usize, usize)> {
    let mut out = vec![(0, 0, 0); g.len()];
    for t in 0..g.t {
        for h in 0..g.h {
            for w in 0..g.w {
                let i = match g.order {
                    Order::Thw => (t * g.h + h) * g.w + w,
                    Order::Hwt => (h * g.w + w) * g.t + t,
                };
                out[i] = (t, h, w);
            }
        }
    }
    out
}

/// f64 attention of query row `i` over key rows `keys`, head `hh` of `heads` (d each), on a
/// packed [3][heads][d] qkv of `l` rows per batch element.
fn attend(
    qkv: &[f32],
    b: usize,
    l: usize,
    i: usize,
    keys: &[usize],
    hh: usize,
    heads: usize,
    d: usize,
) -> Vec<f64> {
    let c = 3 * heads * d;
    let at = |r: usize, which: usize, k: usize| {
        qkv[(b * l + r) * c + which * heads * d + hh * d + k] as f64
    };
    let scale = 1.0 / (d as f64).sqrt();
    let s: Vec<f64> = keys
        .iter()
        .map(|&j| scale * (0..d).map(|k| at(i, 0, k) * at(j, 1, k)).sum::<f64>())
        .collect();
    let mx = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = s.iter().map(|x| (x - mx).exp()).collect();
    let z: f64 = e.iter().sum();
    (0..d)
        .map(|k| keys.iter().zip(&e).map(|(&j, p)| p / z * at(j, 2, k)).sum())
        .collect()
}

fn assert_close(got: &[f32], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        // f32 kernels vs f64 on O(1) values.
        assert!(
            (*g as f64 - w).abs() <= 1e-4 + 1e-4 * w.abs(),
            "{what}: element {i}: {g} vs {w}"
        );
    }
}

#[test]
fn grid_attention_matches_its_definition() {
    let Some(_) = gpu_or_skip() else { return };
    let (b, heads, d) = (2, 2, 4);
    let c = 3 * heads * d;
    let mut rng = Rng::new(3);
    let all = [
        Groups::Time,
        Groups::Space,
        Groups::Width,
        Groups::Height,
        Groups::LocalWindows,
        Groups::StridedGlobal,
    ];
    for order in [Order::Thw, Order::Hwt] {
        let g = Grid {
            t: 4,
            h: 2,
            w: 6,
            order,
        };
        let xyz = coords(g);
        let n = g.len();
        for groups in all {
            let members = |i: usize| -> Vec<usize> {
                let (t, h, w) = xyz[i];
                let key = group_of(g, groups, t, h, w);
                (0..n)
                    .filter(|&j| group_of(g, groups, xyz[j].0, xyz[j].1, xyz[j].2) == key)
                    .collect()
            };
            // Without cls.
            let qkv: Vec<f32> = (0..b * n * c)
                .map(|_| (2.0 * rng.uniform() - 1.0) as f32)
                .collect();
            let y = group_attention(
                &Tensor::from_slice(&qkv, &[b, n, c]).unwrap(),
                g,
                groups,
                heads,
                0.5,
            )
            .unwrap();
            let mut want = vec![];
            for bi in 0..b {
                for i in 0..n {
                    for hh in 0..heads {
                        want.extend(attend(&qkv, bi, n, i, &members(i), hh, heads, d));
                    }
                }
            }
            assert_close(
                &y.to_vec().unwrap(),
                &want,
                &format!("{groups:?} {order:?}"),
            );
            // With cls in row 0: it joins every group; its output is the mean over the groups.
            let qkv: Vec<f32> = (0..b * (n + 1) * c)
                .map(|_| (2.0 * rng.uniform() - 1.0) as f32)
                .collect();
            let t = Tensor::from_slice(&qkv, &[b, n + 1, c]).unwrap();
            let y = group_attention_with_cls(&t, g, groups, heads, 0.5).unwrap();
            let mut reps: Vec<usize> = vec![]; // one member of each group
            let mut seen = vec![];
            for i in 0..n {
                let key = group_of(g, groups, xyz[i].0, xyz[i].1, xyz[i].2);
                if !seen.contains(&key) {
                    seen.push(key);
                    reps.push(i);
                }
            }
            let mut want = vec![];
            for bi in 0..b {
                for hh in 0..heads {
                    let mut mean = vec![0.0; d];
                    for &r in &reps {
                        let keys: Vec<usize> = std::iter::once(0)
                            .chain(members(r).iter().map(|j| j + 1))
                            .collect();
                        for (m, v) in
                            mean.iter_mut()
                                .zip(attend(&qkv, bi, n + 1, 0, &keys, hh, heads, d))
                        {
                            *m += v / reps.len() as f64;
                        }
                    }
                    want.extend(mean);
                }
                for i in 0..n {
                    let keys: Vec<usize> = std::iter::once(0)
                        .chain(members(i).iter().map(|j| j + 1))
                        .collect();
                    for hh in 0..heads {
                        want.extend(attend(&qkv, bi, n + 1, i + 1, &keys, hh, heads, d));
                    }
                }
            }
            assert_close(
                &y.to_vec().unwrap(),
                &want,
                &format!("{groups:?} {order:?} with cls"),
            );
        }
        // ViViT Model 4: heads [0, 1) over time, [1, 2) over space.
        let qkv: Vec<f32> = (0..b * n * c)
            .map(|_| (2.0 * rng.uniform() - 1.0) as f32)
            .collect();
        let y = head_split_attention(
            &Tensor::from_slice(&qkv, &[b, n, c]).unwrap(),
            g,
            heads,
            0.5,
        )
        .unwrap();
        let mut want = vec![];
        for bi in 0..b {
            for i in 0..n {
                for (hh, groups) in [(0, Groups::Time), (1, Groups::Space)] {
                    let (t, h, w) = xyz[i];
                    let key = group_of(g, groups, t, h, w);
                    let keys: Vec<usize> = (0..n)
                        .filter(|&j| group_of(g, groups, xyz[j].0, xyz[j].1, xyz[j].2) == key)
                        .collect();
                    want.extend(attend(&qkv, bi, n, i, &keys, hh, heads, d));
                }
            }
        }
        assert_close(
            &y.to_vec().unwrap(),
            &want,
            &format!("head split {order:?}"),
        );
    }
    let err = group_attention(
        &Tensor::zeros(&[1, 5, 24]),
        Grid {
            t: 2,
            h: 2,
            w: 2,
            order: Order::Thw,
        },
        Groups::Time,
        2,
        1.0,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("[1, 5, 24]"), "{err}");
}

/// A tiny config of each attention type: 4 frames of 16², patch 4 (4×4 grid), D 32, 2 heads.
fn tiny(attention: Attention, depth: usize) -> Config {
    Config {
        frames: 4,
        height: 16,
        width: 16,
        patch: 4,
        embed_dim: 32,
        depth,
        num_heads: 2,
        mlp_dim: 64,
        attention,
        ..Config::tiny(NUM_CLASSES)
    }
}

fn clip_batch(c: &Config, b: usize) -> (Tensor, Indices) {
    let data = MovingShapes::new(c.frames, c.height, 0);
    let (x, y) = data.batch(Split::Train, 0, b);
    let x = Tensor::from_slice(&x, &data.batch_shape(b)).unwrap();
    (
        InputLayout::Bcthw.from_channels_last(&x).unwrap(),
        Indices::from_slice(&y).unwrap(),
    )
}

#[test]
fn timesformer_tiny_parameter_counts_match_the_built_models() {
    let Some(_) = gpu_or_skip() else { return };
    for a in ALL {
        let cfg = tiny(a, 2);
        let model = TimeSformer::new(cfg.clone(), 0).unwrap();
        let params = model.named_params();
        let n: usize = params.iter().map(|(_, t)| t.numel()).sum();
        assert_eq!(n, cfg.num_params(), "{a:?}");
        let mut names: Vec<_> = params.iter().map(|(k, _)| k.clone()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), params.len(), "{a:?}: duplicate keys");
    }
    let cfg = Config::tiny(NUM_CLASSES);
    let n: usize = TimeSformer::new(cfg.clone(), 0)
        .unwrap()
        .named_params()
        .iter()
        .map(|(_, t)| t.numel())
        .sum();
    assert_eq!(n, cfg.num_params());
    // Official key names (TSF checkpoint, `model.` stripped).
    let model = TimeSformer::new(tiny(Attention::DividedSpaceTime, 1), 0).unwrap();
    let keys: Vec<_> = model.named_params().into_iter().map(|(k, _)| k).collect();
    for k in [
        "cls_token",
        "pos_embed",
        "time_embed",
        "patch_embed.proj.weight",
        "blocks.0.temporal_attn.qkv.weight",
        "blocks.0.temporal_fc.bias",
        "blocks.0.temporal_norm1.weight",
        "blocks.0.attn.proj.weight",
        "blocks.0.mlp.fc2.bias",
        "norm.weight",
        "head.weight",
    ] {
        assert!(keys.iter().any(|x| x == k), "missing {k} in {keys:?}");
    }
}

#[test]
fn timesformer_attention_types_without_a_tiny_preset_reach_every_parameter() {
    let Some(_) = gpu_or_skip() else { return };
    // zoo.rs trains timesformer-tiny (divided space-time); the other types have no tiny preset.
    for a in ALL
        .into_iter()
        .filter(|&a| a != Attention::DividedSpaceTime)
    {
        let cfg = tiny(a, 1);
        let model = TimeSformer::new(cfg.clone(), 7).unwrap();
        // The zero-initialised branch fc (temporal_fc, …) would stop every gradient behind it
        // at step 0 (the official init); give it values, as after the first update.
        for blk in &model.blocks {
            for br in &blk.branches {
                br.fc
                    .weight
                    .write(&vec![0.02; cfg.embed_dim * cfg.embed_dim])
                    .unwrap();
            }
        }
        let (x, y) = clip_batch(&cfg, 2);
        let loss = model.forward(&x, false).unwrap().cross_entropy(&y);
        let grads = loss.backward().unwrap();
        for (name, p) in model.named_params() {
            let g = grads
                .get(&p)
                .unwrap_or_else(|| panic!("{a:?} {name}: no gradient"));
            let v = g.to_vec().unwrap();
            assert!(
                v.iter().all(|x| x.is_finite()),
                "{a:?} {name}: non-finite gradient"
            );
            assert!(
                v.iter().any(|&x| x != 0.0),
                "{a:?} {name}: gradient is all zeros"
            );
        }
    }
}

#[test]
fn timesformer_drop_path_only_in_training() {
    let Some(_) = gpu_or_skip() else { return };
    let cfg = Config {
        drop_path: 0.5,
        ..tiny(Attention::DividedSpaceTime, 2)
    };
    let model = TimeSformer::new(cfg.clone(), 1).unwrap();
    let (x, _) = clip_batch(&cfg, 4);
    let eval = |m: &TimeSformer| m.forward(&x, false).unwrap().to_vec().unwrap();
    assert_eq!(eval(&model), eval(&model));
    let train = model.forward(&x, true).unwrap().to_vec().unwrap();
    assert_ne!(train, eval(&model));
}

#[test]
fn grid_attention_longer_than_the_fused_kernels_take_falls_back_to_the_composition() {
    let Some(_) = gpu_or_skip() else { return };
    // Head dim 128: the fused kernels take groups of at most max_group_len(128) = 377 tokens; a
    // 20×20 frame (400 tokens) takes the composed path, which must give the same attention.
    let (heads, d) = (1, 128);
    assert!(tubelet::ops::grid_attention::max_group_len(d) < 400);
    let g = Grid {
        t: 1,
        h: 20,
        w: 20,
        order: Order::Thw,
    };
    let (n, c) = (g.len(), 3 * heads * d);
    let mut rng = Rng::new(9);
    let qkv: Vec<f32> = (0..n * c)
        .map(|_| (2.0 * rng.uniform() - 1.0) as f32)
        .collect();
    let scale = 1.0 / (d as f32).sqrt(); // as `attend`
    let y = group_attention(
        &Tensor::from_slice(&qkv, &[1, n, c]).unwrap(),
        g,
        Groups::Space,
        heads,
        scale,
    )
    .unwrap();
    let keys: Vec<usize> = (0..n).collect();
    let want: Vec<f64> = (0..n)
        .flat_map(|i| attend(&qkv, 0, n, i, &keys, 0, heads, d))
        .collect();
    assert_close(
        &y.to_vec().unwrap(),
        &want,
        "Space, 400 tokens at head dim 128 (composed fallback)",
    );
}
