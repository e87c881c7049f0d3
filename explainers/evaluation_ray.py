"""Evaluating on Ray: ``python -m explainers evaluate ... --ray [ADDRESS]``.

The same run as :func:`explainers.evaluation.evaluate`, fanned out over Ray actors: one per GPU
of the cluster, or one per ``cpus_per_worker`` CPUs where it has none. Each actor loads the
classifier once (and the method's fits on its first image: they are cached per process) and
runs :func:`explainers.evaluation.evaluate_item` on the images it is sent. The driver reads the
results file (:func:`explainers.evaluation.plan`), skips the indices already there, sends the
rest through ``ray.util.ActorPool.map_unordered`` and appends each row as it returns to the same
JSON-lines file a serial run writes, so a run resumes serially or on Ray, in any mix.

The images are read on the driver when a task is submitted and sent with it (the workers need
the classifier and the fits, not the data). Faults: actors are made with ``max_restarts`` and
``max_task_retries`` (bounded), so a worker that dies is replaced and its image retried by Ray;
a driver stopped with Ctrl-C has every finished row on disk (each written whole and synced);
a row whose index is already in the file is dropped, so none is written twice.

Ray is imported only inside these functions: the app and the command line do not pay for it.
"""
from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Iterable, Optional

from .errors import ExplainerError
from .evaluation import Context, append_row, evaluate_item, open_results, plan
from .progress import report

MAX_RESTARTS = 3  # a worker replaced at most this many times ...
MAX_TASK_RETRIES = 3  # ... and an image retried at most this many times after its worker died
FORWARD_ENV = ("EXPLAINERS_HOME", "EXPLAINERS_MODELS")  # where the workers find fits and models folders


def _project_root() -> str:
    return str(Path(__file__).resolve().parents[1])


def connect(address: Optional[str] = None, num_cpus: Optional[int] = None) -> bool:
    """Join the cluster at ``address`` (``auto``, ``ray://host:port``, ``host:port``) or, without
    one, start a local Ray sized to this machine (``num_cpus``, default all; no dashboard).
    Returns whether this call started Ray (and so should shut it down). An already connected
    process is left as it is."""
    import ray

    if ray.is_initialized():
        return False
    try:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:  # the workers import explainers from this checkout, wherever the driver was started
            path = os.pathsep.join(p for p in (_project_root(), os.environ.get("PYTHONPATH", "")) if p)
            ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": {"PYTHONPATH": path}})
    except (ConnectionError, ValueError, RuntimeError) as e:
        raise ExplainerError(f"ray: cannot {'join ' + address if address else 'start a local instance'}: "
                             f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    return True


class Worker:
    """One actor's state: the classifier (loaded once), the run's settings and a metric context
    that lives as long as the actor (the sanity metric's randomised network is built once)."""

    def __init__(self, model: str, arch: Optional[str], device: str, threads: int, env: dict, method: str,
                 metrics: list[str], params: dict, map_name: str, target: str, seed: int, classes: list, slot: int = 0):
        os.environ.update(env)
        self.slot = slot  # its place in the driver's list (a replacement keeps it)
        import torch

        torch.set_num_threads(max(1, int(threads)))  # its CPU share, not the whole machine's cores
        from .classifiers import load_classifier

        self.clf = load_classifier(model, device=device, arch=arch)
        self.run = (method, list(metrics), dict(params), map_name, target)
        self.ctx = Context(method, dict(params), map_name, seed)
        self.dataset = SimpleNamespace(classes=list(classes))  # all evaluate_item reads from it

    def evaluate(self, index: int, item) -> tuple[dict, int]:
        method, metrics, params, map_name, target = self.run
        row = evaluate_item(self.clf, item, index, method, metrics, params, map_name, target, self.ctx, self.dataset)
        return row, self.slot

    def pid(self) -> int:
        return os.getpid()


def _capacity(device: str, cpus_per_worker: float) -> tuple[int, dict]:
    """How many actors the cluster holds and each one's resources: a GPU each where there are GPUs
    (unless ``device`` is cpu), else ``cpus_per_worker`` CPUs each."""
    import ray

    res = ray.cluster_resources()
    gpus = int(res.get("GPU", 0))
    if device != "cpu" and gpus:
        return gpus, {"num_gpus": 1, "num_cpus": cpus_per_worker}
    if device not in ("auto", "cpu"):
        raise ExplainerError(f"--device {device}: the Ray cluster has no GPU")
    if res.get("CPU", 0) < cpus_per_worker:  # no actor would ever be placed: say so rather than wait
        raise ExplainerError(f"--ray-cpus-per-worker {cpus_per_worker:g}: the Ray cluster has {res.get('CPU', 0):g} CPUs")
    return int(res["CPU"] // cpus_per_worker), {"num_cpus": cpus_per_worker}


def evaluate_ray(
    clf,
    dataset,
    method: str,
    metrics: Iterable[str],
    out: Path,
    params: Optional[dict] = None,
    map_name: Optional[str] = None,
    limit: Optional[int] = None,
    progress: Optional[Callable] = None,
    target: str = "label",
    seed: int = 0,
    *,
    model: Optional[str] = None,
    arch: Optional[str] = None,
    device: str = "auto",
    address: Optional[str] = None,
    cpus_per_worker: float = 1,
    workers: Optional[int] = None,
    on_row: Optional[Callable] = None,
) -> list[dict]:
    """:func:`explainers.evaluation.evaluate` on Ray; the same file, rows and return value.

    ``clf`` is the driver's copy (for the header); the workers load ``model`` (default
    ``clf.id``) with ``arch``. ``workers`` caps the number of actors (default: as many as the
    cluster holds). ``on_row(actors, row, worker)`` is called after each row is written, with the
    actor handles and the position of the one that made it (tests kill a worker from it)."""
    if cpus_per_worker <= 0:
        raise ExplainerError(f"--ray-cpus-per-worker must be positive, got {cpus_per_worker}")
    if workers is not None and workers < 1:
        raise ExplainerError(f"--ray-workers must be at least 1, got {workers}")
    p = plan(clf, dataset, method, metrics, out, params, map_name, limit, target, seed)
    n, rows = p.n, p.rows
    todo = [i for i in range(n) if i not in rows]
    try:
        import ray
        from ray.util import ActorPool
    except ImportError:
        raise ExplainerError("--ray needs Ray: pip install -r requirements.txt") from None
    started = connect(address) if todo else False
    actors: list = []
    try:
        with open_results(p) as f:
            done = n - len(todo)
            report(progress, done, n, "resumed" if rows else method)
            if not todo:
                return [rows[i] for i in sorted(rows) if i < n]
            cap, res = _capacity(device, cpus_per_worker)
            count = min(len(todo), cap if workers is None else workers)
            where = "cuda" if "num_gpus" in res else "cpu"
            env = {k: os.environ[k] for k in FORWARD_ENV if k in os.environ}
            threads = max(1, int(cpus_per_worker))
            remote = ray.remote(Worker).options(max_restarts=MAX_RESTARTS, max_task_retries=MAX_TASK_RETRIES, **res)
            classes = list(getattr(dataset, "classes", []) or [])
            actors = [remote.remote(model or clf.id, arch, where, threads, env, method, p.metrics, p.params, p.map_name,
                                    target, seed, classes, k) for k in range(count)]

            def submit(actor, i):  # the image is read here, when an actor is free for it
                return actor.evaluate.remote(i, dataset[i])

            for row, k in ActorPool(actors).map_unordered(submit, todo):
                if append_row(f, p, row):
                    done += 1
                    report(progress, done, n, method)
                if on_row is not None:
                    on_row(actors, row, k)
    except ray.exceptions.RayTaskError as e:
        cause = getattr(e, "cause", None)
        if isinstance(cause, ExplainerError):
            raise ExplainerError(str(cause)) from None
        raise
    except ray.exceptions.RayActorError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExplainerError(f"ray: a worker died and could not be replaced or its image retried "
                             f"(at most {MAX_RESTARTS} restarts, {MAX_TASK_RETRIES} retries): {first}") from None
    finally:
        for a in actors:  # free their CPUs/GPUs now (a later run in this process makes its own)
            ray.kill(a, no_restart=True)
        if started:
            ray.shutdown()
    return [rows[i] for i in sorted(rows) if i < n]
