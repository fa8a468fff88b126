//! Whole training states (train/src/checkpoint.rs) and the atomic writes under them
//! (engine/src/io.rs): a full round trip (parameters, buffers, AdamW moments, step, progress,
//! config) after which training continues identically; unique temporaries, removed on every
//! error; an unwritable destination found up front; non-finite states refused with the good
//! file untouched; `--weights` and `--resume` files told apart; the last N and the best kept.

use std::path::{Path, PathBuf};

use tubelet::optim::{AdamW, AdamWConfig};
use tubelet::{gpu_or_skip, io, Indices, Tensor};
use tubelet_models::VideoModel;
use tubelet_train::checkpoint::{self, all_finite, Keeper, OptimizerInfo, Progress, State};

fn tmp_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("tubelet-train-ckpt-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// One AdamW step of `model` on a fixed random batch (training mode: BatchNorm statistics move).
fn train_step(model: &dyn VideoModel, opt: &mut AdamW, seed: u64) {
    let [t, h, w] = model.clip();
    let x = Tensor::randn(&model.input_layout().shape(2, [t, h, w]), 0.0, 1.0, seed).unwrap();
    let labels = Indices::from_slice(&[1, 3]).unwrap();
    let loss = model
        .forward(&x, true)
        .unwrap()
        .try_cross_entropy(&labels)
        .unwrap();
    opt.step(&loss.backward().unwrap()).unwrap();
}

fn values(list: &[(String, Tensor)]) -> Vec<(String, Vec<f32>)> {
    list.iter()
        .map(|(k, t)| (k.clone(), t.to_vec().unwrap()))
        .collect()
}

fn progress(step: u64, val: Option<f64>) -> Progress {
    Progress {
        step,
        epoch: step / 4,
        batch_in_epoch: step % 4,
        schedule_step: step,
        data_seed: 17,
        rng: [
            ("augment".to_string(), 0xDEAD_BEEF_0123_4567u64),
            ("drop_path".to_string(), u64::MAX),
        ]
        .into(),
        val_top1: val,
        best_val_top1: val,
        extra: serde_json::json!({"note": "anything"}),
    }
}

#[test]
fn a_whole_state_round_trips_and_training_continues_identically() {
    let Some(_) = gpu_or_skip() else { return };
    // tsm-tiny: BatchNorm buffers (running stats, num_batches_tracked) besides parameters.
    let a = tubelet_models::build("tsm-tiny", &tubelet_models::BuildOptions::seed(0)).unwrap();
    let mut opt_a = AdamW::new(
        a.named_params(),
        AdamWConfig {
            lr: 1e-2,
            ..AdamWConfig::default()
        },
    )
    .unwrap();
    train_step(a.as_ref(), &mut opt_a, 1);
    train_step(a.as_ref(), &mut opt_a, 2);
    let (params, buffers, moments) = (a.named_params(), a.named_buffers(), opt_a.state());
    let prog = progress(2, Some(0.25));
    let config = serde_json::json!({"model": "tsm-tiny", "lr": 0.01, "batch": 2});
    let dir = tmp_dir("roundtrip");
    let path = dir.join("state.safetensors");
    checkpoint::save(
        &path,
        &State::adamw(&params, &buffers, &moments, &opt_a, &prog, &config),
    )
    .unwrap();
    assert_eq!(
        names_in(&dir),
        vec!["state.safetensors"],
        "no temporary left behind"
    );

    let b = tubelet_models::build("tsm-tiny", &tubelet_models::BuildOptions::seed(5)).unwrap();
    let mut opt_b = AdamW::new(
        b.named_params(),
        AdamWConfig {
            lr: 1e-2,
            ..AdamWConfig::default()
        },
    )
    .unwrap();
    let loaded = checkpoint::load(&path).unwrap();
    assert_eq!(loaded.progress, prog);
    assert_eq!(loaded.config, config);
    assert_eq!(
        loaded.optimizer_info,
        OptimizerInfo {
            kind: "adamw".into(),
            step: 2
        }
    );
    loaded.restore_model(b.as_ref()).unwrap();
    loaded.restore_adamw(&mut opt_b).unwrap();
    assert_eq!(opt_b.steps_taken(), 2);
    assert_eq!(values(&b.named_params()), values(&params));
    assert_eq!(values(&b.named_buffers()), values(&buffers));
    assert!(values(&buffers)
        .iter()
        .any(|(k, v)| k.ends_with("num_batches_tracked") && v == &[2.0]));
    assert_eq!(values(&opt_b.state()), values(&moments));

    // The next update from the restored state equals the uninterrupted one, bit for bit.
    train_step(a.as_ref(), &mut opt_a, 3);
    train_step(b.as_ref(), &mut opt_b, 3);
    assert_eq!(values(&b.named_params()), values(&a.named_params()));
    assert_eq!(values(&opt_b.state()), values(&opt_a.state()));

    // A state of another model is refused with every difference named.
    let c = tubelet_models::build("vivit-tiny", &tubelet_models::BuildOptions::seed(0)).unwrap();
    let err = loaded.restore_model(c.as_ref()).unwrap_err().to_string();
    assert!(
        err.contains("state of another model") && err.contains("not in the state"),
        "{err}"
    );
}

#[test]
fn temporaries_are_unique_and_removed_on_every_error() {
    let dir = tmp_dir("temps");
    let target = dir.join("w.safetensors");
    let a = io::TempFile::create(&target).unwrap();
    let b = io::TempFile::create(&target).unwrap();
    assert_ne!(
        a.path(),
        b.path(),
        "two saves to one path must not share a temporary"
    );
    assert!(a
        .path()
        .to_string_lossy()
        .contains(&std::process::id().to_string()));
    drop((a, b));
    assert!(
        names_in(&dir).is_empty(),
        "dropped temporaries are removed: {:?}",
        names_in(&dir)
    );

    // The rename fails (the target became a non-empty folder after the temporary was made):
    // the temporary goes, the error names both paths.
    let mut t = io::TempFile::create(&target).unwrap();
    t.write_all(b"x").unwrap();
    std::fs::create_dir_all(target.join("inside")).unwrap();
    let err = t.persist().unwrap_err().to_string();
    assert!(
        err.contains("renaming the temporary file") && err.contains("w.safetensors"),
        "{err}"
    );
    assert_eq!(
        names_in(&dir),
        vec!["w.safetensors"],
        "only the folder that blocked the rename remains"
    );

    // Concurrent atomic writes to one path: every one lands whole, none leaves a temporary.
    let target2 = dir.join("shared.bin");
    std::thread::scope(|s| {
        for i in 0..8u8 {
            let target2 = &target2;
            s.spawn(move || io::write_atomic(target2, &vec![i; 4096]).unwrap());
        }
    });
    let bytes = std::fs::read(&target2).unwrap();
    assert!(
        bytes.len() == 4096 && bytes.iter().all(|&x| x == bytes[0]),
        "a torn write"
    );
    assert_eq!(names_in(&dir), vec!["shared.bin", "w.safetensors"]);
}

#[test]
fn an_unwritable_destination_is_found_up_front() {
    let err = io::check_writable(Path::new("/nonexistent-folder/x.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("/nonexistent-folder") && err.contains("does not exist"),
        "{err}"
    );
    // /proc refuses new files even to root (chmod would not stop root).
    let err = io::check_writable(Path::new("/proc/tubelet-x.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cannot write /proc/tubelet-x.safetensors") && err.contains("temporary"),
        "{err}"
    );
    let dir = tmp_dir("writable");
    let err = io::check_writable(&dir).unwrap_err().to_string();
    assert!(err.contains("is a folder"), "{err}");
    io::check_writable(&dir.join("ok.safetensors")).unwrap();
    assert!(names_in(&dir).is_empty(), "the check leaves nothing behind");
    let err = Keeper::new(Path::new("/proc/tubelet-run"), 3)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("/proc/tubelet-run"), "{err}");
}

#[test]
fn non_finite_states_and_weights_are_refused_and_the_good_file_kept() {
    let Some(_) = gpu_or_skip() else { return };
    let dir = tmp_dir("nan");
    let good = dir.join("good.safetensors");
    let w = Tensor::from_slice(&[1.0, 2.0, 3.0], &[3]).unwrap();
    io::save(&good, &[("blocks.0.fc.weight".into(), w.clone())], None).unwrap();
    let before = std::fs::read(&good).unwrap();
    let bad = Tensor::from_slice(&[1.0, f32::NAN, f32::NEG_INFINITY], &[3]).unwrap();
    let list = vec![
        ("blocks.0.fc.weight".to_string(), w),
        ("blocks.1.fc.weight".to_string(), bad),
    ];
    assert_eq!(all_finite(&list[..1]).unwrap(), None);
    let found = all_finite(&list).unwrap().unwrap();
    assert!(
        found.starts_with("blocks.1.fc.weight (2 non-finite values, the first, NaN, at index 1)"),
        "{found}"
    );

    let err = io::save(&good, &list, None).unwrap_err().to_string();
    assert!(
        err.contains("refusing to write") && err.contains("blocks.1.fc.weight"),
        "{err}"
    );
    let prog = progress(1, None);
    let config = serde_json::json!({});
    let state = State {
        params: &list,
        buffers: &[],
        optimizer: &[],
        optimizer_info: OptimizerInfo {
            kind: "adamw".into(),
            step: 1,
        },
        progress: &prog,
        config: &config,
    };
    let err = checkpoint::save(&good, &state).unwrap_err().to_string();
    assert!(
        err.contains("refusing to write a training state") && err.contains("blocks.1.fc.weight"),
        "{err}"
    );
    let mut keeper = Keeper::new(&dir, 2).unwrap();
    assert!(keeper.save(&state).is_err());
    assert_eq!(
        std::fs::read(&good).unwrap(),
        before,
        "the good file is untouched"
    );
    assert_eq!(
        names_in(&dir),
        vec!["good.safetensors"],
        "nothing else written, no temporary left"
    );
}

#[test]
fn weights_and_resume_files_are_told_apart() {
    let Some(_) = gpu_or_skip() else { return };
    let dir = tmp_dir("confusion");
    let weights = dir.join("w.safetensors");
    io::save(
        &weights,
        &[("fc.weight".into(), Tensor::zeros(&[2, 2]))],
        None,
    )
    .unwrap();
    let err = checkpoint::load(&weights).unwrap_err().to_string();
    assert!(
        err.contains("holds weights only") && err.contains("--weights"),
        "{err}"
    );
    let pth = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/uniformer_flat.pth");
    let err = checkpoint::load(&pth).unwrap_err().to_string();
    assert!(
        err.contains("holds weights only") && err.contains("--weights"),
        "{err}"
    );
    let err =
        checkpoint::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/evil.pth"))
            .unwrap_err()
            .to_string();
    assert!(err.contains("never runs pickled code"), "{err}");
}

#[test]
fn the_keeper_keeps_the_last_n_and_the_best() {
    let Some(_) = gpu_or_skip() else { return };
    let dir = tmp_dir("keeper");
    let p = vec![("w".to_string(), Tensor::from_slice(&[0.5], &[1]).unwrap())];
    let config = serde_json::json!({"model": "x"});
    let mut keeper = Keeper::new(&dir, 2).unwrap();
    for (step, val) in [
        (10, Some(0.5)),
        (20, Some(0.7)),
        (30, None),
        (40, Some(0.6)),
    ] {
        let prog = progress(step, val);
        let s = State {
            params: &p,
            buffers: &[],
            optimizer: &[],
            optimizer_info: OptimizerInfo {
                kind: "sgd".into(),
                step,
            },
            progress: &prog,
            config: &config,
        };
        let saved = keeper.save(&s).unwrap();
        assert_eq!(saved.best, step <= 20, "step {step}");
    }
    assert_eq!(
        names_in(&dir),
        vec![
            "best.safetensors",
            "step-000000030.safetensors",
            "step-000000040.safetensors"
        ]
    );
    assert_eq!(
        checkpoint::load(&dir.join("best.safetensors"))
            .unwrap()
            .progress
            .step,
        20
    );
    assert_eq!(
        checkpoint::resolve_resume(&dir).unwrap(),
        dir.join("step-000000040.safetensors")
    );
    // A reopened run directory remembers its best.
    assert_eq!(Keeper::new(&dir, 2).unwrap().best(), Some(0.7));
    // A resume into AdamW from an SGD state is refused.
    let model =
        tubelet_models::build("vivit-tiny", &tubelet_models::BuildOptions::seed(0)).unwrap();
    let mut opt = AdamW::new(model.named_params(), AdamWConfig::default()).unwrap();
    let err = checkpoint::load(&dir.join("best.safetensors"))
        .unwrap()
        .restore_adamw(&mut opt)
        .unwrap_err()
        .to_string();
    assert!(err.contains("trained with sgd"), "{err}");
}
