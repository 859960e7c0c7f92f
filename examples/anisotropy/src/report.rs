//! What an experiment leaves behind: the JSON log of every run, the Markdown tables and the
//! PNG plots (excess risk against step per κ, steps to target and subspace distance against κ).

use crate::experiment::{OptimizerOutcome, Settings};
use gdc_train_kit::{median_spread, plot_lines, write_json, Plot, Series};
use serde_json::json;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn settings_json(s: &Settings) -> serde_json::Value {
    json!({
        "dx": s.dims.dx, "k": s.dims.k, "dy": s.dims.dy, "noise": s.dims.noise,
        "kappas": s.kappas, "steps": s.steps, "batch": s.batch, "target_rel": s.target_rel, "distance_target": s.distance_target,
        "tune_seeds": s.tune_seeds, "seeds": s.seeds, "log_every": s.log_every, "jobs": s.jobs,
    })
}

/// Writes every run (sweep and evaluation) with its settings to `path`.
pub fn write_log(
    path: &Path,
    settings: &Settings,
    outcomes: &[OptimizerOutcome],
    extra: serde_json::Value,
) -> Result<(), String> {
    let mut runs = Vec::new();
    let mut summary = Vec::new();
    for o in outcomes {
        for k in &o.kappas {
            for p in &k.sweep {
                for (seed, r) in &p.runs {
                    let cfg = config_of(settings, o, k.kappa, p.lr, *seed);
                    let mut v = r.to_json(&cfg, &o.name);
                    v["phase"] = json!("tune");
                    runs.push(v);
                }
            }
            for (seed, r) in &k.runs {
                let cfg = config_of(settings, o, k.kappa, k.chosen_lr, *seed);
                let mut v = r.to_json(&cfg, &o.name);
                v["phase"] = json!("eval");
                runs.push(v);
            }
            let ((med, lo, hi), reached) = k.steps(settings.steps);
            let (dmed, dlo, dhi) = k.distance();
            let ((smed, slo, shi), sreached) = k.steps_to_distance(settings.steps);
            summary.push(json!({
                "steps_to_distance": {"median": smed, "min": slo, "max": shi, "reached": sreached, "runs": k.runs.len()},
                "optimizer": o.name, "kappa": k.kappa, "chosen_lr": k.chosen_lr,
                "steps_to_target": {"median": med, "min": lo, "max": hi, "reached": reached, "runs": k.runs.len()},
                "final_distance": {"median": dmed, "min": dlo, "max": dhi},
                "sweep": k.sweep.iter().map(|p| json!({"lr": p.lr, "median_steps": p.median_steps,
                    "median_final_risk_rel": if p.median_final_risk.is_finite() { json!(p.median_final_risk) } else { json!(null) }})).collect::<Vec<_>>(),
            }));
        }
    }
    let optimizers: Vec<_> = outcomes
        .iter()
        .map(|o| json!({"name": o.name, "path": o.path.display().to_string(), "hypers": o.hypers.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(), "lr_grid": o.grid, "wall_s": o.wall_s}))
        .collect();
    write_json(
        path,
        &json!({"settings": settings_json(settings), "meta": extra, "optimizers": optimizers, "summary": summary, "runs": runs}),
    )
}

fn config_of(s: &Settings, o: &OptimizerOutcome, kappa: f64, lr: f64, seed: u64) -> crate::train::RunConfig {
    crate::train::RunConfig {
        dims: s.dims,
        kappa,
        lr,
        hypers: o.hypers.clone(),
        seed,
        steps: s.steps,
        batch: s.batch,
        target_rel: s.target_rel,
        distance_target: s.distance_target,
        log_every: s.log_every,
    }
}

/// `x` as steps to target: "≥ budget" when it is the budget.
fn steps_cell(x: f64, budget: usize) -> String {
    if x >= budget as f64 {
        format!("≥{budget}")
    } else {
        format!("{x:.0}")
    }
}

/// The Markdown tables: the summary (median [min–max] over the evaluation seeds) and each
/// optimizer's lr sweep (median steps to target on the tuning seeds; the chosen lr in bold).
pub fn markdown(settings: &Settings, outcomes: &[OptimizerOutcome]) -> String {
    let b = settings.steps;
    let mut s = String::new();
    let _ = writeln!(s, "| optimizer | κ | lr | steps to risk target, median [min–max] | reached | steps to distance ≤ {}, median [min–max] | reached | final subspace distance, median [min–max] | final risk / initial, median |", settings.distance_target);
    let _ = writeln!(s, "|---|---:|---:|---|---:|---|---:|---|---:|");
    for o in outcomes {
        for k in &o.kappas {
            let ((med, lo, hi), reached) = k.steps(b);
            let (dmed, dlo, dhi) = k.distance();
            let ((smed, slo, shi), sreached) = k.steps_to_distance(b);
            let _ = writeln!(
                s,
                "| {} | {} | {:.3e} | {} [{}–{}] | {}/{} | {} [{}–{}] | {}/{} | {:.2e} [{:.2e}–{:.2e}] | {:.2e} |",
                o.name,
                k.kappa,
                k.chosen_lr,
                steps_cell(med, b),
                steps_cell(lo, b),
                steps_cell(hi, b),
                reached,
                k.runs.len(),
                steps_cell(smed, b),
                steps_cell(slo, b),
                steps_cell(shi, b),
                sreached,
                k.runs.len(),
                dmed,
                dlo,
                dhi,
                k.final_risk_rel().0
            );
        }
    }
    let _ = writeln!(s);
    let _ =
        writeln!(s, "Steps to target (median over seeds; ≥{b}: the median run missed the target within the budget):");
    let _ = writeln!(s);
    let head: Vec<String> = settings.kappas.iter().map(|k| format!("κ={k}")).collect();
    let _ = writeln!(s, "| optimizer | {} |", head.join(" | "));
    let _ = writeln!(s, "|---|{}", "---:|".repeat(head.len()));
    for o in outcomes {
        let cells: Vec<String> = o.kappas.iter().map(|k| steps_cell(k.steps(b).0 .0, b)).collect();
        let _ = writeln!(s, "| {} | {} |", o.name, cells.join(" | "));
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "Steps to subspace distance ≤ {} (median over seeds):", settings.distance_target);
    let _ = writeln!(s);
    let _ = writeln!(s, "| optimizer | {} |", head.join(" | "));
    let _ = writeln!(s, "|---|{}", "---:|".repeat(head.len()));
    for o in outcomes {
        let cells: Vec<String> = o.kappas.iter().map(|k| steps_cell(k.steps_to_distance(b).0 .0, b)).collect();
        let _ = writeln!(s, "| {} | {} |", o.name, cells.join(" | "));
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "Final subspace distance (median over seeds):");
    let _ = writeln!(s);
    let _ = writeln!(s, "| optimizer | {} |", head.join(" | "));
    let _ = writeln!(s, "|---|{}", "---:|".repeat(head.len()));
    for o in outcomes {
        let cells: Vec<String> = o.kappas.iter().map(|k| format!("{:.2e}", k.distance().0)).collect();
        let _ = writeln!(s, "| {} | {} |", o.name, cells.join(" | "));
    }
    s
}

/// Each optimizer's lr sweep as a Markdown table: median steps to target on the tuning seeds
/// per κ and lr ("div": the median run diverged), the chosen lr in bold.
pub fn sweep_markdown(settings: &Settings, outcomes: &[OptimizerOutcome]) -> String {
    let b = settings.steps;
    let mut s = String::new();
    for o in outcomes {
        let _ = writeln!(s, "**{}** (hyperparameters besides lr: {})", o.name, hypers_text(&o.hypers));
        let _ = writeln!(s);
        let head: Vec<String> = o.grid.iter().map(|lr| format!("{lr:.1e}")).collect();
        let _ = writeln!(s, "| κ \\ lr | {} |", head.join(" | "));
        let _ = writeln!(s, "|---|{}", "---:|".repeat(head.len()));
        for k in &o.kappas {
            let cells: Vec<String> = k
                .sweep
                .iter()
                .map(|p| {
                    let cell = if p.median_final_risk.is_infinite() || p.median_final_risk.is_nan() {
                        "div".to_string()
                    } else if p.median_steps >= b as f64 {
                        format!("≥{b} ({:.0e})", p.median_final_risk)
                    } else {
                        steps_cell(p.median_steps, b)
                    };
                    if p.lr == k.chosen_lr {
                        format!("**{cell}**")
                    } else {
                        cell
                    }
                })
                .collect();
            let _ = writeln!(s, "| {} | {} |", k.kappa, cells.join(" | "));
        }
        let _ = writeln!(s);
    }
    s
}

pub fn hypers_text(h: &[(String, f64)]) -> String {
    if h.is_empty() {
        "defaults".into()
    } else {
        h.iter().map(|(k, v)| format!("{k} = {v}")).collect::<Vec<_>>().join(", ")
    }
}

/// The median over evaluation seeds, at each logged step, of the excess risk / initial excess
/// risk (`distance` false) or of the subspace distance (`distance` true); a diverged run counts
/// as infinite risk or distance 1.
fn median_curve(k: &crate::experiment::KappaOutcome, distance: bool) -> Vec<(f64, f64)> {
    let longest = k.runs.iter().map(|(_, r)| r.curve.len()).max().unwrap_or(0);
    let mut out = Vec::new();
    for i in 0..longest {
        let mut step = None;
        let ys: Vec<f64> = k
            .runs
            .iter()
            .map(|(_, r)| {
                let point = if distance { r.distance_curve.get(i) } else { r.curve.get(i) };
                match point {
                    Some(&(s, y)) if !r.diverged => {
                        step = Some(s);
                        if distance {
                            y
                        } else {
                            y / r.initial_risk
                        }
                    }
                    _ if distance => 1.0,
                    _ => f64::INFINITY,
                }
            })
            .collect();
        if let Some(s) = step {
            out.push((s as f64, median_spread(&ys).0));
        }
    }
    out
}

/// Draws the plots into `dir` with file names starting `prefix`; returns their paths.
pub fn plots(
    dir: &Path,
    prefix: &str,
    settings: &Settings,
    outcomes: &[OptimizerOutcome],
) -> Result<Vec<PathBuf>, String> {
    let mut written = Vec::new();
    for (i, &kappa) in settings.kappas.iter().enumerate() {
        let mut series: Vec<Series> = outcomes
            .iter()
            .filter_map(|o| {
                o.kappas.get(i).map(|k| Series {
                    label: format!("{} (lr {:.1e})", o.name, k.chosen_lr),
                    points: median_curve(k, false),
                })
            })
            .collect();
        series.push(Series {
            label: format!("target ({:.0e})", settings.target_rel),
            points: vec![(0.0, settings.target_rel), (settings.steps as f64, settings.target_rel)],
        });
        let path = dir.join(format!("{prefix}-loss-kappa{kappa}.png"));
        plot_lines(
            &path,
            &Plot {
                title: format!("excess risk / initial, median of {} seeds, κ = {kappa}", settings.seeds.len()),
                x_label: "step".into(),
                y_label: "excess risk / initial".into(),
                log_y: true,
                series,
                ..Plot::default()
            },
        )?;
        written.push(path);
        let mut series: Vec<Series> = outcomes
            .iter()
            .filter_map(|o| {
                o.kappas.get(i).map(|k| Series {
                    label: format!("{} (lr {:.1e})", o.name, k.chosen_lr),
                    points: median_curve(k, true),
                })
            })
            .collect();
        series.push(Series {
            label: format!("target ({})", settings.distance_target),
            points: vec![(0.0, settings.distance_target), (settings.steps as f64, settings.distance_target)],
        });
        let path = dir.join(format!("{prefix}-distance-kappa{kappa}.png"));
        plot_lines(
            &path,
            &Plot {
                title: format!("subspace distance, median of {} seeds, κ = {kappa}", settings.seeds.len()),
                x_label: "step".into(),
                y_label: "‖(I − G*ᵀG*)Q‖₂".into(),
                log_y: true,
                series,
                ..Plot::default()
            },
        )?;
        written.push(path);
    }
    let per_kappa = |f: &dyn Fn(&crate::experiment::KappaOutcome) -> f64| -> Vec<Series> {
        outcomes
            .iter()
            .map(|o| Series { label: o.name.clone(), points: o.kappas.iter().map(|k| (k.kappa, f(k))).collect() })
            .collect()
    };
    let mut steps = per_kappa(&|k| k.steps(settings.steps).0 .0);
    steps.push(Series {
        label: format!("budget ({})", settings.steps),
        points: settings.kappas.iter().map(|&k| (k, settings.steps as f64)).collect(),
    });
    let path = dir.join(format!("{prefix}-steps.png"));
    plot_lines(
        &path,
        &Plot {
            title: format!("steps to excess risk ≤ {:.0e} × initial (median; budget = miss)", settings.target_rel),
            x_label: "κ (condition number of Σ)".into(),
            y_label: "steps to target".into(),
            log_x: true,
            log_y: true,
            series: steps,
        },
    )?;
    written.push(path);
    let mut steps = per_kappa(&|k| k.steps_to_distance(settings.steps).0 .0);
    steps.push(Series {
        label: format!("budget ({})", settings.steps),
        points: settings.kappas.iter().map(|&k| (k, settings.steps as f64)).collect(),
    });
    let path = dir.join(format!("{prefix}-steps-distance.png"));
    plot_lines(
        &path,
        &Plot {
            title: format!("steps to subspace distance ≤ {} (median; budget = miss)", settings.distance_target),
            x_label: "κ (condition number of Σ)".into(),
            y_label: "steps to distance target".into(),
            log_x: true,
            log_y: true,
            series: steps,
        },
    )?;
    written.push(path);
    let path = dir.join(format!("{prefix}-distance.png"));
    plot_lines(
        &path,
        &Plot {
            title: "final subspace distance ‖(I − G*ᵀG*)Q‖₂ (median)".into(),
            x_label: "κ (condition number of Σ)".into(),
            y_label: "subspace distance".into(),
            log_x: true,
            log_y: true,
            series: per_kappa(&|k| k.distance().0),
        },
    )?;
    written.push(path);
    Ok(written)
}
