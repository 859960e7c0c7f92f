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


# --- training toolkit: schedules, clipping, EMA, muP, policies -------------------------------
# Functions in META_REFS also take `meta`: name -> {"role": ..., "base_shape": ...} from the case.
# An output dict may carry "__state__": {"ema.w": array, ...}, checked against `expected_state`.

def optax_polynomial(init, end, power, transition_steps, transition_begin=0):
    """optax.polynomial_schedule (linear_schedule is power 1): a constant init_value when
    transition_steps <= 0."""
    if transition_steps <= 0:
        return lambda count: init
    def f(count):
        c = min(max(count - transition_begin, 0), transition_steps)
        frac = 1 - c / transition_steps
        return (init - end) * frac ** power + end
    return f


def optax_cosine_decay(init, decay_steps, alpha=0.0, exponent=1.0):
    """optax.cosine_decay_schedule; it refuses decay_steps <= 0."""
    if not decay_steps > 0:
        raise ValueError("cosine_decay_schedule requires positive decay_steps")
    def f(count):
        c = min(count, decay_steps)
        cd = 0.5 * (1 + math.cos(math.pi * c / decay_steps))
        return init * ((1 - alpha) * cd ** exponent + alpha)
    return f


def optax_join(schedules, boundaries):
    """optax.join_schedules: later schedules see step - boundary."""
    def f(step):
        out = schedules[0](step)
        for b, s in zip(boundaries, schedules[1:]):
            out = out if step < b else s(step - b)
        return out
    return f


def optax_warmup_cosine(init, peak, warmup_steps, decay_steps, end, exponent=1.0):
    """optax.warmup_cosine_decay_schedule."""
    alpha = 0.0 if peak == 0.0 else end / peak
    return optax_join([optax_polynomial(init, peak, 1, warmup_steps),
                       optax_cosine_decay(peak, decay_steps - warmup_steps, alpha, exponent)], [warmup_steps])


def optax_wsd(lr, warmup, stable, decay):
    """join_schedules(linear 0 -> lr over warmup, constant lr, linear lr -> 0 over decay)."""
    return optax_join([optax_polynomial(0.0, lr, 1, warmup), lambda c: lr, optax_polynomial(lr, 0.0, 1, decay)],
                      [warmup, warmup + stable])


def sgd_wsd(h, params, grads):
    """optax.sgd(schedule, momentum): trace (buf = g + momentum * buf, from zeros), then
    scale_by_learning_rate, whose schedule is read at count = step - 1."""
    sched = optax_wsd(h["lr"], int(h["warmup_steps"]), int(h["stable_steps"]), int(h["decay_steps"]))
    p = {k: v.copy() for k, v in params.items()}
    buf = {k: np.zeros_like(v) for k, v in p.items()}
    out = []
    for t, g_all in enumerate(grads, 1):
        lr_t = sched(t - 1)
        for k in p:
            buf[k] = g_all[k] + h["momentum"] * buf[k]
            p[k] = p[k] - lr_t * buf[k]
        out.append({k: x.copy() for k, x in p.items()})
    return out


def adamw_clip_cosine(h, params, grads):
    """optax.chain(clip_by_global_norm(max_grad_norm), adamw(warmup_cosine_decay_schedule(0, lr,
    warmup_steps, decay_steps, end_lr), b1, b2, eps, weight_decay)): scale_by_adam (eps_root 0),
    add_decayed_weights, scale_by_learning_rate at count = step - 1."""
    sched = optax_warmup_cosine(0.0, h["lr"], int(h["warmup_steps"]), int(h["decay_steps"]), h["end_lr"])
    b1, b2, eps, wd, mx = h["beta1"], h["beta2"], h["eps"], h["weight_decay"], h["max_grad_norm"]
    p = {k: v.copy() for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(x) for k, x in p.items()}
    out = []
    for t, g_all in enumerate(grads, 1):
        gnorm = math.sqrt(sum(float(np.sum(g_all[k] * g_all[k])) for k in p))
        lr_t = sched(t - 1)
        for k in p:
            g = g_all[k] if gnorm < mx else (g_all[k] / gnorm) * mx
            m[k] = (1 - b1) * g + b1 * m[k]
            v[k] = (1 - b2) * g * g + b2 * v[k]
            mh = m[k] / (1 - b1 ** t)
            vh = v[k] / (1 - b2 ** t)
            u = mh / (np.sqrt(vh + 0.0) + eps) + wd * p[k]
            p[k] = p[k] - lr_t * u
        out.append({k: x.copy() for k, x in p.items()})
    return out


def adamw_ema(h, params, grads):
    """torch AdamW, then after each step ema = decay * ema + (1 - decay) * p (timm ModelEmaV2),
    ema starting at the initial parameters."""
    traj = adamw(h, params, grads)
    d = h["ema_decay"]
    ema = {k: v.copy() for k, v in params.items()}
    for o in traj:
        for k in ema:
            ema[k] = d * ema[k] + (1 - d) * o[k]
        o["__state__"] = {f"ema.{k}": x.copy() for k, x in ema.items()}
    return traj


def mup_groups(params, meta):
    """microsoft/mup MuAdam's param groups: ninf = dimensions differing from the base shape;
    ninf == 2 is matrix-like with width_mult = shape[1] / base_shape[1] (InfShape's main_idx
    is 1 with two infinite dimensions); ninf > 2 is refused; the rest keep lr and wd."""
    out = {}
    for k, x in params.items():
        base = (meta.get(k) or {}).get("base_shape")
        if base is None:
            out[k] = 1.0
            continue
        ninf = sum(1 for a, b in zip(x.shape, base) if a != b)
        if ninf > 2:
            raise NotImplementedError("more than 2 inf dimensions")
        out[k] = x.shape[1] / base[1] if ninf == 2 else 1.0
    return out


def adamw_mup(h, params, grads, meta=None):
    """mup.MuAdamW: matrix-like groups get lr / width_mult and weight_decay * width_mult,
    then torch AdamW per group."""
    wm = mup_groups(params, meta or {})
    traj = [dict() for _ in grads]
    for k in params:
        hk = dict(h, lr=h["lr"] / wm[k], weight_decay=h["weight_decay"] * wm[k])
        for o, ok in zip(traj, adamw(hk, {k: params[k]}, [{k: g[k]} for g in grads])):
            o[k] = ok[k]
    return traj


def muon_adamw(h, params, grads, meta=None):
    """Policy: torch.optim.Muon (Nesterov, 5 Newton-Schulz steps, eps 1e-7) on role-`hidden`
    parameters of exactly two dimensions; torch.optim.AdamW on every other parameter."""
    meta = meta or {}
    sub = lambda pre: {n.split(".", 1)[1]: v for n, v in h.items() if n.startswith(pre + ".")}
    hm = dict(sub("muon"), nesterov=1, ns_steps=5, eps=1e-7)
    ha = sub("adamw")
    to_muon = [k for k, x in params.items() if (meta.get(k) or {}).get("role") == "hidden" and x.ndim == 2]
    rest = [k for k in params if k not in to_muon]
    traj = [dict() for _ in grads]
    for ks, f, hh in ((to_muon, muon, hm), (rest, adamw, ha)):
        if not ks:
            continue
        for o, ok in zip(traj, f(hh, {k: params[k] for k in ks}, [{k: g[k] for k in ks} for g in grads])):
            o.update(ok)
    return traj


META_REFS = {"adamw_mup", "muon_adamw"}

REFS = {f.__name__: f for f in (sgd, adam, adamw, adagrad, rmsprop, adamax, nadam, radam, adafactor,
                                lion, lamb, schedule_free_adamw, muon, sgd_wsd, adamw_clip_cosine,
                                adamw_ema, adamw_mup, muon_adamw)}
