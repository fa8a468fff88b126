//! Data-parallel training under `mpirun -np 2` (feature `mpi`; tubelet-train's dist.rs): these
//! tests launch this package's `tubelet` binary through the system's `mpirun`, on this
//! machine's adapter (both ranks share it: lavapipe in CI), with a tiny ViViT at a 4×16×16 clip.
//!
//! - two ranks of 16 clips take the same steps as one process of 32 (weights within 1e-5
//!   relative after 4 AdamW steps), and a state saved by either resumes in the other;
//! - ranks started differently are stopped at start, naming the difference;
//! - a rank killed outright, or one that hangs (SIGSTOP), stops the job within bounded time.
//!
//! `cargo xtask test` runs them (the suite is built with `--features tubelet-cli/mpi`); they
//! take one MPI job at a time (`one_job`), as two jobs oversubscribing two cores would time each
//! other's watchdogs. As root
//! OpenMPI needs OMPI_ALLOW_RUN_AS_ROOT (set here); in containers its shared-memory transport
//! needs `btl_vader_single_copy_mechanism=none`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tubelet::io::HostTensor;

/// One MPI job at a time across this file's tests (the test harness runs tests in parallel).
fn one_job() -> MutexGuard<'static, ()> {
    static ONE: Mutex<()> = Mutex::new(());
    ONE.lock().unwrap_or_else(|e| e.into_inner())
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir()
        .join(format!("tubelet-mpi-{}", std::process::id()))
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Whether `mpirun` is here; otherwise the test says SKIPPED (CI installs it: xtask).
fn have_mpirun() -> bool {
    let ok = Command::new("mpirun")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("TUBELET_REQUIRE_GPU").as_deref() != Ok("1"),
            "mpirun not found (apt-get install openmpi-bin)"
        );
        eprintln!("SKIPPED (no mpirun)");
    }
    ok
}

fn env(c: &mut Command) -> &mut Command {
    c.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none")
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        // No progress bar, no ANSI.
        .env("TERM", "dumb")
}

/// `mpirun -np 2 tubelet ARGS` (or `tubelet ARGS` alone for `np` = 1 without MPI).
fn tubelet(np: usize, args: &[&str]) -> Command {
    let bin = env!("CARGO_BIN_EXE_tubelet");
    let mut c = if np == 0 {
        Command::new(bin)
    } else {
        let mut c = Command::new("mpirun");
        c.args(["-np", &np.to_string(), "--oversubscribe", bin]);
        c
    };
    c.args(args);
    env(&mut c);
    c
}

/// Runs `c` to the end within `limit`, returning (success, stdout + stderr).
fn run(mut c: Command, limit: Duration) -> (bool, String) {
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning");
    let out = drain(&mut child);
    let status = wait_within(&mut child, limit);
    let text = collect(out);
    (status.is_some_and(|s| s), text)
}

/// Every line of the child's stdout and stderr, as they come.
fn drain(child: &mut Child) -> Receiver<String> {
    let (tx, rx) = channel();
    let readers: Vec<Box<dyn Read + Send>> = vec![
        Box::new(child.stdout.take().unwrap()),
        Box::new(child.stderr.take().unwrap()),
    ];
    for r in readers {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(r).lines().map_while(|l| l.ok()) {
                let _ = tx.send(line);
            }
        });
    }
    rx
}

fn collect(rx: Receiver<String>) -> String {
    let mut s = String::new();
    while let Ok(l) = rx.recv_timeout(Duration::from_secs(2)) {
        s.push_str(&l);
        s.push('\n');
    }
    s
}

/// Some(success) when the child ended within `limit`; None (and it is killed) otherwise.
fn wait_within(child: &mut Child, limit: Duration) -> Option<bool> {
    let t0 = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s.success());
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

const LIMIT: Duration = Duration::from_secs(300);

/// The arguments of a short run at a tiny clip: 4 steps of a global batch of 32.
fn train_args(dir: &Path, tag: &str) -> Vec<String> {
    [
        "train",
        "--model",
        "vivit-tiny",
        "--clip",
        "4,16,16",
        "--steps",
        "4",
        "--batch",
        "32",
        "--warmup",
        "1",
        // SGD, not the recipe's AdamW: Adam's update g/(√v + ε) turns a gradient that is 0 in
        // exact arithmetic (the zero-initialised head's bias at step 1 when a class has exactly
        // its share of the batch, under label smoothing) into ±lr from f32 rounding noise, and
        // summing 2 × 16 clips rounds differently from 32. SGD keeps rounding at rounding size.
        "--optimizer",
        "sgd",
        "--lr",
        "0.1",
        "--eval-clips",
        "8",
        "--save-every",
        "2",
        "--quiet",
        // Several buckets (the model holds about 0.25 MiB of parameters at this clip).
        "--bucket-mib",
        "0.04",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        "--save".into(),
        dir.join(format!("{tag}.safetensors")).display().to_string(),
        "--run-dir".into(),
        dir.join(tag).display().to_string(),
    ])
    .collect()
}

fn weights(p: &Path) -> BTreeMap<String, HostTensor> {
    tubelet::io::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// ‖a − b‖ / ‖b‖ over every value of every tensor together, and the largest |a − b|. Taken
/// together, not per tensor: the attention key biases get no gradient in exact arithmetic
/// (softmax ignores a per-query constant), so they hold rounding noise, which differs between
/// runs as rounding does, and a per-tensor ratio of noise to noise says nothing.
fn relative(a: &BTreeMap<String, HostTensor>, b: &BTreeMap<String, HostTensor>) -> (f64, f64) {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    let (mut diff, mut norm, mut worst) = (0.0f64, 0.0f64, 0.0f64);
    for (k, ta) in a {
        let tb = &b[k];
        assert_eq!(ta.shape, tb.shape, "{k}");
        for (x, y) in ta.data.iter().zip(&tb.data) {
            let d = (*x as f64 - *y as f64).abs();
            diff += d * d;
            norm += (*y as f64).powi(2);
            worst = worst.max(d);
        }
    }
    ((diff / norm).sqrt(), worst)
}

/// ‖a − b‖ / ‖a − a₂‖ over every value together: the difference of two runs' weights relative
/// to what the last two steps changed (a₂: `a`'s run at step 2). Weights move little in 4
/// steps, so this is the sensitive measure: wrong gradients make it O(1).
fn relative_to_updates(
    a: &BTreeMap<String, HostTensor>,
    b: &BTreeMap<String, HostTensor>,
    a2: &BTreeMap<String, HostTensor>,
) -> f64 {
    let (mut diff, mut step) = (0.0f64, 0.0f64);
    for (k, ta) in a {
        let (tb, t2) = (&b[k], &a2[&format!("param.{k}")]);
        for ((x, y), z) in ta.data.iter().zip(&tb.data).zip(&t2.data) {
            diff += (*x as f64 - *y as f64).powi(2);
            step += (*x as f64 - *z as f64).powi(2);
        }
    }
    (diff / step).sqrt()
}

fn state_at_step_2(run_dir: &Path) -> String {
    run_dir
        .join("checkpoints/step-000000002.safetensors")
        .display()
        .to_string()
}

#[test]
fn two_ranks_of_16_are_one_process_of_32_and_states_resume_across_rank_counts() {
    let _one = one_job();
    if !have_mpirun() {
        return;
    }
    let dir = scratch("equal");
    let strs = |v: &[String]| v.to_vec();
    // One process of 32 (no MPI) and two ranks of 16: 4 steps each, a state at step 2.
    let one = train_args(&dir, "one");
    let (ok, out) = run(
        tubelet(
            0,
            &strs(&one).iter().map(String::as_str).collect::<Vec<_>>(),
        ),
        LIMIT,
    );
    assert!(ok, "one process:\n{out}");
    let two = train_args(&dir, "two");
    let (ok, out) = run(
        tubelet(2, &two.iter().map(String::as_str).collect::<Vec<_>>()),
        LIMIT,
    );
    assert!(ok, "two ranks:\n{out}");
    assert!(out.contains("2 ranks × 16 clips"), "{out}");
    let (w1, w2) = (
        weights(&dir.join("one.safetensors")),
        weights(&dir.join("two.safetensors")),
    );
    let (d, worst) = relative(&w2, &w1);
    let s1 = weights(Path::new(&state_at_step_2(&dir.join("one"))));
    let u = relative_to_updates(&w1, &w2, &s1);
    eprintln!(
        "2 ranks × 16 against 1 × 32 after 4 steps: relative difference {d:.2e} (largest \
         {worst:.1e}), {u:.2e} of the last two steps' change"
    );
    assert!(
        u < 1e-3,
        "two ranks differ from one process by {u:e} of an update"
    );
    assert!(
        d < 1e-5,
        "two ranks differ from one process by {d:e} (relative)"
    );

    // Accumulation across ranks: 2 ranks × 2 micro-batches of 8 clips are one update of 32
    // (trainer.rs: Σ over ranks of b·mean per micro-batch, rescaled by world / Σb).
    let mut acc = train_args(&dir, "two-acc");
    let at = acc.iter().position(|s| s == "--batch").unwrap();
    acc[at + 1] = "16".into();
    acc.extend(["--accumulate".into(), "2".into()]);
    let (ok, out) = run(
        tubelet(2, &acc.iter().map(String::as_str).collect::<Vec<_>>()),
        LIMIT,
    );
    assert!(ok, "two ranks accumulating:\n{out}");
    let wa = weights(&dir.join("two-acc.safetensors"));
    let (d, worst) = relative(&wa, &w1);
    let u = relative_to_updates(&w1, &wa, &s1);
    eprintln!(
        "2 ranks × 2 micro-batches of 8 against 1 × 32: relative difference {d:.2e} (largest \
         {worst:.1e}), {u:.2e} of the last two steps' change"
    );
    assert!(u < 1e-3, "accumulating ranks differ by {u:e} of an update");
    assert!(d < 1e-5, "accumulating ranks differ by {d:e} (relative)");

    // The 2-rank state at step 2, resumed in one process; the 1-process state in two ranks.
    for (np, from, tag, want) in [(0, "two", "two-in-one", &w2), (2, "one", "one-in-two", &w1)] {
        let mut args = train_args(&dir, tag);
        args.extend(["--resume".into(), state_at_step_2(&dir.join(from))]);
        let (ok, out) = run(
            tubelet(np, &args.iter().map(String::as_str).collect::<Vec<_>>()),
            LIMIT,
        );
        assert!(ok, "{tag}:\n{out}");
        assert!(out.contains("resumed from"), "{tag}:\n{out}");
        let got = weights(&dir.join(format!("{tag}.safetensors")));
        let (d, worst) = relative(&got, want);
        let u = relative_to_updates(want, &got, &s1);
        eprintln!(
            "{tag}: relative difference from the uninterrupted run {d:.2e} (largest \
             {worst:.1e}; {u:.2e} of the last two steps' change)"
        );
        assert!(
            u < 1e-3,
            "{tag}: resumed weights differ by {u:e} of an update"
        );
        assert!(
            d < 1e-5,
            "{tag}: resumed weights differ by {d:e} (relative)"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ranks_started_differently_are_stopped_naming_the_difference() {
    let _one = one_job();
    if !have_mpirun() {
        return;
    }
    let dir = scratch("mismatch");
    let a = train_args(&dir, "a");
    let mut b = train_args(&dir, "a");
    let at = b.iter().position(|s| s == "--batch").unwrap();
    b[at + 1] = "16".into();
    // MPMD: rank 0 with one command line, rank 1 with another.
    let bin = env!("CARGO_BIN_EXE_tubelet");
    let mut c = Command::new("mpirun");
    c.args(["--oversubscribe", "-np", "1", bin])
        .args(&a)
        .args([":", "-np", "1", bin])
        .args(&b);
    env(&mut c);
    let t0 = Instant::now();
    let (ok, out) = run(c, LIMIT);
    assert!(!ok, "ranks with different batches trained:\n{out}");
    assert!(
        out.contains("batch differs (rank 0: 32, rank 1: 16)"),
        "the error does not name the difference:\n{out}"
    );
    eprintln!("stopped in {:.1} s", t0.elapsed().as_secs_f64());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Starts a long 2-rank run and waits for its first step; returns the child, its output and the
/// ranks' process ids.
fn long_run(dir: &Path, extra_env: &[(&str, &str)]) -> (Child, Receiver<String>, Vec<u32>) {
    let mut args = train_args(dir, "long");
    let at = args.iter().position(|s| s == "--steps").unwrap();
    args[at + 1] = "400".into();
    let mut c = tubelet(2, &args.iter().map(String::as_str).collect::<Vec<_>>());
    for (k, v) in extra_env {
        c.env(k, v);
    }
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = drain(&mut child);
    let t0 = Instant::now();
    loop {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(l) if l.starts_with("step ") => break,
            Ok(_) => {}
            Err(_) if t0.elapsed() < LIMIT => {}
            Err(_) => panic!("no step within {LIMIT:?}"),
        }
    }
    // The ranks: mpirun's children running tubelet.
    let ps = Command::new("pgrep")
        .args(["-P", &child.id().to_string()])
        .output()
        .unwrap();
    let pids: Vec<u32> = String::from_utf8_lossy(&ps.stdout)
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect();
    assert_eq!(pids.len(), 2, "ranks of mpirun: {pids:?}");
    (child, rx, pids)
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

#[test]
fn a_killed_rank_stops_the_job() {
    let _one = one_job();
    if !have_mpirun() {
        return;
    }
    let dir = scratch("kill");
    let (mut child, rx, pids) = long_run(&dir, &[]);
    let t0 = Instant::now();
    signal(pids[1], "-KILL");
    let ended = wait_within(&mut child, Duration::from_secs(60));
    let out = collect(rx);
    assert_eq!(
        ended,
        Some(false),
        "the job did not stop with an error:\n{out}"
    );
    eprintln!(
        "stopped {:.1} s after the kill:\n{out}",
        t0.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_hung_rank_stops_the_job_through_the_watchdog() {
    let _one = one_job();
    if !have_mpirun() {
        return;
    }
    let dir = scratch("hang");
    // The first step (pipeline compiles) is past when the rank is stopped; 20 s is far above a
    // step here.
    let (mut child, rx, pids) = long_run(&dir, &[("TUBELET_DIST_TIMEOUT", "20")]);
    let t0 = Instant::now();
    signal(pids[1], "-STOP");
    let ended = wait_within(&mut child, Duration::from_secs(90));
    // A stopped process is not killed by SIGTERM: make sure it goes.
    let _ = Command::new("kill")
        .args(["-KILL", &pids[1].to_string()])
        .status();
    let out = collect(rx);
    assert_eq!(
        ended,
        Some(false),
        "the job did not stop with an error:\n{out}"
    );
    assert!(
        out.contains("waited") && out.contains("TUBELET_DIST_TIMEOUT=20"),
        "no watchdog message:\n{out}"
    );
    eprintln!(
        "stopped {:.1} s after the hang:\n{out}",
        t0.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
