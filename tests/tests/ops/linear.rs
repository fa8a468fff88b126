//! `Tensor::linear` (x·wᵀ + b, PyTorch layout) against a CPU computation, forward and the
//! gradients wrt x, w and b through autograd.

use tubelet::testing::{assert_close, Tol};
use tubelet::{gpu_or_skip, CpuTensor, Rng, Tensor};

// Sums of up to 2·5 = 10 (db, dw over the batch) or 7 (y, dx) products in [-1, 1].
const TOL: Tol = Tol::new(1e-5, 1e-5, "f32 sums of ≤ 10 products in [-1, 1]");

#[test]
fn linear_forward_and_gradients_match_cpu() {
    let Some(_) = gpu_or_skip() else { return };
    let (bt, n, i, o) = (2, 5, 7, 3); // x (B, N, in), w (out, in), b (out)
    let mut rng = Rng::new(11);
    let mut u = |s: &[usize]| CpuTensor::uniform(s, -1.0, 1.0, &mut rng).map(|v| v as f32 as f64);
    let (x, w, b, r) = (u(&[bt, n, i]), u(&[o, i]), u(&[o]), u(&[bt, n, o]));
    for bias in [true, false] {
        let xt = Tensor::from_cpu(&x).unwrap().param();
        let wt = Tensor::from_cpu(&w).unwrap().param();
        let bt_ = Tensor::from_cpu(&b).unwrap().param();
        let y = xt.linear(&wt, bias.then_some(&bt_));
        // y[z, t, j] = Σ_i x[z, t, i]·w[j, i] + b[j]
        let want = CpuTensor::from_fn(&[bt, n, o], |ix| {
            let s: f64 = (0..i)
                .map(|k| x.at(&[ix[0], ix[1], k]) * w.at(&[ix[2], k]))
                .sum();
            s + if bias { b.at(&[ix[2]]) } else { 0.0 }
        });
        assert_close(&format!("linear forward (bias {bias})"), &y, &want, TOL);
        // loss = Σ y·r: dx = r·w, dw = Σ_{z,t} r ⊗ x, db = Σ_{z,t} r
        let g = y.backward_with(Tensor::from_cpu(&r).unwrap()).unwrap();
        let dx = CpuTensor::from_fn(&[bt, n, i], |ix| {
            (0..o)
                .map(|j| r.at(&[ix[0], ix[1], j]) * w.at(&[j, ix[2]]))
                .sum()
        });
        let dw = CpuTensor::from_fn(&[o, i], |ix| {
            let mut s = 0.0;
            for z in 0..bt {
                for t in 0..n {
                    s += r.at(&[z, t, ix[0]]) * x.at(&[z, t, ix[1]]);
                }
            }
            s
        });
        let db = CpuTensor::from_fn(&[o], |ix| {
            (0..bt * n).map(|zt| r.data[zt * o + ix[0]]).sum()
        });
        assert_close("linear dx", g.get(&xt).unwrap(), &dx, TOL);
        assert_close("linear dw", g.get(&wt).unwrap(), &dw, TOL);
        if bias {
            assert_close("linear db", g.get(&bt_).unwrap(), &db, TOL);
        } else {
            assert!(g.get(&bt_).is_none());
        }
    }
}

#[test]
fn linear_errors_name_the_shapes() {
    let Some(_) = gpu_or_skip() else { return };
    let x = Tensor::zeros(&[4, 7]);
    let e = x
        .try_linear(&Tensor::zeros(&[3, 6]), None)
        .expect_err("error")
        .to_string();
    assert!(e.contains("[4, 7]") && e.contains("[3, 6]"), "{e}");
    let e = x
        .try_linear(&Tensor::zeros(&[3, 7]), Some(&Tensor::zeros(&[4])))
        .expect_err("error")
        .to_string();
    assert!(
        e.contains("[4, 7]") && e.contains("[3, 7]") && e.contains("[4]"),
        "{e}"
    );
}
