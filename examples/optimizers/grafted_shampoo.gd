// Shampoo grafted onto Adam, as Distributed Shampoo runs it by default: the filtered gradient
// is preconditioned by Shampoo for the direction and by Adam's diagonal for the magnitude.
// Paper: Shi et al., "A Distributed Data-Parallel PyTorch Implementation of the Distributed
// Shampoo Optimizer for Training Neural Networks At-Scale" (2023).
// Matches: facebookresearch/optimizers' DistributedShampoo with betas (beta1, 1.0),
// AdamPreconditionerConfig grafting, epsilon added to the statistics' eigenvalues
// (PerturbationConfig(perturb_before_computation=False)), no dimension merging, bias
// correction (golden case grafted_shampoo-distributed).
// Composed from the transformations of ../parts/transforms.gd: each part's names under its own
// prefix (shampoo.eps, adam.beta2, state shampoo.L, adam.v, ...).
use "../parts/transforms.gd"

optimizer grafted_shampoo {
  hyper lr = 0.01
  hyper beta1 = 0.9

  state filtered = zeros   // the moving average of the gradient

  part shampoo = precondition_shampoo
  part adam = precondition_adam
  part graft

  update(p, g) {
    filtered = lerp(filtered, g, 1 - beta1)
    let g_bar = filtered / (1 - beta1 ^ step)
    p = p - lr * graft(adam(g, g_bar), shampoo(g, g_bar))
  }
}
