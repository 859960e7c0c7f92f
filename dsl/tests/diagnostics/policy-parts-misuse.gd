// expect: E0029 E0002 E0025
// A policy's parts go in front of every routed optimizer: transformations only, and a routed
// optimizer's own global reduction is still refused beside another route. (The `use` bodies
// are what the loader inlines.)
policy clipped {
  part adam_like      // an optimizer, not a transformation
  part with_prepare   // has a `prepare`
  part nowhere        // no such optimizer
  part scale_twice
  hidden [rows, cols] -> sgd
  _ -> own_clip
}

use "parts.gd" {
optimizer scale_twice {
  update(p, u) {
    return 2 * u
  }
}

optimizer adam_like {
  hyper lr = 1e-3
  update(p, g) {
    p = p - lr * g
  }
}

optimizer with_prepare {
  hyper warmup: int = 10
  prepare {
    let w = min(1, step / warmup)
  }
  update(p, u) {
    return w * u
  }
}
}

use "sgd.gd" {
optimizer sgd {
  hyper lr = 0.1
  update(p, g) {
    p = p - lr * g
  }
}
}

use "own_clip.gd" {
optimizer own_clip {
  hyper lr = 0.1
  update(p, g) {
    p = p - lr * g / max(global_norm(g), 1)
  }
}
}
