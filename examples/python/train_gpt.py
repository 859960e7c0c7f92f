#!/usr/bin/env python3
"""Train the tiny GPT of tiny_gpt.py on the licence texts charlm trains on, with any `.gd`
optimizer through gdc.torch, and plot its loss.

    python3 examples/python/train_gpt.py examples/optimizers/adamw.gd --steps 300 \\
        --set lr=3e-3 --cosine --plot runs/gpt-loss.png
    python3 examples/python/train_gpt.py examples/optimizers/muon_adamw.gd --steps 300 \\
        --set muon.lr=0.02 --set adamw.lr=3e-3 --cosine --plot runs/gpt-muon.png

Parameters get their roles from gdc.torch.infer_roles (so a policy such as muon_adamw routes
the hidden matrices to Muon and the embeddings, head, norms and biases to AdamW). A program
with an `lr` hyperparameter is driven by torch's CosineAnnealingLR under --cosine; a policy,
whose learning rates are named `muon.lr`, `adamw.lr`, ..., has each of them set by hand from
the same cosine each step (torch's schedulers write only a group's `lr`).

A `.gd` file with errors, or a --set the program refuses, is reported on stderr (the
compiler's message, with its carets and hints) and the script exits with status 2. The
progress bar is tqdm's when tqdm is installed, a plain one otherwise; the plot needs
matplotlib, and without it the script says so and carries on.
"""

import argparse
import math
import os
import pathlib
import sys
import time

import torch

import gdc
import gdc.torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import tiny_gpt  # noqa: E402


# ----- command line -------------------------------------------------------------------


def parse_set(text):
    """`NAME=VALUE` -> (name, value): true/false as booleans, integers as ints, else a float."""
    name, sep, value = text.partition("=")
    name, value = name.strip(), value.strip()
    if not sep or not name or not value:
        raise argparse.ArgumentTypeError(f"`{text}`: expected NAME=VALUE, e.g. lr=3e-3 or muon.lr=0.02")
    low = value.lower()
    if low in ("true", "false"):
        return name, low == "true"
    try:
        return name, int(value)
    except ValueError:
        pass
    try:
        v = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"`{text}`: `{value}` is not a number (nor true/false)") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"`{text}`: `{value}` is not a finite number")
    return name, v


def positive(text):
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"`{text}` is not an integer") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n} is not positive")
    return n


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        description="Train a tiny character-level GPT with a gdc optimizer (any .gd file) and plot its loss.",
    )
    ap.add_argument("optimizer", help="the optimizer: a .gd file (compiled now) or a .gdo artifact")
    ap.add_argument("--steps", type=positive, default=300, help="training steps (default 300)")
    ap.add_argument(
        "--set",
        dest="sets",
        metavar="NAME=VALUE",
        type=parse_set,
        action="append",
        default=[],
        help="a hyperparameter by its .gd name (lr=3e-3, muon.lr=0.02, muon.nesterov=false); repeatable",
    )
    ap.add_argument(
        "--cosine",
        action="store_true",
        help="decay every learning rate (`lr` and each `<optimizer>.lr`) to 0 over --steps on a cosine",
    )
    ap.add_argument("--plot", metavar="PNG", help="write the loss curves here (needs matplotlib)")
    ap.add_argument("--text", default=tiny_gpt.DEFAULT_TEXT, help=f"a file or directory of text (default {tiny_gpt.DEFAULT_TEXT})")
    ap.add_argument("--batch", type=positive, default=16)
    ap.add_argument("--ctx", type=positive, default=32, help="context length in characters (default 32)")
    ap.add_argument("--d-model", type=positive, default=64)
    ap.add_argument("--heads", type=positive, default=4)
    ap.add_argument("--layers", type=positive, default=2)
    ap.add_argument("--seed", type=int, default=0, help="initialisation and batch seed (default 0)")
    ap.add_argument("--eval-every", type=int, default=50, metavar="N", help="validation loss every N steps (0: only at the end)")
    ap.add_argument("--eval-windows", type=positive, default=256, help="validation windows per evaluation (default 256)")
    ap.add_argument("--threads", type=positive, default=None, help="gdc's CPU worker threads (default: one per core)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    return ap.parse_args(argv)


# ----- progress -----------------------------------------------------------------------


class _PlainBar:
    """A small stand-in for tqdm: redrawn in place on a terminal, a line every tenth of the
    run otherwise."""

    def __init__(self, total, file=sys.stderr):
        self.total = total
        self.n = 0
        self.file = file
        self.tty = file.isatty()
        self.start = time.perf_counter()
        self.postfix = ""
        self._next_line = 0
        self._width = 0

    def set_postfix_str(self, s):
        self.postfix = s

    def update(self, k=1):
        self.n += k
        if self.tty:
            self._draw("\r")
        elif self.n >= self._next_line or self.n == self.total:
            self._draw("")
            self.file.write("\n")
            self._next_line = self.n + max(self.total // 10, 1)
        self.file.flush()

    def _draw(self, lead):
        width = 30
        done = int(width * self.n / self.total)
        rate = self.n / max(time.perf_counter() - self.start, 1e-9)
        line = f"[{'#' * done}{'.' * (width - done)}] {self.n}/{self.total} {rate:5.1f} it/s {self.postfix}"
        # Pad over what a longer previous line left on a terminal.
        self.file.write(lead + line.ljust(self._width))
        self._width = len(line)

    def close(self):
        if self.tty and self._width:
            self._width = 0
            self.file.write("\n")
            self.file.flush()


class _NoBar:
    def set_postfix_str(self, s):
        pass

    def update(self, k=1):
        pass

    def close(self):
        pass


def progress(total, enabled):
    if not enabled:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return _PlainBar(total)
    return tqdm(total=total, unit="step", dynamic_ncols=True)


# ----- learning rates -----------------------------------------------------------------


class Cosine:
    """Every learning rate of the program to 0 over `steps` on a cosine: its plain `lr` by
    torch's CosineAnnealingLR, each `<optimizer>.lr` of a policy by hand, from the same
    closed form (torch's schedulers write only a group's `lr`)."""

    def __init__(self, opt, steps):
        self.opt = opt
        self.steps = steps
        names = [h.name for h in opt.program.hypers]
        self.torch = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps) if "lr" in names else None
        self.by_hand = [n for n in names if n.endswith(".lr")]
        self.base = [{n: g[n] for n in self.by_hand} for g in opt.param_groups]
        self.t = 0

    def describes(self):
        parts = []
        if self.torch is not None:
            parts.append("lr by torch's CosineAnnealingLR")
        if self.by_hand:
            parts.append(", ".join(self.by_hand) + " by hand on the same cosine")
        return "; ".join(parts) or "none (the program has no learning rate named lr or *.lr)"

    def step(self):
        """After an optimizer step: the learning rates of the next."""
        self.t += 1
        if self.torch is not None:
            self.torch.step()
        scale = (1 + math.cos(math.pi * self.t / self.steps)) / 2
        for group, base in zip(self.opt.param_groups, self.base):
            for name, value in base.items():
                group[name] = value * scale


# ----- the run ------------------------------------------------------------------------


def fail(message):
    print(message.rstrip("\n"), file=sys.stderr)
    return 2


def main(argv=None):
    args = parse_args(argv)

    try:
        program = gdc.compile(args.optimizer)
    except (gdc.CompileError, gdc.ArtifactError) as e:
        return fail(str(e))

    try:
        corpus = tiny_gpt.Corpus.load(args.text)
        batches = tiny_gpt.BatchSampler(corpus.train, batch=args.batch, ctx=args.ctx, seed=args.seed)
    except (OSError, ValueError) as e:
        return fail(f"error: {e}")
    if args.d_model % args.heads:
        return fail(f"error: --d-model {args.d_model} is not a multiple of --heads {args.heads}")
    cfg = tiny_gpt.GPTConfig(
        vocab_size=corpus.vocab_size, ctx=args.ctx, d_model=args.d_model, heads=args.heads, layers=args.layers
    )
    model = tiny_gpt.TinyGPT(cfg, seed=args.seed)
    roles = gdc.torch.infer_roles(model)

    hypers = {}
    for name, value in args.sets:
        hypers[name] = value  # the last --set of a name wins
    try:
        opt = gdc.torch.Optimizer(program, model.named_parameters(), roles=roles, threads=args.threads, **hypers)
    except gdc.HyperparameterError as e:
        return fail(f"error: --set: {e}")
    except gdc.GdcError as e:
        return fail(f"error: {e}")
    schedule = Cosine(opt, args.steps) if args.cosine else None

    n_params = sum(p.numel() for p in model.parameters())
    counts = {}
    for role in roles.values():
        counts[role] = counts.get(role, 0) + 1
    print(f"optimizer  {program.name} ({args.optimizer})")
    print("hypers     " + ", ".join(f"{h.name}={opt.param_groups[0][h.name]:g}" for h in program.hypers))
    if schedule is not None:
        print(f"schedule   cosine to 0 over {args.steps} steps: {schedule.describes()}")
    print(
        f"model      {args.layers} layers, d_model {args.d_model}, {args.heads} heads, context {args.ctx}: "
        f"{n_params:,} parameters in {len(roles)} tensors ({', '.join(f'{n} {r}' for r, n in sorted(counts.items()))})"
    )
    print(f"data       {len(corpus.train):,} training and {len(corpus.val):,} validation characters, vocabulary {corpus.vocab_size}")
    sys.stdout.flush()

    losses, val = [], []  # val: (step, loss)
    bar = progress(args.steps, not args.no_progress)
    train_time = 0.0
    interrupted = False
    error = None
    try:
        for t in range(args.steps):
            start = time.perf_counter()
            x, y = batches.next()
            loss = model.loss(x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if schedule is not None:
                schedule.step()
            train_time += time.perf_counter() - start
            losses.append(loss.item())
            if not math.isfinite(losses[-1]):
                error = f"error: the loss is {losses[-1]} at step {t + 1}: the learning rate is probably too high"
                break
            if args.eval_every > 0 and (t + 1) % args.eval_every == 0 and t + 1 < args.steps:
                val.append((t + 1, model.evaluate(corpus.val, max_windows=args.eval_windows)))
            bar.set_postfix_str(f"loss {losses[-1]:.3f}" + (f" val {val[-1][1]:.3f}" if val else ""))
            bar.update()
    except KeyboardInterrupt:
        interrupted = True
    except gdc.GdcError as e:
        # Raised at the first step, where gdc binds the parameters: a program that cannot
        # update one of them (muon.gd alone meets the model's vectors), for instance.
        error = f"error: step {len(losses) + 1}: {e}"
    finally:
        bar.close()
    if error is not None:
        return fail(error)
    if not losses:
        return 130 if interrupted else 1
    val.append((len(losses), model.evaluate(corpus.val, max_windows=args.eval_windows)))

    tail = losses[-min(20, len(losses)):]
    print(
        f"{'interrupted after' if interrupted else 'trained'} {len(losses)} steps in {train_time:.2f} s "
        f"({len(losses) / train_time:.1f} steps/s): loss {losses[0]:.4f} -> {losses[-1]:.4f} "
        f"(mean of the last {len(tail)}: {sum(tail) / len(tail):.4f}), validation {val[-1][1]:.4f}"
    )
    prompt = torch.tensor([[corpus.vocab.index(c) for c in "The " if c in corpus.vocab] or [0]])
    sample = model.generate(prompt, 60, generator=torch.Generator().manual_seed(args.seed))
    print("sample     " + repr(corpus.decode(sample[0])))

    if args.plot:
        write_plot(args.plot, losses, val, f"{program.name} ({pathlib.Path(args.optimizer).name})", args)
    return 130 if interrupted else 0


def write_plot(path, losses, val, title, args):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(
            f"note: not writing the plot {path}: it needs matplotlib, which is not installed "
            "(pip install matplotlib); training is unaffected",
            file=sys.stderr,
        )
        return
    steps = range(1, len(losses) + 1)
    smooth, ema = [], None
    for v in losses:
        ema = v if ema is None else 0.9 * ema + 0.1 * v
        smooth.append(ema)
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    ax.plot(steps, losses, color="tab:blue", alpha=0.25, linewidth=0.8, label="training (per batch)")
    ax.plot(steps, smooth, color="tab:blue", linewidth=1.6, label="training (EMA 0.9)")
    ax.plot([s for s, _ in val], [v for _, v in val], "o-", color="tab:orange", markersize=4, label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats / character)")
    sets = " ".join(f"{n}={v}" for n, v in args.sets)
    ax.set_title(f"tiny GPT, {title}" + (f"\n{sets}" if sets else "") + (" + cosine" if args.cosine else ""), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    print(f"plot       {path}")


if __name__ == "__main__":
    sys.exit(main())
