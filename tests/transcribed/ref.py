"""Float64 transcriptions of the reference implementations' single-tensor paths.

Each function takes (hyper, params: dict name -> np.array, grads_per_step: list of dict) and
returns the list of parameter dicts after every step. State is per parameter; step counts
are shared (every parameter steps every time).
"""
import math
import numpy as np

F32_EPS = float(np.finfo(np.float32).eps)


def sgd(h, params, grads):
    p = {k: v.copy() for k, v in params.items()}
    buf = {k: None for k in p}
    out = []
    for g_all in grads:
        for k in p:
            grad = g_all[k].copy()
            if h["weight_decay"] != 0:
                grad = grad + h["weight_decay"] * p[k]
            if h["momentum"] != 0:
                if buf[k] is None:
                    buf[k] = grad.copy()
                else:
                    buf[k] = buf[k] * h["momentum"] + (1 - h["dampening"]) * grad
                if h["nesterov"]:
                    grad = grad + h["momentum"] * buf[k]
                else:
                    grad = buf[k]
            p[k] = p[k] - h["lr"] * grad
        out.append({k: v.copy() for k, v in p.items()})
    return out


def adam_like(h, params, grads, decoupled):
    p = {k: v.copy() for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(x) for k, x in p.items()}
    b1, b2, lr, eps, wd = h["beta1"], h["beta2"], h["lr"], h["eps"], h["weight_decay"]
    out = []
    for t, g_all in enumerate(grads, 1):
        for k in p:
            grad = g_all[k]
            if wd != 0:
                if decoupled:
                    p[k] = p[k] * (1 - lr * wd)
                else:
                    grad = grad + wd * p[k]
            m[k] = m[k] + (1 - b1) * (grad - m[k])
            v[k] = v[k] * b2 + (1 - b2) * grad * grad
            bc1 = 1 - b1 ** t
            bc2 = 1 - b2 ** t
            denom = np.sqrt(v[k]) / math.sqrt(bc2) + eps
            p[k] = p[k] - (lr / bc1) * m[k] / denom
        out.append({k: x.copy() for k, x in p.items()})
    return out


def adam(h, params, grads):
    return adam_like(h, params, grads, False)


def adamw(h, params, grads):
    return adam_like(h, params, grads, True)


def adagrad(h, params, grads):
    p = {k: v.copy() for k, v in params.items()}
    s = {k: np.full_like(v, h["initial_accumulator_value"]) for k, v in p.items()}
    out = []
    for t, g_all in enumerate(grads, 1):
        for k in p:
            grad = g_all[k]
            if h["weight_decay"] != 0:
                grad = grad + h["weight_decay"] * p[k]
            clr = h["lr"] / (1 + (t - 1) * h["lr_decay"])
            s[k] = s[k] + grad * grad
            std = np.sqrt(s[k]) + h["eps"]
            p[k] = p[k] - clr * grad / std
        out.append({k: x.copy() for k, x in p.items()})
    return out


def rmsprop(h, params, grads):
    p = {k: v.copy() for k, v in params.items()}
    sq = {k: np.zeros_like(v) for k, v in p.items()}
    ga = {k: np.zeros_like(v) for k, v in p.items()}
    buf = {k: np.zeros_like(v) for k, v in p.items()}
    a = h["alpha"]
    out = []
    for g_all in grads:
        for k in p:
            grad = g_all[k]
            if h["weight_decay"] != 0:
                grad = grad + h["weight_decay"] * p[k]
            sq[k] = sq[k] * a + (1 - a) * grad * grad
            if h["centered"]:
                ga[k] = ga[k] + (1 - a) * (grad - ga[k])
                avg = np.sqrt(sq[k] - ga[k] * ga[k])
            else:
                avg = np.sqrt(sq[k])
            avg = avg + h["eps"]
            if h["momentum"] > 0:
                buf[k] = buf[k] * h["momentum"] + grad / avg
                p[k] = p[k] - h["lr"] * buf[k]
            else:
                p[k] = p[k] - h["lr"] * grad / avg
        out.append({k: x.copy() for k, x in p.items()})
    return out


def adamax(h, params, grads):
    p = {k: v.copy() for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    u = {k: np.zeros_like(v) for k, v in p.items()}
    out = []
    for t, g_all in enumerate(grads, 1):
        for k in p:
            grad = g_all[k]
            if h["weight_decay"] != 0:
                grad = grad + h["weight_decay"] * p[k]
            m[k] = m[k] + (1 - h["beta1"]) * (grad - m[k])
            u[k] = np.maximum(u[k] * h["beta2"], np.abs(grad) + h["eps"])
            clr = h["lr"] / (1 - h["beta1"] ** t)
            p[k] = p[k] - clr * m[k] / u[k]
        out.append({k: x.copy() for k, x in p.items()})
    return out


def nadam(h, params, grads):
    p = {k: v.copy() for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(x) for k, x in p.items()}
    mp = {k: 1.0 for k in p}
    b1, b2, lr, eps, wd, md = (h[n] for n in ("beta1", "beta2", "lr", "eps", "weight_decay", "momentum_decay"))
    out = []
    for t, g_all in enumerate(grads, 1):
        for k in p:
            grad = g_all[k]
            bc2 = 1 - b2 ** t
            if wd != 0:
                grad = grad + wd * p[k]
            mu = b1 * (1.0 - 0.5 * 0.96 ** (t * md))
            mu_next = b1 * (1.0 - 0.5 * 0.96 ** ((t + 1) * md))
            mp[k] *= mu
            m[k] = m[k] + (1 - b1) * (grad - m[k])
            v[k] = v[k] * b2 + (1 - b2) * grad * grad
            denom = np.sqrt(v[k] / bc2) + eps
            mpn = mp[k] * mu_next
            p[k] = p[k] + (-lr * (1.0 - mu) / (1.0 - mp[k])) * grad / denom
            p[k] = p[k] + (-lr * mu_next / (1.0 - mpn)) * m[k] / denom
        out.append({k: x.copy() for k, x in p.items()})
    return out


def radam(h, params, grads):
    p = {k: v.copy() for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(x) for k, x in p.items()}
    b1, b2, lr, eps, wd = h["beta1"], h["beta2"], h["lr"], h["eps"], h["weight_decay"]
    out = []
    for t, g_all in enumerate(grads, 1):
        for k in p:
            grad = g_all[k]
            if wd != 0:
                grad = grad + wd * p[k]
            m[k] = m[k] + (1 - b1) * (grad - m[k])
            v[k] = v[k] * b2 + (1 - b2) * grad * grad
            bc1 = 1 - b1 ** t
            bc2 = 1 - b2 ** t
            mhat = m[k] / bc1
            rho_inf = 2 / (1 - b2) - 1
            rho_t = rho_inf - 2 * t * (b2 ** t) / bc2
            if rho_t > 5.0:
                rect = ((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5
                alr = (bc2 ** 0.5) / (np.sqrt(v[k]) + eps)
                p[k] = p[k] - mhat * lr * alr * rect
            else:
                p[k] = p[k] - mhat * lr
        out.append({k: x.copy() for k, x in p.items()})
    return out


def adafactor(h, params, grads):
    """torch.optim.Adafactor, _single_tensor_adafactor, eps1 = float32 eps."""
    p = {k: v.copy() for k, v in params.items()}
    st = {}
    for k, x in p.items():
        if x.ndim > 1:
            rs = list(x.shape); rs[-1] = 1
            cs = list(x.shape); cs[-2] = 1
            st[k] = (np.zeros(rs), np.zeros(cs), None)
        else:
            st[k] = (None, None, np.zeros_like(x))
    lr, d, wd, eps2, bd = h["lr"], h["d"], h["weight_decay"], h["eps2"], h["beta2_decay"]
    eps1 = F32_EPS
    out = []
    for t, g_all in enumerate(grads, 1):
        for k in p:
            grad = g_all[k]
            rv, cv, var = st[k]
            omb = float(t) ** bd
            rho = min(lr, 1 / (t ** 0.5))
            alpha = max(eps2, np.linalg.norm(p[k].ravel()) / (p[k].size ** 0.5)) * rho
            if wd != 0:
                p[k] = p[k] * (1 - lr * wd)
            if grad.ndim > 1:
                row_mean = np.square(np.linalg.norm(grad, axis=-1, keepdims=True)) / grad.shape[-1]
                rv = rv + omb * (row_mean - rv)
                col_mean = np.square(np.linalg.norm(grad, axis=-2, keepdims=True)) / grad.shape[-2]
                cv = cv + omb * (col_mean - cv)
                ve = rv @ cv
                ve = ve / np.maximum(rv.mean(axis=-2, keepdims=True), eps1)
                st[k] = (rv, cv, None)
            else:
                var = var + omb * (grad * grad - var)
                ve = var.copy()
                st[k] = (None, None, var)
            upd = 1 / np.sqrt(np.maximum(ve, eps1 * eps1))
            upd = upd * grad
            denom = max(1.0, np.linalg.norm(upd.ravel()) / ((upd.size ** 0.5) * d))
            p[k] = p[k] - (alpha / denom) * upd
        out.append({k: x.copy() for k, x in p.items()})
    return out


def lion(h, params, grads):
    p = {k: v.copy() for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    out = []
    for g_all in grads:
        for k in p:
            g = g_all[k]
            u = np.sign((1.0 - h["beta1"]) * g + h["beta1"] * m[k])
            m[k] = (1 - h["beta2"]) * g + h["beta2"] * m[k]
            u = u + h["weight_decay"] * p[k]
            p[k] = p[k] - h["lr"] * u
        out.append({k: x.copy() for k, x in p.items()})
    return out


def lamb(h, params, grads):
    p = {k: v.copy() for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(x) for k, x in p.items()}
    b1, b2 = h["beta1"], h["beta2"]
    out = []
    for t, g_all in enumerate(grads, 1):
        for k in p:
            g = g_all[k]
            m[k] = (1 - b1) * g + b1 * m[k]
            v[k] = (1 - b2) * g * g + b2 * v[k]
            mh = m[k] / (1 - b1 ** t)
            vh = v[k] / (1 - b2 ** t)
            u = mh / (np.sqrt(vh + 0.0) + h["eps"])
            u = u + h["weight_decay"] * p[k]
            pn = np.linalg.norm(p[k].ravel())
            un = np.linalg.norm(u.ravel())
            tr = 1.0 if (pn == 0.0 or un == 0.0) else pn / un
            p[k] = p[k] - h["lr"] * (u * tr)
        out.append({k: x.copy() for k, x in p.items()})
    return out


def schedule_free_adamw(h, params, grads):
    p = {k: v.copy() for k, v in params.items()}
    z = {k: v.copy() for k, v in p.items()}
    v = {k: np.zeros_like(x) for k, x in p.items()}
    b1, b2 = h["beta1"], h["beta2"]
    ws, lr_max = 0.0, -1.0
    out = []
    for k_ in range(len(grads)):
        g_all = grads[k_]
        warm = h["warmup_steps"]
        sched = (k_ + 1) / warm if k_ < warm else 1.0
        bc2 = 1 - b2 ** (k_ + 1)
        lr = h["lr"] * sched
        lr_max = max(lr, lr_max)
        weight = ((k_ + 1) ** h["r"]) * (lr_max ** h["weight_lr_power"])
        ws = ws + weight
        try:
            ckp1 = weight / ws
        except ZeroDivisionError:
            ckp1 = 0
        for k in p:
            g = g_all[k]
            v[k] = v[k] * b2 + (1 - b2) * g * g
            denom = np.sqrt(v[k] / bc2) + h["eps"]
            gn = g / denom
            if h["weight_decay"] != 0:
                gn = gn + h["weight_decay"] * p[k]
            p[k] = p[k] + ckp1 * (z[k] - p[k])
            p[k] = p[k] + lr * (b1 * (1 - ckp1) - 1) * gn
            z[k] = z[k] - lr * gn
        out.append({k: x.copy() for k, x in p.items()})
    return out


def muon(h, params, grads):
    a, b, c = 3.4445, -4.7750, 2.0315
    p = {k: v.copy() for k, v in params.items()}
    buf = {k: np.zeros_like(v) for k, v in p.items()}
    out = []
    for g_all in grads:
        for k in p:
            g = g_all[k]
            buf[k] = buf[k] + (1 - h["momentum"]) * (g - buf[k])
            upd = g + h["momentum"] * (buf[k] - g) if h["nesterov"] else buf[k]
            x = upd.copy()
            tr = g.shape[0] > g.shape[1]
            if tr:
                x = x.T
            x = x / max(np.linalg.norm(x), h["eps"])
            for _ in range(int(h["ns_steps"])):
                gram = x @ x.T
                gu = b * gram + c * (gram @ gram)
                x = a * x + gu @ x
            if tr:
                x = x.T
            A, B = p[k].shape[:2]
            alr = h["lr"] * math.sqrt(max(1, A / B))
            p[k] = p[k] * (1 - h["lr"] * h["weight_decay"])
            p[k] = p[k] - alr * x
        out.append({k: x.copy() for k, x in p.items()})
    return out


REFS = {f.__name__: f for f in (sgd, adam, adamw, adagrad, rmsprop, adamax, nadam, radam, adafactor,
                                lion, lamb, schedule_free_adamw, muon)}
