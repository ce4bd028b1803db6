//! The charts' drawing: axes with ticks and labels, lines, dots and
//! horizontal bars, as inline SVG (well-formed XML: every element closed,
//! every text escaped by maud). Nothing here knows what a chart shows.

use maud::{Markup, html};

/// The drawing's width in SVG units; it scales to the page's width
/// (readable from about 1,000 px).
const WIDTH: f64 = 1160.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 44.0;
const BOTTOM: f64 = 62.0;
/// Height of the plotting area of an x/y chart.
const XY_HEIGHT: f64 = 300.0;
/// A horizontal bar's band.
const BAND: f64 = 40.0;

/// Colours of the series, in order.
pub const PALETTE: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#7f7f7f", "#17becf",
];

/// One axis: the values it spans, linear or by decades.
#[derive(Debug, Clone, Copy)]
pub struct Axis {
    lo: f64,
    hi: f64,
    step: f64,
    log: bool,
}

impl Axis {
    /// From 0 to a round value at or above every value.
    pub fn linear(values: impl IntoIterator<Item = f64>) -> Self {
        let max = values
            .into_iter()
            .filter(|v| v.is_finite())
            .fold(0.0, f64::max);
        let step = round_step(max / 5.0);
        Axis {
            lo: 0.0,
            hi: ((max / step).ceil() * step).max(step),
            step,
            log: false,
        }
    }

    /// From `lo` to `hi`, a tick every `step`.
    pub fn fixed(lo: f64, hi: f64, step: f64) -> Self {
        Axis {
            lo,
            hi,
            step,
            log: false,
        }
    }

    /// Whole decades around every positive value.
    pub fn log(values: impl IntoIterator<Item = f64>) -> Self {
        let (min, max) = values
            .into_iter()
            .filter(|v| v.is_finite() && *v > 0.0)
            .fold((f64::INFINITY, 0.0_f64), |(a, b), v| (a.min(v), b.max(v)));
        let (lo, hi) = if max > 0.0 {
            (min.log10().floor(), max.log10().ceil())
        } else {
            (0.0, 1.0)
        };
        Axis {
            lo: 10f64.powf(lo),
            hi: 10f64.powf(hi.max(lo + 1.0)),
            step: 10.0,
            log: true,
        }
    }

    /// Where `v` falls between the ends, 0 to 1 (clamped).
    fn share(&self, v: f64) -> f64 {
        let s = if self.log {
            (v.max(self.lo).log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10())
        } else {
            (v - self.lo) / (self.hi - self.lo)
        };
        if s.is_finite() {
            s.clamp(0.0, 1.0)
        } else {
            0.0
        }
    }

    /// The values marked on the axis.
    fn ticks(&self) -> Vec<f64> {
        if self.log {
            let decades = (self.hi / self.lo).log10().round() as i32;
            let within: &[f64] = if decades <= 2 {
                &[1.0, 2.0, 5.0]
            } else {
                &[1.0]
            };
            let mut t: Vec<f64> = (0..decades)
                .flat_map(|d| within.iter().map(move |m| self.lo * 10f64.powi(d) * m))
                .collect();
            t.push(self.hi);
            t
        } else {
            let n = ((self.hi - self.lo) / self.step).round() as usize;
            (0..=n).map(|i| self.lo + i as f64 * self.step).collect()
        }
    }
}

/// 1, 2 or 5 times a power of ten, at or above `rough` (1 if it is not
/// positive).
fn round_step(rough: f64) -> f64 {
    if !(rough.is_finite() && rough > 0.0) {
        return 1.0;
    }
    let unit = 10f64.powf(rough.log10().floor());
    let m = rough / unit;
    unit * [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .find(|s| m <= *s + 1e-9)
        .unwrap_or(10.0)
}

/// A number as an axis or a table shows it: thousands grouped, fewer
/// decimals the larger it is.
pub fn number(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    let a = v.abs();
    if a >= 100.0 || v.fract() == 0.0 {
        let digits = format!("{:.0}", a);
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        return if v < 0.0 { format!("-{out}") } else { out };
    }
    let s = if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    };
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// A plotting area: its axes and where it sits in the drawing.
pub struct Plot {
    pub x: Axis,
    pub y: Axis,
    /// Room left of the plotting area for the y labels.
    left: f64,
    /// Height of the plotting area.
    inner: f64,
}

impl Plot {
    /// An x/y chart.
    pub fn xy(x: Axis, y: Axis) -> Self {
        Plot {
            x,
            y,
            left: 96.0,
            inner: XY_HEIGHT,
        }
    }

    /// For horizontal bars of these values: one band a bar, with room
    /// for their labels.
    pub fn bands(values: &[f64]) -> Self {
        Plot {
            // Room right of the longest bar for its value.
            x: Axis::linear(values.iter().map(|v| v * 1.25)),
            y: Axis::fixed(0.0, values.len().max(1) as f64, 1.0),
            left: 320.0,
            inner: BAND * values.len().max(1) as f64,
        }
    }

    fn px(&self, v: f64) -> f64 {
        self.left + self.x.share(v) * (WIDTH - self.left - RIGHT)
    }

    fn py(&self, v: f64) -> f64 {
        TOP + self.inner - self.y.share(v) * self.inner
    }

    fn height(&self) -> f64 {
        TOP + self.inner + BOTTOM
    }

    /// The drawing: a titled `<svg>` of the plot's size around `body`.
    pub fn svg(&self, id: &str, title: &str, body: Markup) -> Markup {
        let h = self.height();
        html! {
            svg id=(id) class="chart" role="img" aria-label=(title)
                viewBox=(format!("0 0 {WIDTH} {h:.0}")) width=(WIDTH) height=(format!("{h:.0}")) {
                title { (title) }
                (body)
            }
        }
    }

    /// The x axis at the bottom of the area: line, ticks with their
    /// values, vertical grid lines, and its label.
    pub fn x_axis(&self, label: &str) -> Markup {
        let (top, bottom) = (TOP, TOP + self.inner);
        html! {
            g class="axis" {
                line x1=(f(self.left)) y1=(f(bottom)) x2=(f(WIDTH - RIGHT)) y2=(f(bottom)) {}
                @for t in self.x.ticks() {
                    @let x = self.px(t);
                    line class="grid" x1=(f(x)) y1=(f(top)) x2=(f(x)) y2=(f(bottom)) {}
                    text x=(f(x)) y=(f(bottom + 18.0)) text-anchor="middle" { (number(t)) }
                }
                text class="label" x=(f((self.left + WIDTH - RIGHT) / 2.0)) y=(f(bottom + 46.0))
                    text-anchor="middle" { (label) }
            }
        }
    }

    /// The y axis at the left of the area: line, ticks with their
    /// values, horizontal grid lines, and its label (turned upright).
    pub fn y_axis(&self, label: &str) -> Markup {
        let (top, bottom) = (TOP, TOP + self.inner);
        let mid = (top + bottom) / 2.0;
        html! {
            g class="axis" {
                line x1=(f(self.left)) y1=(f(top)) x2=(f(self.left)) y2=(f(bottom)) {}
                @for t in self.y.ticks() {
                    @let y = self.py(t);
                    line class="grid" x1=(f(self.left)) y1=(f(y)) x2=(f(WIDTH - RIGHT)) y2=(f(y)) {}
                    text x=(f(self.left - 8.0)) y=(f(y + 4.0)) text-anchor="end" { (number(t)) }
                }
                text class="label" x="18" y=(f(mid)) text-anchor="middle"
                    transform=(format!("rotate(-90 18 {mid:.1})")) { (label) }
            }
        }
    }

    /// A line through the points, in order.
    pub fn line(&self, xs: &[f64], ys: &[f64], colour: &str) -> Markup {
        let points: Vec<String> = xs
            .iter()
            .zip(ys)
            .map(|(x, y)| format!("{:.1},{:.1}", self.px(*x), self.py(*y)))
            .collect();
        html! {
            polyline class="series" points=(points.join(" ")) stroke=(colour) {}
        }
    }

    /// A dot at each point.
    pub fn dots(&self, xs: &[f64], ys: &[f64], colour: &str) -> Markup {
        html! {
            g fill=(colour) fill-opacity="0.6" {
                @for (x, y) in xs.iter().zip(ys) {
                    circle cx=(f(self.px(*x))) cy=(f(self.py(*y))) r="3" {}
                }
            }
        }
    }

    /// Horizontal bars from the left edge, one a band from the top, each
    /// with its label left of the area and its value (with `unit`) at
    /// its end.
    pub fn bars(&self, bars: &[(String, f64)], unit: &str) -> Markup {
        let n = bars.len() as f64;
        html! {
            @for (i, (label, v)) in bars.iter().enumerate() {
                @let mid = self.py(n - i as f64 - 0.5);
                @let end = self.px(*v);
                rect x=(f(self.left)) y=(f(mid - BAND * 0.3)) width=(f(end - self.left))
                    height=(f(BAND * 0.6)) fill=(PALETTE[i % PALETTE.len()]) {}
                text x=(f(self.left - 8.0)) y=(f(mid + 4.0)) text-anchor="end" { (label) }
                text x=(f(end + 6.0)) y=(f(mid + 4.0)) { (number(*v)) " " (unit) }
            }
        }
    }

    /// The names of the series with their colours, in a row above the
    /// area.
    pub fn legend(&self, names: &[&str]) -> Markup {
        html! {
            g class="legend" {
                @for (i, name) in names.iter().enumerate() {
                    @let x = self.left + i as f64 * 300.0;
                    rect x=(f(x)) y="12" width="14" height="14" fill=(PALETTE[i % PALETTE.len()]) {}
                    text x=(f(x + 20.0)) y="24" { (name) }
                }
            }
        }
    }
}

/// A coordinate as an attribute.
fn f(v: f64) -> String {
    format!("{v:.1}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_axes_end_on_a_round_value_above_the_largest() {
        let a = Axis::linear([4300.0, 120.0]);
        assert_eq!((a.lo, a.hi), (0.0, 5000.0));
        assert_eq!(a.ticks(), [0.0, 1000.0, 2000.0, 3000.0, 4000.0, 5000.0]);
        let empty = Axis::linear([]);
        assert_eq!((empty.lo, empty.hi), (0.0, 1.0));
    }

    #[test]
    fn log_axes_span_whole_decades() {
        let a = Axis::log([3.5, 0.0, 1800.0]);
        assert_eq!((a.lo, a.hi), (1.0, 10_000.0));
        assert_eq!(a.ticks(), [1.0, 10.0, 100.0, 1000.0, 10_000.0]);
        assert!((a.share(100.0) - 0.5).abs() < 1e-9);
        assert_eq!(a.share(0.0), 0.0, "below the axis: at its start");
    }

    #[test]
    fn numbers_are_grouped_and_rounded_by_size() {
        assert_eq!(number(1_234_567.8), "1,234,568");
        assert_eq!(number(42.26), "42.3");
        assert_eq!(number(0.126), "0.13");
        assert_eq!(number(0.5), "0.5");
        assert_eq!(number(-2500.0), "-2,500");
        assert_eq!(number(7.0), "7");
    }
}
