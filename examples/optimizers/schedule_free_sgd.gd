// Schedule-free SGD: the schedule_free wrapper (../parts/wrappers.gd) around sgd.gd.
// Paper: Defazio et al., "The Road Less Scheduled" (NeurIPS 2024).
// Matches: schedulefree 1.4.1's ScheduleFreeWrapper(torch.optim.SGD(...), momentum,
// weight_decay_at_y, r, weight_lr_power) in train mode (golden case
// schedule_free_sgd-wrapper): the parameter is y; the wrapper's momentum is `beta`, as
// sgd.gd's own `momentum` is torch SGD's.
use "sgd.gd"
use "../parts/wrappers.gd"

optimizer schedule_free_sgd = schedule_free(sgd)
