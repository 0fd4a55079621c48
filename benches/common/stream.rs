//! The forest bench's stream, shared with `examples/instructions.rs` so that the
//! instruction counts and the timings measure the same points.

/// xorshift64*: a seeded stream without depending on the forest's own generator.
pub struct Stream(pub u64);

impl Stream {
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn gaussian(&mut self) -> f32 {
        let (u, v) = (1.0 - self.uniform(), self.uniform());
        ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
    }
    /// A noisy sine per feature, as sensors produce.
    pub fn record(&mut self, i: usize, features: usize) -> Vec<f32> {
        (0..features).map(|f| (10.0 * ((i + 7 * f) as f64 * 0.05).sin()) as f32 + self.gaussian()).collect()
    }
}
