// AdamW with an exponential moving average of the weights, for evaluation: `ema` is
// ordinary state, read with Optimizer::state("w", "ema") or swapped into the parameters
// with Optimizer::swap_state("ema", ...) (swap again to swap back).
// Matches: torch.optim.AdamW followed by timm's ModelEmaV2 rule, ema = decay * ema +
// (1 - decay) * p, starting at the initial parameters (golden case adamw_ema-default).
// Composed: the weight_ema wrapper around adamw.gd, one fused kernel as if written out.
use "adamw.gd"
use "../parts/wrappers.gd"

optimizer adamw_ema = weight_ema(adamw)
