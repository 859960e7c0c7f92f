import sys, numpy as np; sys.path.insert(0, __import__('os').path.dirname(__import__('os').path.abspath(__file__)))
import run
from run import replay
from ref import REFS
def case(opt, h, params, grads, name):
    out = REFS[opt](h, params, grads)
    c = {"format":"gdc-golden-1","optimizer":opt,"reference":"float64 transcription of the reference's single-tensor code (tests/transcribed/ref.py)","hyper":h,
         "params":[{"name":n,"shape":list(v.shape),"init":v.ravel().tolist()} for n,v in params.items()],
         "steps":[{"grads":{n:v.ravel().tolist() for n,v in g.items()},"expected":{n:v.ravel().tolist() for n,v in o.items()}} for g,o in zip(grads,out)],
         "tolerance":{"rel":2e-5,"abs":2e-6}}
    replay(opt, name, c)
rng=np.random.default_rng(5)
Z={"w":np.zeros((4,3)),"b":np.zeros(3)}
R=lambda: {"w":rng.standard_normal((4,3)).astype(np.float32).astype(float),"b":rng.standard_normal(3).astype(np.float32).astype(float)}
zg={"w":np.zeros((4,3)),"b":np.zeros(3)}
grads=[zg, R(), zg, R(), R()]
case('lamb', dict(lr=0.02,beta1=0.9,beta2=0.99,eps=1e-6,weight_decay=0.1), Z, grads, 'lamb-zero-p-zero-g')
case('lamb', dict(lr=0.02,beta1=0.9,beta2=0.99,eps=1e-6,weight_decay=0.0), R(), grads, 'lamb-zero-g')
case('muon', dict(lr=0.02,weight_decay=0.1,momentum=0.9,nesterov=0,ns_steps=4,eps=1e-7), {"w":np.zeros((4,3))}, [{"w":g["w"]} for g in grads], 'muon-zero')
case('adafactor', dict(lr=0.05,beta2_decay=-0.8,eps2=1e-3,d=1.2,weight_decay=0.1), Z, grads, 'adafactor-zero')
case('schedule_free_adamw', dict(lr=0.0,warmup_steps=0,beta1=0.9,beta2=0.99,eps=1e-8,weight_decay=0.1,weight_lr_power=2.0,r=0.0), R(), grads, 'sf-lr0')
case('schedule_free_adamw', dict(lr=0.01,warmup_steps=2,beta1=0.9,beta2=0.99,eps=1e-8,weight_decay=0.1,weight_lr_power=0.0,r=2.0), R(), grads, 'sf-pow0')
case('adagrad', dict(lr=0.1,lr_decay=0.1,weight_decay=0.0,initial_accumulator_value=0.0,eps=1e-10), R(), grads, 'adagrad-zero-g')
case('adamax', dict(lr=0.01,beta1=0.9,beta2=0.99,eps=1e-8,weight_decay=0.0), R(), grads, 'adamax-zero-g')
case('sgd', dict(lr=0.01,momentum=0.9,dampening=0.5,weight_decay=0.0,nesterov=0), R(), grads, 'sgd-zero-first')
case('rmsprop', dict(lr=0.01,alpha=0.9,eps=1e-8,weight_decay=0.0,momentum=0.5,centered=1), R(), grads, 'rmsprop-zero-g')
case('radam', dict(lr=0.01,beta1=0.9,beta2=0.999,eps=1e-8,weight_decay=0.1), R(), grads*4, 'radam-zero-g')
