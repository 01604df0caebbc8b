//! The simulated calendar, in Asia/Shanghai local time (UTC+8, no DST): weekly seasonality,
//! evening peaks, live-stream evenings and the big shopping festivals (618, 双11, 双12).

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::json::civil_from_days;
use crate::profile::Profile;

pub(crate) const SECOND: i64 = 1_000;
pub(crate) const MINUTE: i64 = 60 * SECOND;
pub(crate) const HOUR: i64 = 60 * MINUTE;
pub(crate) const DAY: i64 = 24 * HOUR;
/// Asia/Shanghai is UTC+8 all year.
pub(crate) const LOCAL_OFFSET: i64 = 8 * HOUR;

/// Relative activity by local hour: night trough, lunch bump, evening peak 19–23h (the
/// classic short-video / live curve).
const HOUR_WEIGHTS: [f64; 24] = [
    1.6, 0.8, 0.4, 0.25, 0.2, 0.3, 0.6, 1.2, 2.0, 2.6, 2.8, 3.0, // 00–11
    3.6, 3.4, 2.8, 2.6, 2.7, 3.0, 3.6, 4.8, 5.6, 6.0, 5.4, 3.4, // 12–23
];

/// Relative activity by weekday (Mon..Sun): weekends busier.
const WEEKDAY_WEIGHTS: [f64; 7] = [0.92, 0.95, 0.97, 1.0, 1.08, 1.3, 1.25];

/// Promotion multiplier of a local date: 618 (June 1–18), 双11 (presale from Oct 20, peak Nov 11),
/// 双12. Also raises the order rate (√ of it) and, on peak days, later returns.
pub(crate) fn promo_factor(month: u32, day: u32) -> f64 {
    match (month, day) {
        (6, 18) => 2.8,
        (6, 16..=17) => 2.0,
        (6, 1..=15) => 1.35,
        (10, 20..=31) => 1.3,
        (11, 11) => 3.2,
        (11, 10) => 2.2,
        (11, 1..=9) => 1.5,
        (11, 12..=13) => 1.3,
        (12, 12) => 1.8,
        (12, 10..=11) => 1.3,
        _ => 1.0,
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Day {
    /// Days since 1970-01-01 of this local date.
    pub epoch_day: i64,
    /// UTC millis of local midnight.
    pub start: i64,
    pub promo: f64,
    /// Overall activity weight (weekday × promo × live).
    pub weight: f64,
    pub live_douyin: bool,
    pub live_kuaishou: bool,
}

#[derive(Debug)]
pub(crate) struct Calendar {
    pub start: i64,
    pub end: i64,
    pub days: Vec<Day>,
    pub max_weight: f64,
    hour_cdf: [f64; 24],
    pub live_start_min: u32,
    pub live_len_min: u32,
}

impl Calendar {
    pub fn new(start: i64, end: i64, profile: &Profile) -> Calendar {
        let first = (start + LOCAL_OFFSET).div_euclid(DAY);
        let last = (end + LOCAL_OFFSET).div_euclid(DAY);
        let mut days = Vec::with_capacity((last - first + 1).max(1) as usize);
        for epoch_day in first..=last {
            let (_, m, d) = civil_from_days(epoch_day);
            // 1970-01-01 was a Thursday (Mon = 0 → Thursday = 3).
            let weekday = (epoch_day + 3).rem_euclid(7) as usize;
            let promo = promo_factor(m, d);
            let live_douyin = profile.live_weekdays[weekday] || promo >= 2.0;
            let live_kuaishou = live_douyin && (weekday >= 5 || weekday == 2 || promo >= 2.0);
            let weight = WEEKDAY_WEIGHTS[weekday] * promo * if live_douyin { 1.15 } else { 1.0 };
            days.push(Day {
                epoch_day,
                start: epoch_day * DAY - LOCAL_OFFSET,
                promo,
                weight,
                live_douyin,
                live_kuaishou,
            });
        }
        let max_weight = days.iter().map(|d| d.weight).fold(1.0, f64::max);
        let mut hour_cdf = [0.0; 24];
        let total: f64 = HOUR_WEIGHTS.iter().sum();
        let mut acc = 0.0;
        for (h, w) in HOUR_WEIGHTS.iter().enumerate() {
            acc += w / total;
            hour_cdf[h] = acc;
        }
        hour_cdf[23] = 1.0;
        Calendar {
            start,
            end,
            days,
            max_weight,
            hour_cdf,
            live_start_min: profile.live_start_min,
            live_len_min: profile.live_len_min,
        }
    }

    /// Index of the local day containing `t` (clamped to the calendar).
    pub fn day_index(&self, t: i64) -> usize {
        let epoch_day = (t + LOCAL_OFFSET).div_euclid(DAY);
        (epoch_day - self.days[0].epoch_day).clamp(0, self.days.len() as i64 - 1) as usize
    }

    /// Share of local day `k` inside `[start, end]`.
    pub fn coverage(&self, k: usize) -> f64 {
        let d = self.days[k];
        let from = d.start.max(self.start);
        let to = (d.start + DAY).min(self.end);
        ((to - from) as f64 / DAY as f64).clamp(0.0, 1.0)
    }

    /// A time of day following the hourly curve, as millis after local midnight (whole seconds).
    pub fn sample_time_of_day(&self, rng: &mut ChaCha8Rng) -> i64 {
        let u: f64 = rng.gen();
        let hour = self.hour_cdf.iter().position(|&c| u < c).unwrap_or(23) as i64;
        hour * HOUR + rng.gen_range(0..3600) * SECOND
    }

    /// Is there a live stream on this platform this day, and when (UTC millis of start, end)?
    pub fn live_window(&self, k: usize, kuaishou: bool) -> Option<(i64, i64)> {
        let d = self.days[k];
        let on = if kuaishou { d.live_kuaishou } else { d.live_douyin };
        on.then(|| {
            let start = d.start + i64::from(self.live_start_min) * MINUTE;
            (start, start + i64::from(self.live_len_min) * MINUTE)
        })
    }

    /// A moment in a live window: most viewers come early, when the stream is pushed.
    pub fn sample_in_live(&self, window: (i64, i64), rng: &mut ChaCha8Rng) -> i64 {
        let (a, b) = window;
        let u = rng.gen::<f64>().min(rng.gen::<f64>());
        let t = a + ((b - a) as f64 * 0.9 * u) as i64;
        t - t.rem_euclid(SECOND)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use siyu_model::Industry;

    #[test]
    fn weekdays_and_promos() {
        let p = crate::profile::profile(Industry::ConsumerGoods);
        // 2026-11-11 (a Wednesday) local.
        let t = siyu_model::Millis::parse_rfc3339("2026-11-11T12:00:00+08:00").unwrap().0;
        let cal = Calendar::new(t - 30 * DAY, t, p);
        let k = cal.day_index(t);
        assert_eq!((cal.days[k].epoch_day + 3).rem_euclid(7), 2, "a Wednesday");
        assert_eq!(cal.days[k].promo, 3.2);
        assert!(cal.days[k].live_douyin, "big promo days always have a live");
        assert!((cal.coverage(k) - 0.5).abs() < 1e-9);
        assert_eq!(cal.days[k].start, siyu_model::Millis::parse_rfc3339("2026-11-11T00:00:00+08:00").unwrap().0);
    }
}
