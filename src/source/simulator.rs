//! The built-in simulator of the embedded default: the reference scenario for a few
//! sensors (DemoSensor-N: uniform integers 10..20, 1% in 100..120) and DemoWave, a
//! differently shaped sensor (a slow wave with noise and occasional drops), so a
//! newcomer sees anomalies within a minute of `rcfd serve`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::event::{now_ms, Record};
use crate::service::config::SimulatorConfig;
use crate::service::scorer::Scorer;

/// The built-in detector the simulator's sensors are scored by.
pub const DETECTOR_TOML: &str = include_str!("../../models/iot-sensor.toml");
pub const DETECTOR: &str = "iot-sensor";
pub const FEATURE: &str = "iotValue";
/// Records per DemoWave period: short enough that the model sees whole periods while it
/// warms up, so only the drops are news.
const WAVE_PERIOD: f64 = 100.0;
/// Chance per record that DemoWave drops out for a few records.
const WAVE_DROP_CHANCE: f64 = 0.003;
const WAVE_DROP_LENGTH: u32 = 5;

/// A seeded generator of the simulator's readings (wyrand, like the forest's).
pub struct Readings {
    state: u64,
    sensors: usize,
    wave: bool,
    step: u64,
    drop_left: u32,
}

impl Readings {
    pub fn new(config: &SimulatorConfig) -> Self {
        Readings { state: config.seed, sensors: config.sensors, wave: config.wave, step: 0, drop_left: 0 }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(self.state) * u128::from(self.state ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) ^ t) as u64
    }

    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn integer(&mut self, low: u64, high: u64) -> f64 {
        (low + self.next_u64() % (high - low + 1)) as f64
    }

    /// One reading per sensor: (entity, value, injected anomaly).
    pub fn next_tick(&mut self) -> Vec<(String, f64, bool)> {
        let mut readings = Vec::with_capacity(self.sensors + 1);
        for n in 1..=self.sensors {
            let anomaly = self.uniform() < 0.01;
            let value = if anomaly { self.integer(100, 120) } else { self.integer(10, 20) };
            readings.push((format!("DemoSensor-{n}"), value, anomaly));
        }
        if self.wave {
            if self.drop_left == 0 && self.uniform() < WAVE_DROP_CHANCE {
                self.drop_left = WAVE_DROP_LENGTH;
            }
            let phase = std::f64::consts::TAU * self.step as f64 / WAVE_PERIOD;
            let noise = (self.uniform() - 0.5) * 4.0;
            let anomaly = self.drop_left > 0;
            let value = if anomaly { 2.0 + noise.abs() } else { 50.0 + 20.0 * phase.sin() + noise };
            self.drop_left = self.drop_left.saturating_sub(1);
            readings.push(("DemoWave".to_owned(), value, anomaly));
        }
        self.step += 1;
        readings
    }
}

/// Feeds the scorer `config.rate` ticks per second until `shutdown` resolves.
pub async fn run(scorer: Arc<Scorer>, config: SimulatorConfig, shutdown: impl std::future::Future<Output = ()>) {
    let mut readings = Readings::new(&config);
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / config.rate));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = ticks.tick() => {}
        }
        let event_ms = now_ms();
        let records = readings
            .next_tick()
            .into_iter()
            .map(|(entity, value, _)| Record {
                detector: DETECTOR.to_owned(),
                entity,
                event_ms,
                values: BTreeMap::from([(FEATURE.to_owned(), value)]),
                id: None,
                source: None,
            })
            .collect();
        match scorer.score_async("simulator", records).await {
            Ok((_, delivery)) => scorer.deliver(delivery).await,
            Err(e) => tracing::error!(error = %e, "simulator scoring failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sensors_follow_the_reference_scenario() {
        let config = SimulatorConfig { sensors: 2, wave: true, ..SimulatorConfig::default() };
        let mut readings = Readings::new(&config);
        let (mut normal, mut spikes, mut drops) = (0, 0, 0);
        for _ in 0..20_000 {
            for (entity, value, anomaly) in readings.next_tick() {
                if entity == "DemoWave" {
                    drops += usize::from(anomaly);
                    assert!(if anomaly { value < 5.0 } else { (27.0..=73.0).contains(&value) }, "{value}");
                } else if anomaly {
                    spikes += 1;
                    assert!((100.0..=120.0).contains(&value) && value.fract() == 0.0, "{value}");
                } else {
                    normal += 1;
                    assert!((10.0..=20.0).contains(&value) && value.fract() == 0.0, "{value}");
                }
            }
        }
        let share = spikes as f64 / (spikes + normal) as f64;
        assert!((0.008..0.012).contains(&share), "1% of the sensors' readings are spikes: {share}");
        assert!(drops > 100, "DemoWave drops out now and then: {drops}");
    }
}
