//! Byte counters of the nodes' links, sampled on a fixed tick while a method runs: the
//! origin's egress as a time series, every node's ingress as a total.

use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A kernel interface counter, read from sysfs in the root namespace.
#[derive(Debug, Clone)]
pub struct Counter {
    path: PathBuf,
}

impl Counter {
    /// Bytes the interface received (`rx`) or sent (`tx`).
    pub fn new(dev: &str, direction: &str) -> Counter {
        Counter {
            path: PathBuf::from(format!("/sys/class/net/{dev}/statistics/{direction}_bytes")),
        }
    }

    /// The counter now; 0 once the interface is gone.
    pub fn read(&self) -> u64 {
        std::fs::read_to_string(&self.path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }
}

/// Counter values (since the sampler started) at `t` seconds after the method's start.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Sample {
    pub t: f64,
    pub bytes: Vec<u64>,
}

pub struct Sampler {
    stop: Sender<()>,
    thread: JoinHandle<Vec<Sample>>,
}

impl Sampler {
    /// Samples `counters` every `tick` until [`Sampler::finish`]; times are relative to `t0`.
    pub fn start(counters: Vec<Counter>, tick: Duration, t0: Instant) -> Sampler {
        let (stop, stopped) = mpsc::channel();
        // Read before returning: traffic after start() always counts.
        let base: Vec<u64> = counters.iter().map(Counter::read).collect();
        let thread = std::thread::spawn(move || {
            let sample = || Sample {
                t: t0.elapsed().as_secs_f64(),
                bytes: counters
                    .iter()
                    .zip(&base)
                    .map(|(c, b)| c.read().saturating_sub(*b))
                    .collect(),
            };
            let mut samples = vec![sample()];
            // The stop channel doubles as the clock: a tick is a receive that timed out.
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(tick) {
                samples.push(sample());
            }
            samples.push(sample());
            samples
        });
        Sampler { stop, thread }
    }

    /// Stops sampling and returns every sample, the last one taken now.
    pub fn finish(self) -> Vec<Sample> {
        let _ = self.stop.send(());
        self.thread.join().unwrap_or_default()
    }
}

/// Bytes per second between consecutive samples of counter `index`.
pub fn rate_series(samples: &[Sample], index: usize) -> Vec<(f64, f64)> {
    samples
        .windows(2)
        .filter(|w| w[1].t > w[0].t)
        .map(|w| {
            let bytes = w[1].bytes[index].saturating_sub(w[0].bytes[index]);
            (w[1].t, bytes as f64 / (w[1].t - w[0].t))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_come_from_counter_differences() {
        let s = |t, b| Sample { t, bytes: vec![b] };
        let series = rate_series(&[s(0.0, 0), s(0.5, 100), s(1.0, 100), s(2.0, 400)], 0);
        assert_eq!(series, vec![(0.5, 200.0), (1.0, 0.0), (2.0, 300.0)]);
    }

    #[test]
    fn the_loopback_counter_is_sampled_until_finished() {
        let t0 = Instant::now();
        let sampler = Sampler::start(vec![Counter::new("lo", "rx")], Duration::from_millis(5), t0);
        // Traffic on lo, so the counter moves (a UDP datagram to ourselves).
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.send_to(&[0u8; 1000], sock.local_addr().unwrap())
            .unwrap();
        let mut buf = [0u8; 1000];
        sock.recv(&mut buf).unwrap();
        let samples = sampler.finish();
        assert!(samples.len() >= 2);
        assert!(samples.last().unwrap().bytes[0] >= 1000, "{samples:?}");
        assert!(samples.windows(2).all(|w| w[1].t >= w[0].t));
    }
}
