//! Time-decayed reservoir sampling, one independent sampler per tree.
//!
//! A point arriving at time `t` gets the key `ln(E) - λ·t` with `E ~ Exp(1)`, and each
//! tree keeps the `sample_size` points with the smallest keys: a weighted sample
//! without replacement with weights `e^{λt}` (Efraimidis–Spirakis), the scheme AWS's
//! library uses. Recent points are favoured; λ = 0 gives a uniform reservoir.
//!
//! Drawing a key per tree per point would cost two logarithms per tree per point. A
//! full tree with largest key `k` accepts the point at `t` with probability
//! `1 - exp(-e^{k+λt})`, independently per point, so the time of the next acceptance
//! can be drawn directly (inverting the survival function) and the key drawn only
//! when a point is accepted, conditioned on being accepted. Same distribution, a
//! comparison per tree per point.
//!
//! Keys are stored as `f32` relative to an epoch, a time that each tree moves forward
//! (shifting its keys) on a fixed schedule, before `λ·(t - epoch)` loses precision. The
//! schedule depends only on t, so trees can be updated in any order.

use super::rng::Rng;

/// Epochs are this many units of λ·t apart.
const EPOCH_SPAN: f64 = 16.0;

/// The epoch keys at time `t` are measured from.
pub(crate) fn epoch(decay: f64, t: u64) -> u64 {
    if decay <= 0.0 {
        return 0;
    }
    let period = ((EPOCH_SPAN / decay) as u64).max(1);
    t - t % period
}
/// "Never" for the next acceptance time, far beyond any real stream.
const NEVER: u64 = u64::MAX / 2;

/// The key of a point arriving at `t` in a tree that is not full (accepted unconditionally).
pub(crate) fn unconditional_key(rng: &mut Rng, decay: f64, t_rel: f64) -> f32 {
    let e = -rng.next_open_f64().ln();
    (e.ln() - decay * t_rel) as f32
}

/// The key of a point accepted at `t` by a full tree whose largest key is `max_key`:
/// `E` conditioned on `ln(E) - λ·t < max_key`.
pub(crate) fn accepted_key(rng: &mut Rng, decay: f64, t_rel: f64, max_key: f32) -> f32 {
    let h = (f64::from(max_key) + decay * t_rel).exp();
    // E = -ln(1 - U·(1 - e^{-h})), written to stay accurate for small h.
    let u = rng.next_f64();
    let e = -(u * (-h).exp_m1()).ln_1p();
    let key = (e.max(f64::MIN_POSITIVE).ln() - decay * t_rel) as f32;
    key.min(max_key)
}

/// The first time after `t_now` at which a full tree with largest key `max_key` accepts.
pub(crate) fn next_acceptance(rng: &mut Rng, decay: f64, t_now: u64, t_rel_now: f64, max_key: f32) -> u64 {
    // Hazard at t_now + i is c·e^{λi}; the first i whose cumulative hazard reaches an
    // Exp(1) draw is the next acceptance.
    let c = (f64::from(max_key) + decay * t_rel_now).exp();
    let e = -rng.next_open_f64().ln();
    let steps = if decay > 0.0 { (e * (-(-decay).exp_m1()) / c).ln_1p() / decay } else { e / c };
    let steps = if steps.is_finite() {
        steps.ceil().max(1.0)
    } else if c > 0.0 {
        1.0
    } else {
        NEVER as f64
    };
    t_now.saturating_add((steps.min(NEVER as f64)) as u64)
}
