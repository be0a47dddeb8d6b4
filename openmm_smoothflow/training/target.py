"""The OpenMM target energy for energy-based training (reverse KL, paper Eq. 5).

:class:`OpenMMTarget` evaluates batched energies in kT and forces in kT/nm, in process or in worker
processes (each with its own Context, the System sent as XML). :meth:`OpenMMTarget.target_energy`
is differentiable: its gradient with respect to the positions is ``-force`` (in kT/nm), so reverse-KL
losses back-propagate through OpenMM (the SI-2.5 energy cut-off of that loss is ``losses.energy_cutoff``).

Workers are separate Python processes (``python -c``, importing only openmm and numpy, never the
user's ``__main__``) that talk ``multiprocessing.connection`` messages over their stdin/stdout. They
ignore SIGINT (the parent handles Ctrl-C), exit when their pipe closes (parent gone, even by SIGKILL),
and are shut down by :meth:`OpenMMTarget.close`, the context manager, garbage collection, interpreter
exit, a dead worker, or any exception (KeyboardInterrupt included) during a request.
"""
from __future__ import annotations

import os
import subprocess
import sys
import weakref
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from ..md import systems
from ..units import kT

_JOIN_TIMEOUT_S = 5.0
# The worker imports only openmm and numpy (md/systems.py), and never the user's __main__: it starts
# fast and works from scripts without a main guard, stdin and notebooks alike.
_WORKER_CODE = (
    "import signal; signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
    "from openmm_smoothflow.md.systems import _worker_main; _worker_main()\n"
)


class OpenMMWorkerError(RuntimeError):
    """An OpenMM worker process failed (its traceback is in the message) or died."""


def _system_xml(system) -> str:
    import openmm

    if isinstance(system, str):
        return system
    if isinstance(system, openmm.System):
        return openmm.XmlSerializer.serialize(system)
    raise TypeError(f"system must be an openmm.System or its XML, got {type(system).__name__}")


class _Worker:
    """One worker process and the two message pipes to it (requests on its stdin, replies on its stdout)."""

    def __init__(self) -> None:
        package_root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _WORKER_CODE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            close_fds=True,
        )
        # Own the pipe file descriptors through Connections (framed pickles); Popen forgets them.
        self.requests = Connection(os.dup(self.proc.stdin.fileno()), readable=False)
        self.replies = Connection(os.dup(self.proc.stdout.fileno()), writable=False)
        self.proc.stdin.close()
        self.proc.stdout.close()

    @property
    def pid(self) -> int:
        return self.proc.pid


def _shutdown(workers: List[_Worker], terminate: bool) -> None:
    """Stop workers: politely (``None`` request, wait) unless ``terminate``; then SIGTERM, then SIGKILL."""
    if not terminate:
        for w in workers:
            try:
                w.requests.send(None)
            except Exception:  # already closed or worker gone
                pass
    for w in workers:
        for conn in (w.requests, w.replies):
            try:
                conn.close()  # a worker that is still reading now sees EOF and exits
            except Exception:
                pass
    for w in workers:
        try:
            w.proc.wait(timeout=0.1 if terminate else _JOIN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pass
        if w.proc.poll() is None:
            w.proc.terminate()
            try:
                w.proc.wait(timeout=_JOIN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait()
    workers.clear()


class _TargetEnergyFunction(torch.autograd.Function):
    """u(x) in kT with d u / d x = -F(x) in kT/nm (F from OpenMM, computed in the forward pass)."""

    @staticmethod
    def forward(ctx, positions: Tensor, target: "OpenMMTarget") -> Tensor:
        energies, forces = target.energy_and_force(positions.detach())
        ctx.save_for_backward(forces)
        return energies

    @staticmethod
    def backward(ctx, grad_energies: Tensor):
        (forces,) = ctx.saved_tensors
        shape = (-1,) + (1,) * (forces.dim() - 1)
        return -forces * grad_energies.reshape(shape), None


class OpenMMTarget:
    """Batched OpenMM energies (kT) and forces (kT/nm) of positions in nm.

    ``system``: an ``openmm.System`` (or its XML); ``temperature`` K sets kT. ``n_workers=0`` computes
    in this process; ``n_workers > 0`` splits each batch over that many worker processes (each
    with its own Context on ``platform``). Positions are (B, N, 3) or flattened (B, 3N) tensors in nm;
    results come back in the positions' dtype and device, forces in the positions' shape. Frames with
    non-finite positions, or on which OpenMM fails, get energy ``inf`` and zero force.

    Use as a context manager or call :meth:`close` to stop the workers (garbage collection and
    interpreter exit stop them too).
    """

    def __init__(
        self,
        system,
        temperature: float,
        n_workers: int = 0,
        platform: str = "Reference",
        platform_properties: Optional[Dict[str, str]] = None,
    ) -> None:
        import openmm

        if int(n_workers) != n_workers or n_workers < 0:
            raise ValueError(f"n_workers must be a non-negative integer, got {n_workers}")
        self.temperature = float(temperature)
        self.kT = kT(self.temperature)  # kJ/mol
        self.n_workers = int(n_workers)
        self.platform = systems.get_platform(platform).getName()  # clear error in the parent
        self.platform_properties = dict(platform_properties or {})
        xml = _system_xml(system)
        system_obj = system if isinstance(system, openmm.System) else openmm.XmlSerializer.deserialize(xml)
        self.n_atoms = system_obj.getNumParticles()
        self._context = None
        self._workers: List[_Worker] = []
        self._closed = False
        # Stops the workers when this object is collected or at interpreter exit (never references self).
        self._finalizer = weakref.finalize(self, _shutdown, self._workers, True)
        if self.n_workers == 0:
            self._context = systems.make_context(system_obj, self.platform, self.platform_properties)
        else:
            try:
                self._start_workers(xml)
            except BaseException:
                self._stop(terminate=True)
                raise

    # ------------------------------------------------------------------------------------ workers

    def _start_workers(self, xml: str) -> None:
        for _ in range(self.n_workers):
            self._workers.append(_Worker())  # all start in parallel
        for worker in self._workers:
            try:
                worker.requests.send((xml, self.platform, self.platform_properties))
            except OSError:
                pass  # it died early: _receive reports it
        for i in range(self.n_workers):
            status, payload = self._receive(i)
            if status != "ready":
                raise OpenMMWorkerError(f"OpenMM worker {i} failed to start:\n{payload}")

    def _receive(self, i: int):
        """The next message of worker ``i``; OpenMMWorkerError (and this target closed) if it died."""
        worker = self._workers[i]
        try:
            return worker.replies.recv()
        except (EOFError, OSError):
            pass
        try:
            code = worker.proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            code = None
        message = f"OpenMM worker {i} (pid {worker.pid}) died (exit code {code}); see its stderr above"
        self._stop(terminate=True)  # the other pipes are out of step now: this target is unusable
        raise OpenMMWorkerError(message)

    def _compute_workers(self, x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        chunks = np.array_split(np.arange(len(x)), min(self.n_workers, len(x)))
        for i, idx in enumerate(chunks):
            self._workers[i].requests.send(x[idx])
        energies = np.empty(len(x))
        forces = np.empty_like(x)
        errors = []
        for i, idx in enumerate(chunks):  # collect every reply, so all pipes stay in step
            status, payload = self._receive(i)
            if status == "ok":
                energies[idx], forces[idx] = payload
            else:
                errors.append(f"OpenMM worker {i} failed:\n{payload}")
        if errors:
            raise OpenMMWorkerError("\n".join(errors))
        return energies, forces

    def _stop(self, terminate: bool) -> None:
        self._closed = True
        self._context = None
        _shutdown(self._workers, terminate)
        self._finalizer.detach()

    # ------------------------------------------------------------------------------------ public

    def energy_and_force(self, positions: Union[Tensor, np.ndarray]) -> Tuple[Tensor, Tensor]:
        """Energies (B,) in kT and forces in kT/nm (shape of ``positions``) for positions in nm.

        Not differentiable (use :meth:`target_energy` for gradients).
        """
        if self._closed:
            raise RuntimeError("this OpenMMTarget is closed")
        positions = torch.as_tensor(positions)
        dtype = positions.dtype if torch.is_floating_point(positions) else torch.float64
        x = positions.detach().to("cpu", torch.float64).numpy()
        if x.ndim == 2 and x.shape[1] == 3 * self.n_atoms:
            x = x.reshape(len(x), self.n_atoms, 3)
        if x.ndim != 3 or x.shape[1:] != (self.n_atoms, 3):
            raise ValueError(
                f"positions must have shape (B, {self.n_atoms}, 3) or (B, {3 * self.n_atoms}), "
                f"got {tuple(positions.shape)}"
            )
        if len(x) == 0:
            energies, forces = np.zeros(0), np.zeros_like(x)
        elif self.n_workers == 0:
            energies, forces = systems.evaluate_frames(self._context, x)
        else:
            try:
                energies, forces = self._compute_workers(np.ascontiguousarray(x))
            except OpenMMWorkerError:
                raise  # an error reported by a worker leaves the target usable; a dead one closed it
            except BaseException:  # KeyboardInterrupt, broken pipe, ...: never leave workers behind
                self._stop(terminate=True)
                raise
        energies = torch.from_numpy(energies / self.kT).to(positions.device, dtype)
        forces = torch.from_numpy(forces / self.kT).to(positions.device, dtype).reshape(positions.shape)
        return energies, forces

    def target_energy(self, positions: Tensor) -> Tensor:
        """Energies (B,) in kT, differentiable: d energy / d positions = -force (kT/nm)."""
        return _TargetEnergyFunction.apply(positions, self)

    __call__ = target_energy

    def close(self) -> None:
        """Stop the workers (politely, then by force). Idempotent."""
        if not self._closed:
            self._stop(terminate=False)

    def __enter__(self) -> "OpenMMTarget":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        elif not self._closed:
            self._stop(terminate=True)

    def __del__(self) -> None:
        try:
            if not getattr(self, "_closed", True):
                self._stop(terminate=True)
        except Exception:
            pass

    @property
    def worker_pids(self) -> List[int]:
        """Process ids of the running workers (empty in process)."""
        return [w.pid for w in self._workers]

