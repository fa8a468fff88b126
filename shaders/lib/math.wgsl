// lib/math.wgsl — scalar math missing from WGSL (no entry points).

// tanh that stays finite: some drivers compute tanh(x) as (e^2x − 1)/(e^2x + 1), which is
// NaN for |x| ≳ 44 in f32 (ratchet's guard). |x| ≥ 10 is ±1 to f32 precision.
fn safe_tanh(x: f32) -> f32 {
    return select(tanh(x), sign(x), abs(x) >= 10.0);
}

// erf(x) = 1 − erfc(|x|) with sign, erfc from Numerical Recipes' Chebyshev fit `erfcc`
// (fractional error < 1.2e-7 on erfc, so |erf error| ≤ 1.2e-7: below f32 resolution near 1).
// Abramowitz & Stegun 7.1.26 (error 1.5e-7 absolute but coarser near 0) would also do.
fn erf(x: f32) -> f32 {
    let z = abs(x);
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t * exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418
        + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587
        + t * (-0.82215223 + t * 0.17087277)))))))));
    return select(r - 1.0, 1.0 - r, x >= 0.0);
}
