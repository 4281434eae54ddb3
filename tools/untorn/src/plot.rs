// SPDX-License-Identifier: GPL-2.0

//! Line charts as SVG, drawn by hand (no plotting dependency for a few lines), for the
//! reports of `untorn bench` and `untorn pgbench`.

use std::fmt::Write as _;

/// A named line of `(x, y)` points.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// A line chart, drawn as SVG by hand (no plotting dependency for a few lines).
pub struct Chart<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub x_log: bool,
    pub y_from_zero: bool,
    /// Ticks at these x values (and the axis from the first to the last) instead of at
    /// powers of ten.
    pub x_ticks: Option<Vec<f64>>,
}

/// Distinguishable colours (Okabe-Ito, with grey before its pale yellow).
const COLOURS: [&str; 10] = [
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#888888",
    "#F0E442", "#BBBBBB",
];

impl Chart<'_> {
    pub fn svg(&self, series: &[Series]) -> String {
        const W: f64 = 760.0;
        const H: f64 = 440.0;
        const LEFT: f64 = 70.0;
        const RIGHT: f64 = 190.0;
        const TOP: f64 = 40.0;
        const BOTTOM: f64 = 55.0;
        let tx = |x: f64| if self.x_log { x.max(1e-9).log10() } else { x };
        let points = series.iter().flat_map(|s| s.points.iter());
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for &(x, y) in points {
            x0 = x0.min(tx(x));
            x1 = x1.max(tx(x));
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
        if x0 > x1 {
            (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
        }
        if self.x_ticks.is_some() {
            if x1 <= x0 {
                x1 = x0 + 1.0;
            }
        } else if self.x_log {
            x0 = x0.floor();
            x1 = x1.ceil().max(x0 + 1.0);
        } else if x1 <= x0 {
            x1 = x0 + 1.0;
        }
        if self.y_from_zero {
            y0 = 0.0;
        }
        if y1 <= y0 {
            y1 = y0 + 1.0;
        }
        let y1 = nice_ceiling(y1);
        let px = |x: f64| LEFT + (tx(x) - x0) / (x1 - x0) * (W - LEFT - RIGHT);
        let py = |y: f64| H - BOTTOM - (y - y0) / (y1 - y0) * (H - TOP - BOTTOM);
        let mut svg = String::new();
        let _ = writeln!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(svg, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="22" font-size="15" text-anchor="middle">{}</text>"#,
            (W - RIGHT + LEFT) / 2.0,
            escape(self.title)
        );
        // Grid and ticks.
        let x_ticks: Vec<f64> = if let Some(ticks) = &self.x_ticks {
            ticks.clone()
        } else if self.x_log {
            (x0 as i32..=x1 as i32).map(|e| 10f64.powi(e)).collect()
        } else {
            (0..=5).map(|i| x0 + (x1 - x0) * i as f64 / 5.0).collect()
        };
        for x in x_ticks {
            let p = px(x);
            let _ = writeln!(
                svg,
                r##"<line x1="{p:.1}" y1="{TOP}" x2="{p:.1}" y2="{:.1}" stroke="#ddd"/><text x="{p:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                H - BOTTOM,
                H - BOTTOM + 16.0,
                tick_label(x)
            );
        }
        for i in 0..=5 {
            let y = y0 + (y1 - y0) * i as f64 / 5.0;
            let p = py(y);
            let _ = writeln!(
                svg,
                r##"<line x1="{LEFT}" y1="{p:.1}" x2="{:.1}" y2="{p:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                W - RIGHT,
                LEFT - 6.0,
                p + 4.0,
                tick_label(y)
            );
        }
        let _ = writeln!(
            svg,
            r##"<rect x="{LEFT}" y="{TOP}" width="{:.1}" height="{:.1}" fill="none" stroke="#444"/>"##,
            W - LEFT - RIGHT,
            H - TOP - BOTTOM
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            (W - RIGHT + LEFT) / 2.0,
            H - 12.0,
            escape(self.x_label)
        );
        let _ = writeln!(
            svg,
            r#"<text transform="translate(16,{:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
            (H - BOTTOM + TOP) / 2.0,
            escape(self.y_label)
        );
        for (i, s) in series.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let path: Vec<String> = s
                .points
                .iter()
                .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
                .collect();
            let _ = writeln!(
                svg,
                r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
                path.join(" ")
            );
            if s.points.len() <= 8 {
                for &(x, y) in &s.points {
                    let _ = writeln!(
                        svg,
                        r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{colour}"/>"#,
                        px(x),
                        py(y)
                    );
                }
            }
            let ly = TOP + 10.0 + 18.0 * i as f64;
            let lx = W - RIGHT + 14.0;
            let _ = writeln!(
                svg,
                r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{colour}" stroke-width="3"/><text x="{}" y="{}">{}</text>"#,
                lx + 22.0,
                lx + 28.0,
                ly + 4.0,
                escape(&s.name)
            );
        }
        svg.push_str("</svg>\n");
        svg
    }
}

/// The smallest of 1, 2, 2.5, 5 times a power of ten that is at least `v`.
pub fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let base = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if m * base >= v * (1.0 - 1e-12) {
            return m * base;
        }
    }
    10.0 * base
}

fn tick_label(v: f64) -> String {
    if v == 0.0 {
        "0".to_string()
    } else if v.abs() >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v.abs() >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if v.abs() >= 10.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_are_round() {
        assert_eq!(nice_ceiling(730.0), 1000.0);
        assert_eq!(nice_ceiling(2100.0), 2500.0);
        assert_eq!(nice_ceiling(0.0), 1.0);
    }
}
