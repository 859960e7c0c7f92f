//! `difftest`: long runs of random-program differential testing (interpreter against the
//! CPU backend), with progress, a summary (programs, feature counts, failures, worst error
//! as a fraction of the tolerance, wall time), failures shrunk and saved as regression
//! files, and `--emit DIR` to write the generated programs (for the GPU check).
//!
//! `cargo run --release -p gdc-tests --bin difftest -- --programs 10000 --seed 1`
//! Options: `--programs N` (default 1000), `--seed S` (default 1), `--emit DIR` (write each
//! program as DIR/rNNNNN.gd), `--no-run` (with `--emit`: only write them), `--gpu` (programs
//! for `gdc verify --backend cuda`: no bf16 state, which the GPU refuses, and no vector update
//! alone, since verify steps matrices too), `--save DIR` (where shrunk failures go; default
//! tests/regressions-new), `--shrink-budget N` (trial runs per shrink, default 3000),
//! `--from I` (start at program I of the seed's sequence, to rerun one).

use clap::Parser;
use gdc_tests::random::{generate, program_seed, run_one, shrink_to_file, Stats};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Parser)]
#[command(about = "Random-program differential testing: the interpreter against the CPU backend")]
struct Args {
    /// How many programs to generate and check.
    #[arg(long, default_value_t = 1000)]
    programs: u64,
    /// The run's seed: the same seed gives the same programs on every machine.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Start at program I of the seed's sequence (to rerun one).
    #[arg(long, default_value_t = 0, value_name = "I")]
    from: u64,
    /// Write each program as DIR/rNNNNN.gd (for the GPU check).
    #[arg(long, value_name = "DIR")]
    emit: Option<PathBuf>,
    /// With --emit: only write the programs, do not run them.
    #[arg(long, requires = "emit")]
    no_run: bool,
    /// Programs for `gdc verify --backend cuda`: no bf16 state (the GPU refuses it), and no
    /// vector update alone (verify steps matrices too).
    #[arg(long)]
    gpu: bool,
    /// Where shrunk failures go (default: tests/regressions-new).
    #[arg(long, value_name = "DIR")]
    save: Option<PathBuf>,
    /// Trial runs per shrink.
    #[arg(long, default_value_t = 3000, value_name = "N")]
    shrink_budget: usize,
}

fn main() {
    let args = Args::parse();
    let (programs, from, seed, emit, run) = (args.programs, args.from, args.seed, args.emit, !args.no_run);
    let options = generate::Options { gpu: args.gpu };
    let save = args.save.unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("regressions-new"));
    let budget = args.shrink_budget;
    if let Some(dir) = &emit {
        std::fs::create_dir_all(dir).expect("the --emit folder can be made");
    }
    let started = Instant::now();
    let mut stats = Stats::default();
    for i in from..from + programs {
        let ps = program_seed(seed, i);
        if !run {
            let prog = generate::generate(ps, options);
            if let Some(dir) = &emit {
                let text = format!("// difftest --seed {seed}: program {i} (program seed {ps})\n{}", prog.render());
                std::fs::write(dir.join(format!("r{i:05}.gd")), text).expect("the program is written");
            }
            continue;
        }
        let o = run_one(ps, options);
        if let Some(dir) = &emit {
            let text = format!("// difftest --seed {seed}: program {i} (program seed {ps})\n{}", o.case.source);
            std::fs::write(dir.join(format!("r{i:05}.gd")), text).expect("the program is written");
        }
        stats.add(ps, &o);
        if let Ok(p) = &o.result {
            // Close calls are worth a look: conditioning the generator should have avoided.
            if p.worst > 0.5 {
                println!("program {i} (seed {ps}) agrees at {:.4} of the tolerance", p.worst);
            }
        }
        if let Err(f) = &o.result {
            println!("program {i} (seed {ps}) FAILED: {}", f.describe());
            let (text, small) = shrink_to_file(ps, &o, f, budget);
            std::fs::create_dir_all(&save).expect("the --save folder can be made");
            let path = save.join(format!("seed-{ps}.gd"));
            std::fs::write(&path, &text).expect("the regression is written");
            println!("  shrunk ({}) to {}:\n{text}", small.signature(), path.display());
        }
        if (i + 1) % 100 == 0 {
            println!(
                "{} programs, {} failed, worst {:.4} of the tolerance, {:.0} s",
                i + 1,
                stats.failures.len(),
                stats.worst,
                started.elapsed().as_secs_f64()
            );
        }
    }
    if run {
        print!("{}", stats.summary());
    }
    println!("seed {seed}, {programs} programs, wall time {:.1} s", started.elapsed().as_secs_f64());
    if !stats.failures.is_empty() {
        std::process::exit(1);
    }
}
