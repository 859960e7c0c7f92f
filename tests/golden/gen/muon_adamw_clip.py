"""Writes tests/golden/muon_adamw_clip-torch.json: PyTorch's own recipe for gradient clipping
in front of two optimizers, `torch.nn.utils.clip_grad_norm_(all parameters, max_norm)` then
`torch.optim.Muon` on the role-`hidden` matrices and `torch.optim.AdamW` on everything else,
in float32, 16 steps on the shapes and roles of muon_adamw-default (an embedding, two hidden
matrices, a bias, an output head). The gradients' joint norm ranges 0.7-444 against
max_norm = 5, so some steps are clipped and some are not, and the norm spans both
optimizers' parameters. Muon's Newton-Schulz iteration runs in float32 (torch's runs in
bfloat16; the .gd sets `muon.ns_precision` to 24 bits, as muon_adamw-default does).

Run: `python3 tests/golden/gen/muon_adamw_clip.py` (needs torch)."""
import inspect
import warnings

import numpy as np
import torch
import torch.optim._muon as muon_impl
from case import floats, write_case

warnings.simplefilter("ignore")

# torch's Newton-Schulz iteration with float32 in place of bfloat16, nothing else changed.
source = inspect.getsource(muon_impl._zeropower_via_newtonschulz).replace("torch.bfloat16", "torch.float32")
exec(compile(source, "muon_f32", "exec"), muon_impl.__dict__)

MAX_NORM = 5.0
HYPER = {
    "max_norm": MAX_NORM,
    "muon.ns_precision": 24,
    "muon.lr": 0.02,
    "muon.momentum": 0.95,
    "muon.weight_decay": 0.01,
    "adamw.lr": 0.003,
    "adamw.beta1": 0.9,
    "adamw.beta2": 0.95,
    "adamw.eps": 1e-8,
    "adamw.weight_decay": 0.01,
}
SHAPES = {"embed": [11, 6], "w1": [6, 9], "w2": [9, 6], "b": [6], "head": [4, 6]}
ROLES = {"embed": "embedding", "w1": "hidden", "w2": "hidden", "b": "bias", "head": "output"}
STEPS = 16

rng = np.random.default_rng(21)
init = {k: (0.5 * rng.standard_normal(s)).astype(np.float32) for k, s in SHAPES.items()}
params = {k: torch.nn.Parameter(torch.tensor(v)) for k, v in init.items()}
hidden = [p for k, p in params.items() if ROLES[k] == "hidden"]
rest = [p for k, p in params.items() if ROLES[k] != "hidden"]
muon = torch.optim.Muon(hidden, lr=HYPER["muon.lr"], weight_decay=HYPER["muon.weight_decay"],
                        momentum=HYPER["muon.momentum"], nesterov=True)
adamw = torch.optim.AdamW(rest, lr=HYPER["adamw.lr"], betas=(HYPER["adamw.beta1"], HYPER["adamw.beta2"]),
                          eps=HYPER["adamw.eps"], weight_decay=HYPER["adamw.weight_decay"], foreach=False)
steps = []
norms = []
for t in range(STEPS):
    scale = [1.0, 10.0, 0.05, 3.0, 30.0, 0.3][t % 6]
    grads = {k: (scale * rng.standard_normal(s)).astype(np.float32) for k, s in SHAPES.items()}
    for k, p in params.items():
        p.grad = torch.tensor(grads[k])
    norms.append(float(torch.nn.utils.clip_grad_norm_(list(params.values()), MAX_NORM)))
    muon.step()
    adamw.step()
    steps.append({
        "grads": {k: [float(x) for x in v.ravel()] for k, v in grads.items()},
        "expected": {k: floats(p.detach().numpy()) for k, p in params.items()},
    })
print("gradient norms:", " ".join(f"{n:.3g}" for n in norms))
write_case(
    "muon_adamw_clip-torch",
    "muon_adamw_clip",
    f"torch {torch.__version__}: clip_grad_norm_(every parameter, max_norm) then Muon (Newton-Schulz in float32, "
    "Nesterov) on role 'hidden' matrices and AdamW (foreach=False) on every other parameter",
    HYPER,
    SHAPES,
    init,
    steps,
    {"rel": 1e-4, "abs": 1e-5},
    roles=ROLES,
)
