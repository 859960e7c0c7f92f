policy pp {
  _ -> sgd
}
use "s.gd" {
}
