"""Non-default hyperparameter cases for every optimizer, over several shapes and 25 steps."""

SHAPES = {"w": (6, 4), "wide": (3, 8), "tall": (9, 2), "b": (5,), "s": (1,)}
MATS = {"w": (6, 4), "wide": (3, 8), "tall": (9, 2), "sq": (4, 4)}
STEPS = 25


def all_cases(make):
    C = []

    def add(opt, name, hyper, shapes=SHAPES, steps=STEPS, seed=0, **kw):
        C.append((opt, f"{opt}-{name}", make(opt, hyper, shapes, steps, seed, **kw)))

    add("sgd", "nesterov-wd", dict(lr=0.01, momentum=0.9, dampening=0.0, weight_decay=0.05, nesterov=1), seed=1)
    add("sgd", "damp-wd", dict(lr=0.01, momentum=0.7, dampening=0.3, weight_decay=0.02, nesterov=0), seed=2,
        zero_steps=(1, 2, 5))
    add("sgd", "plain-wd", dict(lr=0.03, momentum=0.0, dampening=0.0, weight_decay=0.1, nesterov=0), seed=3)

    add("adam", "wd", dict(lr=0.02, beta1=0.8, beta2=0.95, eps=1e-4, weight_decay=0.1), seed=4)
    add("adamw", "wd", dict(lr=0.02, beta1=0.85, beta2=0.9, eps=1e-3, weight_decay=0.3), seed=5)

    add("adagrad", "decay-wd", dict(lr=0.2, lr_decay=0.05, weight_decay=0.1, initial_accumulator_value=0.3,
                                    eps=1e-3), seed=6)
    add("adagrad", "zeroacc", dict(lr=0.1, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0,
                                   eps=1e-10), seed=7, zero_steps=(3,))

    add("rmsprop", "centered-mom-wd", dict(lr=0.003, alpha=0.8, eps=1e-4, weight_decay=0.05, momentum=0.6,
                                           centered=1), seed=8)
    add("rmsprop", "mom-wd", dict(lr=0.003, alpha=0.9, eps=1e-6, weight_decay=0.05, momentum=0.5, centered=0),
        seed=9)
    add("rmsprop", "centered-nomom", dict(lr=0.003, alpha=0.95, eps=1e-3, weight_decay=0.0, momentum=0.0,
                                          centered=1), seed=10)

    add("adamax", "wd", dict(lr=0.01, beta1=0.8, beta2=0.9, eps=1e-3, weight_decay=0.2), seed=11)

    add("nadam", "wd", dict(lr=0.01, beta1=0.85, beta2=0.95, eps=1e-4, weight_decay=0.1, momentum_decay=0.02),
        seed=12)

    add("radam", "wd", dict(lr=0.01, beta1=0.85, beta2=0.95, eps=1e-4, weight_decay=0.1), seed=13)
    add("radam", "wd-early", dict(lr=0.01, beta1=0.9, beta2=0.7, eps=1e-6, weight_decay=0.05), seed=14)

    add("adafactor", "wd-d", dict(lr=0.05, beta2_decay=-0.5, eps2=1e-2, d=1.5, weight_decay=0.2), seed=15)
    add("adafactor", "wd-d-clip", dict(lr=0.3, beta2_decay=-0.9, eps2=1e-3, d=1.0, weight_decay=0.05), seed=16)

    add("lion", "wd", dict(lr=0.003, beta1=0.8, beta2=0.95, weight_decay=0.5), seed=17)
    add("lamb", "wd", dict(lr=0.02, beta1=0.8, beta2=0.95, eps=1e-4, weight_decay=0.2), seed=18)
    add("lamb", "nowd", dict(lr=0.02, beta1=0.9, beta2=0.99, eps=1e-6, weight_decay=0.0), seed=19)

    add("schedule_free_adamw", "nowarm-r", dict(lr=0.01, warmup_steps=0, beta1=0.85, beta2=0.95, eps=1e-4,
                                                weight_decay=0.05, weight_lr_power=1.5, r=0.5), seed=20)
    add("schedule_free_adamw", "warm-r", dict(lr=0.02, warmup_steps=5, beta1=0.9, beta2=0.99, eps=1e-6,
                                              weight_decay=0.1, weight_lr_power=0.0, r=1.0), seed=21)

    for ns in (0, 1, 3, 7, 10):
        add("muon", f"nonest-ns{ns}", dict(lr=0.02, weight_decay=0.05, momentum=0.9, nesterov=0, ns_steps=ns,
                                           eps=1e-7), shapes=MATS, seed=22 + ns)
    add("muon", "nest-ns2", dict(lr=0.02, weight_decay=0.05, momentum=0.8, nesterov=1, ns_steps=2, eps=1e-7),
        shapes=MATS, seed=40)
    return C
