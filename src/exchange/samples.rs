//! Several measured exchanges on one socket, and their statistics (the
//! median is the value; min, max, mean and mdev as ping prints them).

use std::time::Duration;

/// How many samples a run takes and how they are paced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Samples {
    pub count: u32,
    /// How long one sample waits for its reply (only when `count > 1`).
    pub timeout: Duration,
    /// The least time between two sends.
    pub interval: Duration,
}

impl Samples {
    pub const ONE: Samples = Samples {
        count: 1,
        timeout: super::DEFAULT_SAMPLE_TIMEOUT,
        interval: super::DEFAULT_SAMPLE_INTERVAL,
    };
}

/// What a run's samples came to; `meta.samples` on the wire.
#[derive(Clone, Debug, PartialEq)]
pub struct SampleStats {
    pub sent: u32,
    pub received: u32,
    /// Present when at least one reply came.
    pub spread: Option<Spread>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spread {
    pub median: Duration,
    pub min: Duration,
    pub max: Duration,
    pub mean: Duration,
    /// Population standard deviation, as ping's mdev.
    pub mdev: Duration,
}

/// The spread of `rtts`, which it sorts; `None` when empty.
pub fn spread(rtts: &mut [Duration]) -> Option<Spread> {
    if rtts.is_empty() {
        return None;
    }
    // At most 100 values: an insertion sort, a few instructions where a
    // library sort would add kilobytes to the binary.
    for i in 1..rtts.len() {
        let mut j = i;
        while j > 0 && rtts[j - 1] > rtts[j] {
            rtts.swap(j - 1, j);
            j -= 1;
        }
    }
    let n = rtts.len();
    let median = if n % 2 == 1 {
        rtts[n / 2]
    } else {
        (rtts[n / 2 - 1] + rtts[n / 2]) / 2
    };
    let secs: f64 = rtts.iter().map(Duration::as_secs_f64).sum();
    let mean = secs / n as f64;
    let variance = rtts
        .iter()
        .map(|d| (d.as_secs_f64() - mean).powi(2))
        .sum::<f64>()
        / n as f64;
    Some(Spread {
        median,
        min: rtts[0],
        max: rtts[n - 1],
        mean: Duration::from_secs_f64(mean),
        mdev: Duration::from_secs_f64(variance.sqrt()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        let s = spread(&mut [ms(5), ms(1), ms(3)]).unwrap();
        assert_eq!((s.median, s.min, s.max), (ms(3), ms(1), ms(5)));
        let s = spread(&mut [ms(4), ms(1), ms(3), ms(2)]).unwrap();
        assert_eq!(s.median, Duration::from_micros(2500));
        assert_eq!(s.mean, Duration::from_micros(2500));
        // sqrt(((1.5)^2 + (0.5)^2) * 2 / 4) = 1.118 ms
        assert_eq!(s.mdev.as_micros(), 1118);
        assert!(spread(&mut []).is_none());
    }
}
