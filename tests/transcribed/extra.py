import sys; sys.path.insert(0, __import__('os').path.dirname(__import__('os').path.abspath(__file__)))
from run import make_case, replay
h=dict(lr=0.05, beta2_decay=-0.8, eps2=1e-3, d=1.0, weight_decay=0.0)
replay('adafactor','adafactor-rank3', make_case('adafactor', h, {"k": (2,3,4)}, 5, 50))
replay('adafactor','adafactor-rank2-edge', make_case('adafactor', h, {"r": (1,6), "c": (6,1), "s": (1,1)}, 10, 51))
replay('adafactor','adafactor-zero-p', make_case('adafactor', dict(h, weight_decay=0.1), {"w": (3,4), "b": (4,)}, 10, 52))
