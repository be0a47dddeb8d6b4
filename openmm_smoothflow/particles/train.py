"""Maximum-likelihood training of the equivariant flow on particle data, with checkpoints and resume.

Training, validation and test all use the model's own exact density (fixed-step RK4 map, exact
log-determinant; :mod:`.cnf`): the loss is the mean NLL of a minibatch, the test NLL the mean over
the 1,000 test configurations, in nats per configuration on the (M-1)d-dim subspace.

**Folds.** A fixed-step map can fold (det dPhi/dx < 0 somewhere): there it is not a bijection, and
log N(Phi(x)) + log |det| overcounts, so maximum likelihood can *gain* by folding (one LJ13 run
reported a test NLL of 28.7 with det < 0 on 46% of the test configurations). So the loss uses the
signed log-determinant, -[log N(z) + sign(det) log |det|]: at a folded configuration its gradient
shrinks |det| towards the fold instead of deepening it (past the fold, log |det| -> -inf is a barrier
from the positive side); model selection skips validation states with any fold, and a validation that
finds one ROLLS BACK: the weights return to the best fold-free state, Adam's moments are reset and the
learning rate is halved (``history[i]["rolled_back"]``); every evaluation reports the folded fraction,
and a test NLL with folds is flagged (``test["folded"]``).

A run is bounded by wall-clock ``minutes`` (CPU) and/or ``max_iterations``. ``<out>/last.pt`` is
written every ``checkpoint_seconds`` and holds everything to resume (weights, Adam state, RNG state,
iteration, elapsed seconds, best validation state); ``<out>/best.pt`` the weights of the best
validation NLL; ``<out>/result.json`` the final metrics. Rerunning the same command resumes.
Checkpoints are plain tensors/strings, loadable with ``torch.load(..., weights_only=True)``.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from ..io import atomic_write, load_torch, save_torch
from ..units import PathLike
from .cnf import EquivariantCNF, build_flow
from .data import load_dataset, training_subset

CHECKPOINT_FORMAT = "openmm_smoothflow/particle-flow-checkpoint-v1"


def save(path: PathLike, payload: Dict[str, Any]) -> None:
    save_torch(path, payload)


def load_checkpoint(path: PathLike) -> Dict[str, Any]:
    state = load_torch(path)
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a particle-flow checkpoint (format {state.get('format')!r})")
    return state


def load_flow(path: PathLike, which: str = "best_state") -> tuple:
    """(flow in float64, eval mode; checkpoint dict) from a best.pt / last.pt."""
    state = load_checkpoint(path)
    flow = build_flow(json.loads(state["config"])).double()
    flow.load_state_dict(state[which] if which in state else state["state"])
    return flow.eval(), state


def evaluate(flow: EquivariantCNF, x: torch.Tensor, batch_size: int = 100) -> Dict[str, float]:
    """Mean NLL (nats per configuration), its standard error, n, and the folded fraction (det < 0)."""
    nll, sign = flow.nll_and_sign(x, batch_size=batch_size)
    nll = nll.double()
    return {"nll": float(nll.mean()), "nll_stderr": float(nll.std() / math.sqrt(len(nll))), "n": len(nll),
            "folded": float((sign < 0).double().mean())}


def signed_nll(flow: EquivariantCNF, x: torch.Tensor) -> torch.Tensor:
    """The training loss (scalar): mean of -[log N(z) + sign(det) log |det|] (see "Folds" above)."""
    base, log_abs_det, sign = flow.log_prob_terms(x)
    return -(base + sign.detach() * log_abs_det).mean()


def train(data_path: PathLike, out: PathLike, n_train: Optional[int] = None, minutes: float = 10.0,
          max_iterations: int = 0, batch_size: int = 100, lr: float = 1e-3, n_steps: int = 4,
          seed: int = 0, val_every: int = 50, n_val: int = 200, checkpoint_seconds: float = 60.0,
          n_test: Optional[int] = None, coords_range: float = 15.0, eval_steps: int = 0,
          progress: bool = True) -> Dict[str, Any]:
    """Train (or resume) one run; returns the result dict (also written to ``out/result.json``).

    The test NLL is the mean over all test configurations (the papers' 1,000) unless ``n_test``.
    ``coords_range`` bounds the EGNN coordinate update (:class:`.egnn.EGCL`; per layer coords_range /
    n_layers per neighbour, in reduced length): a smaller bound keeps a one-step map from folding longer.
    ``eval_steps`` > 0 validates and tests the trained field integrated with that many RK4 steps (the
    map one will export, e.g. 8 for DW4 trained with 2), folds included; default: the training's.
    """
    if n_test is not None and n_test < 1:
        raise ValueError(f"n_test must be at least 1, got {n_test}")
    if eval_steps < 0:
        raise ValueError(f"eval_steps must be >= 0, got {eval_steps}")
    eval_steps = eval_steps or n_steps
    torch.set_num_threads(1)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_dataset(data_path)
    system = data["system"]
    train_x = torch.as_tensor(training_subset(data, n_train), dtype=torch.float32)
    val_x = torch.as_tensor(data["val"][:n_val], dtype=torch.float32)
    M, d = train_x.shape[1], train_x.shape[2]
    budget = 60.0 * minutes
    last = out / "last.pt"
    torch.manual_seed(seed)
    flow = EquivariantCNF(M, d, n_steps=n_steps, coords_range=coords_range)
    opt = torch.optim.Adam(flow.parameters(), lr=lr)
    it, elapsed, best_val, best_state, history, lr_scale = 0, 0.0, float("inf"), None, [], 1.0
    if last.is_file():
        state = load_checkpoint(last)
        flow.load_state_dict(state["state"])
        opt.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        it, elapsed = int(state["iteration"]), float(state["elapsed"])
        best_val, best_state = float(state["best_val"]), state["best_state"]
        history = json.loads(state["history"])
        lr_scale = float(state.get("lr_scale", 1.0))
        if progress:
            print(f"[{system}] resuming at iteration {it} ({elapsed / 60:.1f} min done)", flush=True)
    config = json.dumps(flow.config)
    info = {"system": system, "n_train": len(train_x), "batch_size": min(batch_size, len(train_x)), "lr": lr,
            "seed": seed, "data": str(data_path), "density": "exact log-determinant of the RK4 map",
            "eval_rk4_steps": eval_steps}

    def checkpoint() -> None:
        save(last, {"format": CHECKPOINT_FORMAT, "config": config, "info": json.dumps(info),
                    "state": flow.state_dict(), "optimizer": opt.state_dict(), "rng": torch.get_rng_state(),
                    "iteration": it, "elapsed": elapsed, "best_val": best_val,
                    "best_state": best_state if best_state is not None else flow.state_dict(),
                    "history": json.dumps(history), "lr_scale": lr_scale})

    def done() -> bool:
        return (max_iterations > 0 and it >= max_iterations) or (minutes > 0 and elapsed >= budget)

    t_ckpt = time.time()
    while not done():
        t0 = time.time()
        for group in opt.param_groups:  # linear decay to 10% over the budget
            frac = it / max_iterations if max_iterations > 0 else elapsed / max(budget, 1.0)
            group["lr"] = lr * lr_scale * max(0.1, 1.0 - frac)
        idx = torch.randint(0, len(train_x), (min(batch_size, len(train_x)),))
        batch = train_x[idx]
        loss = signed_nll(flow, batch)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(flow.parameters(), 10.0)
        opt.step()
        it += 1
        elapsed += time.time() - t0
        if it % val_every == 0 or done():
            t1 = time.time()
            flow.n_steps = eval_steps
            metrics = evaluate(flow, val_x)
            flow.n_steps = n_steps
            val, folded = metrics["nll"], metrics["folded"]
            elapsed += time.time() - t1
            rolled_back = bool(folded) and best_state is not None
            history.append({"iteration": it, "minutes": elapsed / 60, "train_batch_loss": float(loss.detach()),
                            "val_nll": val, "val_folded": folded, "rolled_back": rolled_back})
            if val < best_val and folded == 0.0:
                best_val = val
                best_state = {k: v.detach().clone() for k, v in flow.state_dict().items()}
            if rolled_back:
                flow.load_state_dict(best_state)
                opt.state.clear()
                lr_scale *= 0.5
            if progress:
                fold = (f"  FOLDED on {100 * folded:.1f}%: " + (f"back to the best state, lr x {lr_scale:g}"
                        if rolled_back else "not selectable")) if folded else ""
                print(f"[{system} n={len(train_x)}] it {it}  {elapsed / 60:.1f} min  batch loss {float(loss.detach()):.3f}"
                      f"  val NLL {val:.3f} (best {best_val:.3f}){fold}", flush=True)
        if time.time() - t_ckpt > checkpoint_seconds:
            checkpoint()
            t_ckpt = time.time()
    checkpoint()
    if best_state is None:  # every validation state folded: keep the last one (its test result says so)
        best_state = {k: v.detach().clone() for k, v in flow.state_dict().items()}
    save(out / "best.pt", {"format": CHECKPOINT_FORMAT, "config": config, "info": json.dumps(info),
                           "best_state": best_state, "iteration": it, "elapsed": elapsed, "best_val": best_val})
    result_path = out / "result.json"
    if result_path.is_file():  # already evaluated at this iteration (a rerun of a finished run)
        previous = json.loads(result_path.read_text())
        if previous.get("iterations") == it:
            return previous
    best, _ = load_flow(out / "best.pt")
    best.n_steps = eval_steps
    test_x = torch.as_tensor(data["test"][:n_test], dtype=torch.float64)
    t2 = time.time()
    test = evaluate(best, test_x, batch_size=20)
    result = {**info, "config": json.loads(config), "iterations": it, "train_minutes": elapsed / 60,
              "best_val_nll": best_val, "test": test, "eval_minutes": (time.time() - t2) / 60, "history": history}
    with atomic_write(result_path) as tmp:
        tmp.write_text(json.dumps(result, indent=1))
    if progress:
        fold = (f"  (map folded on {100 * test['folded']:.1f}% of them: not a normalised density)"
                if test["folded"] else "")
        print(f"[{system} n={len(train_x)}] test NLL {test['nll']:.3f} +- {test['nll_stderr']:.3f}"
              f" on {test['n']} test configurations{fold}", flush=True)
    return result


def summary_table(results: list) -> str:
    """Markdown rows: system, n_train, test NLL, iterations, CPU minutes."""
    rows = ["| system | training set | test NLL (this work) | iterations | CPU min (train + eval) |",
            "|---|---|---|---|---|"]
    for r in sorted(results, key=lambda r: (r["system"], r["n_train"])):
        t = r["test"]
        fold = f" (FOLDED on {100 * t['folded']:.0f}%)" if t.get("folded") else ""
        rows.append(f"| {r['system']} | {r['n_train']} | {t['nll']:.2f} ± {t['nll_stderr']:.2f}{fold} | "
                    f"{r['iterations']} | {r['train_minutes']:.1f} + {r['eval_minutes']:.1f} |")
    return "\n".join(rows)

