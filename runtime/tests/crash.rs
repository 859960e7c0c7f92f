//! Checkpoints survive a process killed at any moment: a child process (this test binary,
//! re-invoked to run only `child_saves_checkpoints_until_killed`) resumes from the
//! checkpoint, steps and saves in a loop, and is killed with SIGKILL after a random delay,
//! many times over. After every kill the checkpoint must load, and hold exactly the state of
//! one step that was saved: every element of every state is checked against the step count
//! it records, and the step count never goes back. Temporary files left by killed saves
//! must not pile up or stop later saves and loads.

use gdc_runtime::checkpoint;
use gdc_runtime::{Optimizer, Options, ParamSpec};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Set in the child's environment to the directory it saves into.
const CHILD_ENV: &str = "GDC_CRASH_TEST_CHILD_DIR";
const CHILD_TEST: &str = "child_saves_checkpoints_until_killed";

/// Elements per state: two states of 2^20 floats make an 8 MiB checkpoint, a save that
/// takes milliseconds (copy, serialise, hash, write, fsync).
const N: usize = 1 << 20;

const KILLS: usize = 60;

/// Every step adds the gradient to `m` and 1 to `c`, so after `s` steps `m[i] = s * g[i]`
/// and `c[i] = s`, exactly (integers below 2^24).
const COUNTER: &str = "
optimizer counter {
  hyper lr = 0.0
  state m = zeros
  state c = zeros
  update(p, g) {
    m = m + g
    c = c + 1
    p = p - lr * m
  }
}
";

fn grad(i: usize) -> f32 {
    (i % 251) as f32 + 1.0
}

fn optimizer() -> Optimizer {
    let options = Options { threads: Some(1), ..Options::default() };
    let program = gdc_runtime::Program::compile(COUNTER).expect("compiles");
    Optimizer::with_options(&program, &[ParamSpec::new("w", &[N])], options).expect("binds")
}

/// The child: resumes from the checkpoint in `$GDC_CRASH_TEST_CHILD_DIR` and saves every
/// step until it is killed. Without that variable (a plain `cargo test`) it returns at once.
#[test]
fn child_saves_checkpoints_until_killed() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else { return };
    let path = Path::new(&dir).join("opt.safetensors");
    let mut opt = optimizer();
    opt.load_checkpoint(&path).expect("resumes from the last checkpoint");
    let g: Vec<f32> = (0..N).map(grad).collect();
    let mut w = vec![0.0f32; N];
    loop {
        opt.step(&mut [&mut w], &[&g]).expect("steps");
        opt.save_checkpoint(&path).expect("saves");
    }
}

/// The checkpoint's step, after checking every element of its state against it.
fn check(path: &Path) -> u64 {
    let (meta, tensors) = checkpoint::load(path).unwrap_or_else(|e| panic!("the checkpoint must load: {e}"));
    let s = meta.step;
    let keys: Vec<String> = tensors.iter().map(|t| t.key()).collect();
    assert_eq!(keys, ["w/c", "w/m"], "step {s}");
    for t in &tensors {
        for (i, x) in t.data.iter().enumerate() {
            let want = if t.state == "m" { s as f32 * grad(i) } else { s as f32 };
            assert!(*x == want, "step {s}: {}[{i}] = {x}, a saved state has {want}", t.key());
        }
    }
    s
}

fn temps(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("lists")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".opt.safetensors.tmp."))
        .collect()
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[test]
fn a_save_killed_at_any_moment_leaves_a_checkpoint_of_a_saved_step() {
    let dir: PathBuf = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let path = dir.join("opt.safetensors");
    // Step 1, saved here, so that there is a checkpoint from the start.
    let mut opt = optimizer();
    let g: Vec<f32> = (0..N).map(grad).collect();
    let mut w = vec![0.0f32; N];
    opt.step(&mut [&mut w], &[&g]).expect("steps");
    opt.save_checkpoint(&path).expect("saves");
    let size = std::fs::metadata(&path).expect("saved").len();

    let exe = std::env::current_exe().expect("the test binary");
    let started = Instant::now();
    let mut seed = 0x5eed_u64;
    let (mut last, mut mid_write, mut advanced) = (check(&path), 0, 0);
    assert_eq!(last, 1);
    for kill in 0..KILLS {
        let mut child = Command::new(&exe)
            .args(["--exact", CHILD_TEST, "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starts the child");
        let delay = Duration::from_millis(10 + splitmix(&mut seed) % 150);
        std::thread::sleep(delay);
        child.kill().expect("SIGKILL");
        let status = child.wait().expect("reaped");
        // A child that stopped by itself failed (say, to resume): it must have been killed.
        assert_eq!(status.signal(), Some(9), "kill {kill}: the child exited on its own: {status}");

        let left = temps(&dir);
        assert!(left.len() <= 1, "kill {kill}: temporary files pile up: {left:?}");
        if left.iter().any(|t| t.contains(&format!(".tmp.{}.", child.id()))) {
            mid_write += 1;
        }
        let s = check(&path);
        assert!(s >= last, "kill {kill}: the checkpoint went back from step {last} to {s}");
        if s > last {
            advanced += 1;
        }
        last = s;
        // The optimizer loads it too, and continues from it.
        let mut resumed = optimizer();
        resumed.load_checkpoint(&path).expect("loads");
        assert_eq!(resumed.step_count(), s);
    }
    let elapsed = started.elapsed();
    eprintln!(
        "{KILLS} kills in {elapsed:.1?}: {mid_write} mid-write (a temporary file left), the checkpoint advanced \
         after {advanced}, last step {last}, checkpoint {size} bytes"
    );
    assert!(advanced >= KILLS / 10, "the children made too little progress to test anything: {advanced} of {KILLS}");
    assert!(mid_write > 0, "no kill landed while a temporary file was being written");

    // A save removes what a killed save left, and the result loads.
    opt.load_checkpoint(&path).expect("loads");
    opt.save_checkpoint(&path).expect("saves over the leftovers");
    assert!(temps(&dir).is_empty(), "{:?}", temps(&dir));
    assert_eq!(check(&path), last);
    std::fs::remove_dir_all(&dir).ok();
}
