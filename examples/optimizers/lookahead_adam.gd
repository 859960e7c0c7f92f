// Lookahead around Adam: Adam moves the fast weights (the parameter); every sync_period
// steps the slow weights move slow_step_size of the way towards them and the fast weights
// restart from there ("k steps forward, 1 step back").
// Paper: Zhang, Lucas, Hinton, Ba, "Lookahead Optimizer: k steps forward, 1 step back"
// (NeurIPS 2019).
// Matches: optax 0.2.8's lookahead(adam, sync_period, slow_step_size) with reset_state
// False (golden case lookahead_adam-optax): the parameter is optax's `params.fast`, the
// state `slow` its `params.slow` (starting synced), the sync on steps sync_period,
// 2 sync_period, ... Composed: the lookahead wrapper (../parts/wrappers.gd) around adam.gd,
// whose weight_decay (L2, default 0) optax's adam does not have.
use "adam.gd"
use "../parts/wrappers.gd"

optimizer lookahead_adam = lookahead(adam)
