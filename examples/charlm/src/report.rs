//! What a run or a comparison writes: the JSON log, loss curves as PNG (against steps and
//! against training seconds) and a Markdown table of the final losses and step times.

use crate::error::Result;
use crate::train::RunLog;
use gdc_train_kit::{median_spread, plot_lines, write_json, Plot, Series};
use std::fmt::Write as _;
use std::path::Path;

/// Writes `{label}.json`, `{label}-loss-step.png` and `{label}-loss-time.png` under `dir`.
pub fn write_run(dir: &Path, log: &RunLog) -> Result<()> {
    write_json(&dir.join(format!("{}.json", log.label)), &log.to_json())?;
    for (x_name, file) in [("step", "loss-step"), ("seconds", "loss-time")] {
        let pick = |train: bool| Series {
            label: if train { "train (mean since last eval)".into() } else { "validation".into() },
            points: log
                .evals
                .iter()
                .map(|p| (x_of(p.step, p.seconds, x_name), if train { p.train_loss } else { p.val_loss }))
                .collect(),
        };
        let plot = Plot {
            title: format!("charlm: {}", log.label),
            x_label: x_name.into(),
            y_label: "loss (nats/char)".into(),
            series: vec![pick(true), pick(false)],
            ..Plot::default()
        };
        plot_lines(&dir.join(format!("{}-{file}.png", log.label)), &plot)?;
    }
    Ok(())
}

fn x_of(step: usize, seconds: f64, x_name: &str) -> f64 {
    if x_name == "step" {
        step as f64
    } else {
        seconds
    }
}

/// Writes the comparison plots `{prefix}-{val,train}-{step,time}.png` under `dir`.
pub fn write_comparison_plots(dir: &Path, prefix: &str, logs: &[RunLog]) -> Result<()> {
    for (which, y_name) in [("val", "validation loss"), ("train", "training loss (mean since last eval)")] {
        for (x_name, suffix) in [("step", "step"), ("seconds", "time")] {
            let series = logs
                .iter()
                .map(|log| Series {
                    label: log.label.clone(),
                    points: log
                        .evals
                        .iter()
                        .filter(|p| p.step > 0)
                        .map(|p| {
                            (x_of(p.step, p.seconds, x_name), if which == "val" { p.val_loss } else { p.train_loss })
                        })
                        .collect(),
                })
                .collect();
            let plot = Plot {
                title: format!("charlm: {y_name} against {x_name}"),
                x_label: if x_name == "step" { "step".into() } else { "training seconds".into() },
                y_label: format!("{y_name} (nats/char)"),
                series,
                ..Plot::default()
            };
            plot_lines(&dir.join(format!("{prefix}-{which}-{suffix}.png")), &plot)?;
        }
    }
    Ok(())
}

/// The Markdown table of a comparison: per run, the learning rates, steps, final validation
/// loss, validation loss at the common time (the shortest run's training seconds), median step
/// time with its spread, and training seconds.
pub fn table(logs: &[RunLog]) -> String {
    let common = logs.iter().map(|l| l.seconds).fold(f64::INFINITY, f64::min);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| optimizer | learning rates | steps | final val loss | val loss at {common:.0} s | step ms, median (min–max) | train s |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|");
    for log in logs {
        let lrs: Vec<String> =
            log.hypers.iter().filter(|(n, _)| crate::schedule::is_lr(n)).map(|(n, v)| format!("{n}={v}")).collect();
        let (median, lo, hi) = median_spread(&log.step_ms);
        let fin = if log.diverged { "diverged".to_string() } else { format!("{:.4}", log.final_val()) };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {fin} | {:.4} | {median:.1} ({lo:.1}–{hi:.1}) | {:.1} |",
            log.label,
            lrs.join(", "),
            log.steps(),
            log.val_at_seconds(common),
            log.seconds
        );
    }
    s
}
