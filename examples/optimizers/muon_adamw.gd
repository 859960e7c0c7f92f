// A policy: Muon for the hidden weight matrices, AdamW for everything else (embeddings, the
// output head, biases, norms), as in the NanoGPT speedrun. One `step` updates every
// parameter; each optimizer's hyperparameters are named `muon.lr`, `adamw.lr`, ...
// Routes are tried in order: the first whose role (`_`: any) and shape fit a parameter
// picks its optimizer. The training code gives roles (ParamSpec::with_role).
// Matches: torch.optim.Muon on role `hidden` matrices and torch.optim.AdamW on the rest
// (golden case muon_adamw-default).
use "muon.gd"
use "adamw.gd"

policy muon_adamw {
  hidden [rows, cols] -> muon
  _ -> adamw
}
