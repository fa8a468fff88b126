//! Soak (issue 16): 1000 training steps of a tiny preset with the memory in use sampled every
//! 100 steps: the engine's accounting (bytes of live tensors, bytes kept in the buffer pool) and
//! the process's resident set. A leak of one tensor a step, a tape kept alive, a pool that never
//! reuses, or host memory held per dispatch shows up as a climb here.
//!
//! Not in CI's time budget (minutes on lavapipe): ignored, run it by name and read the table:
//! `cargo test -p tubelet-tests --test root soak -- --ignored --nocapture`. Run alone, since the
//! tests of one binary share the GPU's byte counters.
//!
//! The step is the training loop's (tubelet-train's `Trainer`): forward in training mode, mean
//! cross-entropy, backward, AdamW update, the loss read back (which waits for the GPU).

use tubelet::optim::{AdamW, AdamWConfig};
use tubelet::{gpu_or_skip, Indices};
use tubelet_cli::clips::{model_input, render};
use tubelet_data::synthetic::Split;

const STEPS: u64 = 1000;
const EVERY: u64 = 100;
const BATCH: usize = 4;

/// The process's resident set in bytes (Linux; None elsewhere).
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

#[test]
#[ignore = "soak: 1000 training steps, minutes on lavapipe; run by name with --ignored"]
fn soak_1000_training_steps_keep_memory_flat() {
    let Some(gpu) = gpu_or_skip() else { return };
    let model =
        tubelet_models::build("vivit-tiny", &tubelet_models::BuildOptions::seed(0)).unwrap();
    let mut opt = AdamW::new(model.named_params(), AdamWConfig::default()).unwrap();
    // (step, live tensor bytes, pooled bytes, resident set bytes)
    let mut samples: Vec<(u64, u64, u64, Option<u64>)> = Vec::new();
    let t0 = std::time::Instant::now();
    eprintln!("step   in use (MiB)  pooled (MiB)  RSS (MiB)  loss");
    for step in 1..=STEPS {
        let (x, y) = render(0, model.clip(), Split::Train, step * BATCH as u64, BATCH);
        let x = model_input(model.as_ref(), &x, BATCH).unwrap();
        let labels = Indices::from_slice(&y).unwrap();
        let loss = model.forward(&x, true).unwrap().cross_entropy(&labels);
        let grads = loss.backward().unwrap();
        opt.step(&grads).unwrap();
        drop(grads);
        let value = loss.item().unwrap();
        assert!(value.is_finite(), "step {step}: loss {value}");
        drop((loss, x, labels));
        if step == 1 || step % EVERY == 0 {
            gpu.sync().unwrap();
            let s = (step, gpu.memory_in_use(), gpu.memory_pooled(), rss_bytes());
            eprintln!(
                "{:>4}  {:>12.2}  {:>12.2}  {:>9}  {value:.3}",
                s.0,
                mib(s.1),
                mib(s.2),
                s.3.map_or("?".into(), |r| format!("{:.1}", mib(r)))
            );
            samples.push(s);
        }
    }
    eprintln!(
        "{STEPS} steps of vivit-tiny (batch {BATCH}) in {:.0} s",
        t0.elapsed().as_secs_f64()
    );
    // Between steps only the parameters and AdamW's two moments are alive: the same bytes at
    // every sample, the first step's included.
    let in_use = samples[0].1;
    for s in &samples {
        assert_eq!(
            s.1, in_use,
            "step {}: {} B in use, {in_use} B after step 1",
            s.0, s.1
        );
    }
    // The pool holds what one step frees; from the second sample on it must not grow.
    let pooled = samples[1].2;
    for s in &samples[1..] {
        assert!(
            s.2 <= pooled,
            "step {}: pool grew to {} B from {pooled} B",
            s.0,
            s.2
        );
    }
    // The resident set settles once every pipeline is compiled and the pool is full (step 100);
    // allow the host allocator 5% of noise after that, far less than a leak of 900 steps.
    if let (Some(first), Some(last)) = (samples[1].3, samples.last().unwrap().3) {
        assert!(
            last as f64 <= first as f64 * 1.05,
            "resident set grew from {:.1} MiB at step {EVERY} to {:.1} MiB at step {STEPS}",
            mib(first),
            mib(last)
        );
    }
}
