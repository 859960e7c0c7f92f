import sys; sys.path.insert(0, __import__('os').path.dirname(__import__('os').path.abspath(__file__)))
from run import make_case, replay
from cases import MATS
for ns in (12, 30, 99):
    replay('muon', f'muon-nonest-ns{ns}', make_case('muon', dict(lr=0.02, weight_decay=0.05, momentum=0.9, nesterov=0, ns_steps=ns, eps=1e-7), MATS, 12, 60+ns))
