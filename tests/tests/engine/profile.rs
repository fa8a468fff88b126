//! The profiler (engine/src/profile.rs, hooks in engine/src/gpu.rs): every dispatch recorded with
//! its phase and a finite time, in each timing mode the adapter has, results unchanged, and
//! submits and transfers counted. Other tests run concurrently in this binary and may add their
//! own dispatches to a profile, so counts are lower bounds.

use tubelet::profile::{self, Timing};
use tubelet::{gpu_or_skip, Tensor};

/// Ten `add_scalar`s in phase "a", a read-back in phase "b"; the profile of that.
fn profiled(timing: Option<Timing>) -> (profile::Profile, Vec<f32>) {
    let x = Tensor::ones(&[64]);
    profile::start(timing).unwrap();
    profile::phase("a");
    let mut y = x.clone();
    for _ in 0..10 {
        y = y.add_scalar(1.0);
    }
    profile::phase("b");
    let v = y.to_vec().unwrap();
    (profile::stop().unwrap(), v)
}

#[test]
fn profile_records_every_dispatch_with_phase_time_and_transfers() {
    let Some(_) = gpu_or_skip() else { return };
    for mode in profile::available().unwrap() {
        let (p, v) = profiled(Some(mode));
        assert_eq!(p.timing, mode);
        assert_eq!(v, vec![11.0; 64], "{mode:?} changed the result");
        let ours: Vec<_> = p.dispatches.iter().filter(|d| d.phase == "a").collect();
        assert!(
            ours.len() >= 10,
            "{mode:?}: {} dispatches in phase a",
            ours.len()
        );
        for d in &ours {
            assert!(
                d.ns.is_finite() && d.ns >= 0.0,
                "{mode:?}: {} took {} ns",
                d.kernel,
                d.ns
            );
        }
        // Ten of them are ours (input and output of 64 f32 each bound); a concurrent test's
        // dispatch in phase "a" (a fill of 256 B, say) binds what it binds.
        let ours_bound = ours.iter().filter(|d| d.bytes_bound >= 2 * 256).count();
        assert!(
            ours_bound >= 10,
            "{mode:?}: {ours_bound} dispatches in phase a bound ≥ 512 B: {ours:?}"
        );
        let b = p.counters("b");
        assert!(
            b.downloads >= 1 && b.download_bytes >= 256,
            "{mode:?}: {b:?}"
        );
        assert!(b.submits >= 1, "{mode:?}: the read-back submits: {b:?}");
        let top = p.by_kernel();
        assert!(
            top.iter().any(|k| k.phase == "a" && k.dispatches >= 10),
            "{top:?}"
        );
    }
    // Off again: nothing is recorded, and a stop without a start is an error, not a panic.
    let err = profile::stop().expect_err("stop without start");
    assert!(err.to_string().contains("without start"), "{err}");
}
