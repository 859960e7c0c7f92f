// A policy with gradient clipping in front: every parameter's gradient is first scaled by
// torch.nn.utils.clip_grad_norm_'s rule, with ONE norm over all parameters (those Muon steps
// and those AdamW steps together), then stepped by the optimizer its route picks: Muon for
// the hidden weight matrices, AdamW for everything else. The clip's hyperparameter is the
// policy's own, `max_norm`; the routed optimizers' are `muon.lr`, `adamw.lr`, ...
// Matches: torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm) before
// torch.optim.Muon's and torch.optim.AdamW's steps (golden case muon_adamw_clip-torch).
use "../parts/transforms.gd"
use "muon.gd"
use "adamw.gd"

policy muon_adamw_clip {
  part clip_grad_norm   // in front of every route: one norm over every parameter
  hidden [rows, cols] -> muon
  _ -> adamw
}
