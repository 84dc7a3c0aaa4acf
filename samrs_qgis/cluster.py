"""Running a dataset's images on Dask's distributed scheduler: a local cluster of worker processes, or an
existing cluster (a scheduler address or scheduler file: on a laptop, SLURM/PBS through dask-jobqueue,
Kubernetes).

The client (the process that owns the manifest) plans the work and records the answers; each image is one task.
A worker process loads the model once and keeps it for all its tasks (:func:`worker_backend`, a per-process
cache keyed by the options). Workers write each image's files themselves, atomically, into the output folder,
which every worker must reach (:func:`check_shared_folder`); only the client writes the manifest and the COCO
file. A worker that dies mid-image is replaced and the image done again elsewhere; one that kills workers
repeatedly ends as failed with the reason (:func:`failure_reason`).

Local workers take one image at a time and run torch with ``threads`` threads each (workers x threads <= cores);
on a machine with several NVIDIA GPUs there is one worker per GPU, each seeing only its card
(``CUDA_VISIBLE_DEVICES``).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import uuid
from dataclasses import asdict, dataclass
from typing import Dict, Iterator, Optional, Tuple

from .backends.base import Backend
from .errors import InputError, missing_packages
from .progress import Progress

CONNECT_TIMEOUT_S = 10  # a scheduler that does not answer in this time is reported
DEATH_TIMEOUT_S = 30  # local workers without their scheduler (the client was killed) stop after this
THREADS_ENV = "SAMRS_WORKER_THREADS"
LOCALHOST = "127.0.0.1"
# Dask's nanny sets MALLOC_TRIM_THRESHOLD_=65536 in its workers, so glibc hands memory back after every large
# temporary array; a model's per-image arrays are then allocated again each time (measured: an image ~0.3 s
# slower on a worker than in one process). The engine keeps glibc's default; thread counts are set per worker.
NANNY_ENV = {"distributed.nanny.pre-spawn-environ": {}}


@dataclass(frozen=True)
class ClusterSpec:
    """Where to run: ``workers`` local worker processes, or the existing cluster of ``scheduler`` (an address
    such as ``tcp://host:8786``, or the path of a scheduler file); ``threads``: compute threads per local worker
    (default: the cores shared among the workers)."""

    workers: int = 0
    scheduler: Optional[str] = None
    threads: Optional[int] = None

    @property
    def enabled(self) -> bool:
        return bool(self.workers) or bool(self.scheduler)

    def check(self) -> None:
        if self.workers < 0:
            raise InputError(f"The number of workers must be 0 (no cluster) or more, not {self.workers}.")
        if self.workers and self.scheduler:
            raise InputError("Give either a number of local workers (--workers, WORKERS) or an existing cluster's "
                             "scheduler (--scheduler, SCHEDULER), not both.")
        if self.threads is not None and self.threads < 1:
            raise InputError(f"Threads per worker must be 1 or more, not {self.threads}.")


def import_distributed():
    try:
        import distributed
    except ImportError as exc:
        import importlib.util

        profile = "full" if importlib.util.find_spec("torch") else "light"  # both install it; keep what is there
        raise missing_packages("Running on a cluster needs Dask's distributed package (or run without "
                               "--workers/--scheduler, WORKERS/SCHEDULER)", exc, profile) from exc
    return distributed


def local_workers(workers: int, cores: int, gpus: int, threads: Optional[int] = None) -> Dict[str, dict]:
    """The worker processes of a local cluster: name -> {"threads", "env"}. Several GPUs: one worker per GPU
    (pinned by ``CUDA_VISIBLE_DEVICES``); else ``workers``. ``threads`` per worker defaults to cores // workers."""
    count = gpus if gpus > 1 else workers
    per_worker = threads or max(1, cores // max(count, 1))
    specs = {}
    for i in range(count):
        env = {THREADS_ENV: str(per_worker), "OMP_NUM_THREADS": str(per_worker), "MKL_NUM_THREADS": str(per_worker)}
        if gpus > 1:
            env["CUDA_VISIBLE_DEVICES"] = str(i)
        specs[f"samrs-{i}"] = {"threads": per_worker, "env": env}
    return specs


def _gpu_count() -> int:
    from .environment.nvidia import detect

    driver = detect()
    return len(driver.gpus) if driver else 0


@contextlib.contextmanager
def worker_interpreter() -> Iterator[None]:
    """Local workers are started (and restarted) with the interpreter that runs this process. Inside QGIS
    ``sys.executable``, which multiprocessing starts, is often not it (QGIS itself on Windows and macOS, whatever
    ``python3`` is first on PATH on Linux): the running Python is then found (:func:`.environment.interpreter.
    qgis_python`) and set for multiprocessing while the cluster lives."""
    import multiprocessing
    import multiprocessing.spawn
    from pathlib import Path

    from .environment.interpreter import is_running_python, qgis_python

    before = multiprocessing.spawn.get_executable()
    if before and is_running_python(Path(os.fsdecode(before))):
        yield
        return
    multiprocessing.set_executable(qgis_python())
    try:
        yield
    finally:
        multiprocessing.set_executable(os.fsdecode(before) if before else "")


@contextlib.contextmanager
def connect(spec: ClusterSpec, progress: Progress) -> Iterator[object]:
    """A ``distributed.Client`` of the cluster ``spec`` names (a local one is started here and stopped at the end);
    an InputError within seconds for a scheduler that does not answer."""
    spec.check()
    distributed = import_distributed()
    cluster = None
    interpreter = contextlib.ExitStack()  # the workers' interpreter, kept while the cluster may (re)start them
    try:
        if spec.scheduler:
            target = spec.scheduler
            kwargs = ({"scheduler_file": target} if os.path.isfile(target) else {"address": target})
            try:
                client = distributed.Client(timeout=f"{CONNECT_TIMEOUT_S}s", **kwargs)
            except (OSError, TimeoutError, ValueError) as exc:
                raise InputError(f"The Dask scheduler '{target}' does not answer ({type(exc).__name__}: {exc}). Check "
                                 "the address (tcp://host:8786) or the scheduler file, that the scheduler runs, and "
                                 "that this machine can reach it.") from exc
        else:
            interpreter.enter_context(worker_interpreter())
            workers = local_workers(spec.workers, os.cpu_count() or 1, _gpu_count(), spec.threads)
            # on this machine only: the scheduler, the workers and the dashboard listen on the loopback address
            scheduler = {"cls": distributed.Scheduler,
                         "options": {"host": LOCALHOST, "dashboard_address": f"{LOCALHOST}:0"}}
            import dask

            # a worker holds only the image it runs: when one image kills its worker, no image merely queued
            # there is counted as having killed it too
            with dask.config.set({"distributed.scheduler.worker-saturation": 1.0, **NANNY_ENV}):
                cluster = distributed.SpecCluster(
                    scheduler=scheduler, silence_logs=logging.ERROR,
                    workers={name: {"cls": distributed.Nanny,
                                    "options": {"nthreads": 1, "env": w["env"], "death_timeout": DEATH_TIMEOUT_S,
                                                "name": name, "host": LOCALHOST, "silence_logs": logging.ERROR}}
                             for name, w in workers.items()})
            client = distributed.Client(cluster)
        try:
            info = client.scheduler_info()
            workers_seen = len(info.get("workers", {}))
            waiting = "" if workers_seen else " (none yet: the images wait for workers to join)"
            progress.info(f"Dask cluster: {workers_seen} worker(s) at {client.scheduler.address}{waiting}, dashboard "
                          f"{client.dashboard_link}")
            yield client
        finally:
            client.close()
    finally:
        if cluster is not None:
            cluster.close()
        interpreter.close()


def check_shared_folder(client, folder: str) -> None:
    """Raise an InputError naming the workers that cannot see or write ``folder`` (it must be the same folder
    for the client and every worker: a shared file system)."""
    token = os.path.join(folder, f".samrs-cluster-check-{uuid.uuid4().hex}")
    with open(token, "w", encoding="utf-8") as fh:
        fh.write("written by the client\n")
    try:
        seen = client.run(_sees_and_writes, token)
    finally:
        os.remove(token)
    blind = sorted(worker for worker, ok in seen.items() if not ok)
    if blind:
        raise InputError(f"The output folder '{folder}' cannot be seen or written by {len(blind)} of {len(seen)} "
                         f"Dask worker(s) ({', '.join(blind[:3])}). Every worker writes its images' files there "
                         "itself: give a folder on a file system that the client and every worker share, at the "
                         "same path.")


def _sees_and_writes(token: str) -> bool:
    try:
        with open(token, encoding="utf-8") as fh:
            if fh.read() != "written by the client\n":
                return False
        probe = f"{token}.{os.getpid()}"
        with open(probe, "w", encoding="utf-8") as fh:
            fh.write("worker")
        os.remove(probe)
        return True
    except OSError:
        return False


# -- on the workers ------------------------------------------------------------------------------------
_BACKENDS: Dict[str, object] = {}  # options (JSON) -> the backend this process loaded


def worker_backend(options):
    """The backend for ``options`` in this worker process, loaded once and kept for all its tasks."""
    key = json.dumps(asdict(options), sort_keys=True, default=str)
    if key not in _BACKENDS:
        from .backends import make_backend

        threads = os.environ.get(THREADS_ENV)
        if threads:
            with contextlib.suppress(ImportError):
                import torch

                torch.set_num_threads(int(threads))
        for old in list(_BACKENDS.values()):  # one model per process: a new run's model replaces the last one
            old.close()
        _BACKENDS.clear()
        _BACKENDS[key] = make_backend(options)
    return _BACKENDS[key]


def backend_facts(options) -> Dict[str, object]:
    """What the client needs to know of the backend ``options`` name, from the worker that loaded it: its
    description, device, frame size and batch, and the notes and remarks for the user. Raises the backend's
    own error (a missing checkpoint, a prompt mode it does not take) on the client."""
    backend = worker_backend(options)
    backend.check_prompt_mode(options.prompt)
    return {"name": backend.name, "description": backend.describe(), "device": backend.device,
            "device_name": backend.device_name, "input_size": backend.input_size,
            "preferred_batch": backend.preferred_batch, "notes": tuple(backend.notes),
            "remarks": tuple(backend.remarks)}


class ClusterBackend(Backend):
    """The backend of a cluster's workers as the client sees it (:func:`backend_facts`): enough to plan
    windows and to say in the outputs what computed them. It computes nothing in the client."""

    def __init__(self, facts: Dict[str, object]):
        self.name = str(facts["name"])
        self.description = str(facts["description"])
        self.device = str(facts["device"])
        self.device_name = str(facts["device_name"])
        self.input_size = int(facts["input_size"])
        self.preferred_batch = int(facts["preferred_batch"])
        self.notes = tuple(facts["notes"])
        self.remarks = tuple(facts["remarks"])

    def check_prompt_mode(self, prompt: str) -> None:
        """Checked by the worker that loaded the backend (:func:`backend_facts`)."""

    def describe(self) -> str:
        return self.description


def segment_image(work, image) -> Tuple[dict, str]:
    """The task of one image: ``work`` (:class:`.dataset_image.ImageWork`) done for ``image`` with this worker's
    backend; (the manifest entry, the backend's description or "" when none was needed)."""
    used = []

    def backend():
        used.append(worker_backend(work.options))
        return used[-1]

    entry = work.process(image, Progress(), backend)
    return entry, used[0].describe() if used else ""


def failure_reason(exc: BaseException, task: str = "image") -> Optional[str]:
    """Why a task (of an ``image``, a ``window group``) ended without an answer when it is the cluster's doing
    (its workers died), else None (the task's own error)."""
    distributed = import_distributed()
    if isinstance(exc, distributed.KilledWorker):
        return (f"the Dask worker processing it died each time it was tried (killed, or out of memory): the {task} "
                "was given up")
    return None
