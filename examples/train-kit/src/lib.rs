//! What the training examples share: loading a `.gd` optimizer with its diagnostics rendered
//! against the file, a progress bar with loss and steps/s, JSON logs, line plots written as
//! PNG, a seeded random number generator and median/spread summaries.

use gdc_runtime::Program;
use indicatif::{ProgressBar, ProgressStyle};
use plotters::prelude::*;
use std::path::Path;

/// Compiles the `.gd` file at `path` (a policy's `use`d files are read from beside it). The
/// error is the message to print as is: an unreadable file, or every diagnostic of the file
/// with its caret and hint, under the file's name.
pub fn load_optimizer(path: &Path) -> Result<Program, String> {
    Program::compile_file(path).map_err(|e| format!("error: {}: {e}", path.display()))
}

/// A progress bar on stderr: the step, the loss, steps per second and the time left. Hidden
/// when stderr is not a terminal (CI, pipes), so logs stay clean.
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    pub fn new(total_steps: u64, label: &str) -> Progress {
        let bar = ProgressBar::new(total_steps);
        let style = ProgressStyle::with_template("{prefix:>14} [{bar:30}] {pos}/{len} {msg} {per_sec} eta {eta}")
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_prefix(label.to_string());
        Progress { bar }
    }

    /// Marks `step` (1-based) done, showing `loss`.
    pub fn step(&self, step: u64, loss: f64) {
        self.bar.set_position(step);
        self.bar.set_message(format!("loss {loss:.4}"));
    }

    /// Prints a line above the bar (or plainly, when the bar is hidden).
    pub fn println(&self, line: impl AsRef<str>) {
        if self.bar.is_hidden() {
            eprintln!("{}", line.as_ref());
        } else {
            self.bar.println(line);
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// One line of a plot: `(x, y)` points, in order.
#[derive(Clone, Debug, Default)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

/// A line plot: axes, scales and series. Non-finite and (on a log axis) non-positive points
/// are left out.
#[derive(Clone, Debug, Default)]
pub struct Plot {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub log_x: bool,
    pub log_y: bool,
    pub series: Vec<Series>,
}

/// Writes `plot` as a 900×560 PNG at `path`. Needs a sans-serif font through fontconfig
/// (Debian's fonts-dejavu-core, which scripts/setup installs).
pub fn plot_lines(path: &Path, plot: &Plot) -> Result<(), String> {
    draw(path, plot).map_err(|e| format!("cannot draw {}: {e}", path.display()))
}

fn draw(path: &Path, plot: &Plot) -> Result<(), Box<dyn std::error::Error>> {
    let keep =
        |&(x, y): &(f64, f64)| x.is_finite() && y.is_finite() && (!plot.log_x || x > 0.0) && (!plot.log_y || y > 0.0);
    let points: Vec<Vec<(f64, f64)>> =
        plot.series.iter().map(|s| s.points.iter().copied().filter(keep).collect()).collect();
    let all: Vec<(f64, f64)> = points.iter().flatten().copied().collect();
    if all.is_empty() {
        return Err("no finite points to plot".into());
    }
    let range = |v: Vec<f64>, log: bool| {
        let (lo, hi) = v.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
        match (log, hi > lo) {
            (true, true) => (lo / 1.2, hi * 1.2),
            (true, false) => (lo / 2.0, hi * 2.0),
            (false, true) => (lo - 0.03 * (hi - lo), hi + 0.03 * (hi - lo)),
            (false, false) => (lo - 1.0, hi + 1.0),
        }
    };
    let (x0, x1) = range(all.iter().map(|p| p.0).collect(), plot.log_x);
    let (y0, y1) = range(all.iter().map(|p| p.1).collect(), plot.log_y);
    let root = BitMapBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut builder = ChartBuilder::on(&root);
    builder.caption(&plot.title, ("sans-serif", 22)).margin(14).x_label_area_size(42).y_label_area_size(64);
    // The four scale combinations are four chart types in plotters.
    macro_rules! finish {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(&plot.x_label)
                .y_desc(&plot.y_label)
                .x_label_formatter(&|v| tick(*v))
                .y_label_formatter(&|v| tick(*v))
                .draw()?;
            for (i, (s, pts)) in plot.series.iter().zip(&points).enumerate() {
                let color = Palette99::pick(i).to_rgba().stroke_width(2);
                chart.draw_series(LineSeries::new(pts.iter().copied(), color))?.label(&s.label).legend(
                    move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], Palette99::pick(i).stroke_width(2)),
                );
            }
            chart.configure_series_labels().background_style(WHITE.mix(0.85)).border_style(BLACK).draw()?;
        }};
    }
    match (plot.log_x, plot.log_y) {
        (false, false) => finish!(builder.build_cartesian_2d(x0..x1, y0..y1)?),
        (true, false) => finish!(builder.build_cartesian_2d((x0..x1).log_scale(), y0..y1)?),
        (false, true) => finish!(builder.build_cartesian_2d(x0..x1, (y0..y1).log_scale())?),
        (true, true) => finish!(builder.build_cartesian_2d((x0..x1).log_scale(), (y0..y1).log_scale())?),
    }
    root.present()?;
    Ok(())
}

/// A tick label with at most three significant digits: `0.25`, `1500`, `1e-5`, `3.2e-4`
/// (a log axis's ticks are computed as powers and come out as `9.999999999e-5` otherwise).
fn tick(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 || !a.is_finite() {
        return format!("{v}");
    }
    let trim = |s: String| {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    };
    if (1e-3..1e5).contains(&a) {
        let decimals = (2 - a.log10().floor() as i32).max(0) as usize;
        trim(format!("{v:.decimals$}"))
    } else {
        let s = format!("{v:.2e}");
        let (mantissa, exponent) = s.split_once('e').unwrap_or((&s, "0"));
        format!("{}e{exponent}", trim(mantissa.to_string()))
    }
}

/// Writes `value` as pretty JSON at `path`, creating its directory.
pub fn write_json(path: &Path, value: &serde_json::Value) -> Result<(), String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
    std::fs::write(path, text + "\n").map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The median, minimum and maximum of `xs` (NaN for an empty slice; NaNs sort last).
pub fn median_spread(xs: &[f64]) -> (f64, f64, f64) {
    if xs.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 { v[n / 2] } else { 0.5 * (v[n / 2 - 1] + v[n / 2]) };
    (median, v[0], v[n - 1])
}

/// A seeded generator (xorshift64* with a splitmix64 seed): uniforms, normals, signs,
/// indices. Deterministic across machines.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u = 1.0 - self.uniform();
        let v = self.uniform();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    /// +1 or -1 with equal probability.
    pub fn sign(&mut self) -> f64 {
        if self.next_u64() >> 63 == 0 {
            1.0
        } else {
            -1.0
        }
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() >> 11) % n as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_labels_are_short() {
        let cases =
            [(9.999999999e-5, "1e-4"), (3.2e-4, "3.2e-4"), (0.25, "0.25"), (1500.0, "1500"), (2.0, "2"), (1e6, "1e6")];
        for (v, want) in cases {
            assert_eq!(tick(v), want, "{v}");
        }
    }

    #[test]
    fn median_and_spread() {
        assert_eq!(median_spread(&[3.0, 1.0, 2.0]), (2.0, 1.0, 3.0));
        assert_eq!(median_spread(&[4.0, 1.0, 2.0, 3.0]), (2.5, 1.0, 4.0));
    }

    #[test]
    fn rng_is_deterministic_and_roughly_standard() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        assert_eq!(a.next_u64(), b.next_u64());
        let xs: Vec<f64> = (0..20000).map(|_| a.normal()).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(mean.abs() < 0.03 && (var - 1.0).abs() < 0.05, "mean {mean} var {var}");
    }

    #[test]
    fn a_bad_optimizer_file_is_rendered_with_its_name_and_a_caret() {
        let dir = std::env::temp_dir().join(format!("gdc-train-kit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("broken.gd");
        std::fs::write(&path, "optimizer broken {\n  update(p, g) {\n    p = p - lr * g\n  }\n}\n").unwrap();
        let err = load_optimizer(&path).err().expect("an undefined name is an error");
        assert!(err.contains("broken.gd") && err.contains('^') && err.contains("lr"), "{err}");
        let err = load_optimizer(&dir.join("missing.gd")).err().expect("a missing file is an error");
        assert!(err.contains("missing.gd"), "{err}");
    }

    #[test]
    fn plots_are_written_as_png() {
        let path = std::env::temp_dir().join(format!("gdc-train-kit-plot-{}.png", std::process::id()));
        let series = vec![Series { label: "a".into(), points: (1..50).map(|i| (i as f64, 1.0 / i as f64)).collect() }];
        let plot = Plot {
            title: "t".into(),
            x_label: "step".into(),
            y_label: "loss".into(),
            log_y: true,
            series,
            ..Plot::default()
        };
        plot_lines(&path, &plot).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        assert!(bytes.len() > 5000, "{} bytes", bytes.len());
    }
}
