//! Axis scales and their ticks: where a value goes along an axis, and which values get a tick.
//!
//! Charts are drawn in *axis units*: the value itself on a linear axis, its base-2 or base-10
//! logarithm on a logarithmic one, so every axis is linear to the drawing library and its ticks
//! are exactly the ones chosen here (powers of two for counts, 1-2-5 steps for times).
//!
//! Invariants: an axis covers every finite value it was fitted to (positive ones only on a
//! logarithmic scale; others are left out, never drawn at a bogus place), has a non-empty
//! range, and at least one tick inside it.

/// An axis scale.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    /// Linear from 0.
    Linear,
    /// Logarithmic with ticks at powers of two (token and expert counts, world sizes).
    Log2,
    /// Logarithmic with ticks at 1, 2, 5 x 10^n (times).
    Log10,
}

/// A fitted axis: its range in axis units and its ticks (values, not units).
#[derive(Clone, Debug, PartialEq)]
pub struct Axis {
    /// The scale.
    pub scale: Scale,
    /// Lower end, in axis units.
    pub lo: f64,
    /// Upper end, in axis units.
    pub hi: f64,
    /// Values with a tick, ascending.
    pub ticks: Vec<f64>,
}

impl Axis {
    /// An axis covering `values` (module doc).
    pub fn fit(scale: Scale, values: impl IntoIterator<Item = f64>) -> Axis {
        let usable: Vec<f64> = values
            .into_iter()
            .filter(|v| v.is_finite() && (scale == Scale::Linear || *v > 0.0))
            .collect();
        let min = usable.iter().copied().fold(f64::INFINITY, f64::min);
        let max = usable.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        match scale {
            Scale::Linear => {
                let top = if max.is_finite() && max > 0.0 { max * 1.1 } else { 1.0 };
                let step = nice_step(top / 8.0);
                let ticks: Vec<f64> = (0..)
                    .map(|i| i as f64 * step)
                    .take_while(|t| *t <= top + step * 1e-9)
                    .collect();
                Axis { scale, lo: 0.0, hi: top.max(step), ticks }
            }
            Scale::Log2 => {
                let (lo, hi) = if min.is_finite() {
                    (min.log2().floor(), max.log2().ceil())
                } else {
                    (0.0, 1.0)
                };
                let (lo, hi) = if hi - lo < 1.0 { (lo - 1.0, hi + 1.0) } else { (lo, hi) };
                let every = ((hi - lo) / 8.0).ceil().max(1.0);
                let ticks = (0..)
                    .map(|i| lo + i as f64 * every)
                    .take_while(|e| *e <= hi)
                    .map(f64::exp2)
                    .collect();
                // Half a power of two of room on each side, so points are not on the frame.
                Axis { scale, lo: lo - 0.25, hi: hi + 0.25, ticks }
            }
            Scale::Log10 => {
                let (lo, hi) = if min.is_finite() {
                    ((min / 1.25).log10(), (max * 1.25).log10())
                } else {
                    (-1.0, 1.0)
                };
                let ticks_with = |mantissas: &[f64]| -> Vec<f64> {
                    let mut ticks = Vec::new();
                    for decade in lo.floor() as i32..=hi.ceil() as i32 {
                        for m in mantissas {
                            let t = m * 10f64.powi(decade);
                            if (lo..=hi).contains(&t.log10()) {
                                ticks.push(t);
                            }
                        }
                    }
                    ticks
                };
                let mut ticks = ticks_with(&[1.0, 2.0, 5.0]);
                if ticks.len() < 3 {
                    // A narrow range: evenly spaced ticks of a nice step instead.
                    let (a, b) = (10f64.powf(lo), 10f64.powf(hi));
                    let step = nice_step((b - a) / 8.0);
                    ticks = ((a / step).ceil() as i64..=(b / step).floor() as i64)
                        .map(|k| k as f64 * step)
                        .collect();
                }
                if ticks.is_empty() {
                    ticks.push(10f64.powf((lo + hi) / 2.0));
                }
                Axis { scale, lo, hi, ticks }
            }
        }
    }

    /// `v` in axis units, if the scale can show it and it lies on the axis.
    pub fn units(&self, v: f64) -> Option<f64> {
        let u = match self.scale {
            Scale::Linear => v,
            Scale::Log2 if v > 0.0 => v.log2(),
            Scale::Log10 if v > 0.0 => v.log10(),
            _ => return None,
        };
        let slack = (self.hi - self.lo) * 1e-9;
        (u.is_finite() && u >= self.lo - slack && u <= self.hi + slack).then_some(u)
    }

    /// The value at `u` axis units (the inverse of [`Axis::units`]).
    pub fn value(&self, u: f64) -> f64 {
        match self.scale {
            Scale::Linear => u,
            Scale::Log2 => u.exp2(),
            Scale::Log10 => 10f64.powf(u),
        }
    }

    /// The ticks in axis units.
    pub fn tick_units(&self) -> Vec<f64> {
        self.ticks.iter().filter_map(|&t| self.units(t)).collect()
    }
}

/// A step of 1, 2 or 5 x 10^n at least `raw`.
pub fn nice_step(raw: f64) -> f64 {
    let raw = if raw.is_finite() && raw > 0.0 { raw } else { 1.0 };
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * mag)
}

/// A tick label: at most three decimals, trailing zeros dropped.
pub fn tick_label(v: f64) -> String {
    if v.abs() >= 1000.0 {
        return format!("{v:.0}");
    }
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_axes_tick_at_powers_and_decades() {
        let x = Axis::fit(Scale::Log2, [128.0, 4096.0, 16384.0]);
        assert_eq!(x.ticks, [128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0]);
        assert_eq!((x.lo, x.hi), (6.75, 14.25));
        assert_eq!((x.units(128.0), x.units(16384.0)), (Some(7.0), Some(14.0)));
        assert_eq!((x.units(0.0), x.units(65536.0)), (None, None));
        assert!((x.value(x.units(4096.0).unwrap()) - 4096.0).abs() < 1e-9);
        let y = Axis::fit(Scale::Log10, [0.137, 1.954]);
        assert_eq!(y.ticks, [0.2, 0.5, 1.0, 2.0]);
        // A narrow range (1.18 to 2.49 after padding): steps of 0.2.
        let narrow = Axis::fit(Scale::Log10, [1.475, 1.99]);
        assert_eq!(narrow.ticks.len(), 7);
        assert!((narrow.ticks[0] - 1.2).abs() < 1e-12 && (narrow.ticks[6] - 2.4).abs() < 1e-12);
        let one = Axis::fit(Scale::Log2, [8.0]);
        assert_eq!(one.ticks, [4.0, 8.0, 16.0]);
        let wide = Axis::fit(Scale::Log2, [1.0, 65536.0]);
        assert!(wide.ticks.len() <= 9 && wide.ticks[0] == 1.0);
        assert!(!Axis::fit(Scale::Log10, []).ticks.is_empty());
        // Nothing to show: 0.1 to 10 ms, ticked at 1, 2 and 5.
        assert_eq!(Axis::fit(Scale::Log10, [-1.0, f64::NAN]).tick_units().len(), 7);
    }

    #[test]
    fn linear_axes_start_at_zero_with_nice_steps() {
        let y = Axis::fit(Scale::Linear, [0.4, 8.9]);
        assert_eq!(y.ticks, [0.0, 2.0, 4.0, 6.0, 8.0]);
        assert!(y.hi >= 8.9 * 1.1 - 1e-9);
        assert_eq!(y.tick_units(), y.ticks);
        let empty = Axis::fit(Scale::Linear, [f64::NAN]).ticks;
        assert_eq!(empty.len(), 6);
        assert!(
            empty.iter().zip([0.0, 0.2, 0.4, 0.6, 0.8, 1.0]).all(|(a, b)| (a - b).abs() < 1e-12)
        );
        assert_eq!(nice_step(0.3), 0.5);
        assert_eq!(nice_step(7.0), 10.0);
        assert_eq!(tick_label(0.05), "0.05");
        assert_eq!(tick_label(16384.0000001), "16384");
        assert_eq!(tick_label(2.0), "2");
        assert_eq!(tick_label(-0.0001), "0");
    }
}
