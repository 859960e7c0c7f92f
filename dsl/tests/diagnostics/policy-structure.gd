// expect: E0026 E0002 E0018 E0020
use "muon.gd"

policy unloaded {
  hiden [rows, x] -> muon
}
