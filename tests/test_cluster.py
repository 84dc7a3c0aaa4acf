"""Datasets on a Dask cluster (a real ``LocalCluster`` of worker processes, 1 thread each): the same files as a
run without a cluster; a worker killed mid-image (its pid from the cluster) is replaced and the image done again;
an image that kills every worker it reaches is recorded as failed and the run goes on; a killed client's run
resumes; a scheduler that does not answer is reported within seconds. Masks come from GrabCut (deterministic)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import cluster_tasks
import support
import tools_data as td
from conftest import PLUGINS_DIR, REPO
from samrs.samrs_qgis import cluster as cluster_module
from samrs.samrs_qgis import dataset as dataset_module
from samrs.samrs_qgis.cluster import ClusterSpec, local_workers
from samrs.samrs_qgis.dataset import segment_dataset
from samrs.samrs_qgis.dataset_image import BOX_LAYER
from samrs.samrs_qgis.errors import InputError
from samrs.samrs_qgis.progress import Progress
from samrs.samrs_qgis.settings import SegmentOptions

pytest.importorskip("distributed")
STEMS = ("a", "b", "c", "d", "e", "f")
OPTIONS = SegmentOptions(backend="grabcut", embedding_cache=False)
TWO_WORKERS = ClusterSpec(workers=2, threads=1)


def build(root: Path, stems=STEMS):
    images, labels = root / "images", root / "labels"
    images.mkdir(parents=True)
    labels.mkdir()
    for stem in stems:
        td.scene_raster(images / f"{stem}.tif")
        (labels / f"{stem}.txt").write_text(td.DOTA_A)
    return images, labels


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """The dataset and its outputs from a run without a cluster (the reference)."""
    root = tmp_path_factory.mktemp("cluster")
    images, labels = build(root)
    summary = segment_dataset(str(images), str(labels), str(root / "local"), OPTIONS)
    assert summary.done == len(STEMS)
    return root, images, labels, root / "local"


def same_files(reference: Path, other: Path) -> None:
    """Every file of ``reference`` is in ``other`` with the same bytes, but for timings: the manifest's seconds,
    and GeoPackages (whose tables record when they were written) compared by their layers' features."""
    files = sorted(p.relative_to(reference) for p in reference.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(other) for p in other.rglob("*") if p.is_file())
    for name in files:
        a, b = reference / name, other / name
        if name.suffix == ".gpkg":
            layers = BOX_LAYER if name.parts[0] == "boxes" else "masks"
            assert support.read_features(a, layer=layers) == support.read_features(b, layer=layers), name
        elif name.name == "manifest.json":
            assert without_seconds(a) == without_seconds(b)
        else:
            assert a.read_bytes() == b.read_bytes(), name


def without_seconds(manifest: Path) -> dict:
    data = json.loads(manifest.read_text())
    for entry in data["images"].values():
        entry.pop("seconds", None)
    return data


class Watch(Progress):
    """Records messages; ``address`` is set once the cluster says where its scheduler listens."""

    def __init__(self):
        self.messages, self.warnings, self.address = [], [], threading.Event()

    def info(self, message):
        self.messages.append(message)
        if message.startswith("Dask cluster:"):
            self.scheduler = message.split(" at ")[1].split(",")[0]
            self.address.set()

    def warning(self, message):
        self.warnings.append(message)


def test_local_workers_share_the_cores_and_one_worker_per_gpu():
    assert {n: w["threads"] for n, w in local_workers(2, 8, 0).items()} == {"samrs-0": 4, "samrs-1": 4}
    assert local_workers(3, 2, 0)["samrs-2"]["threads"] == 1  # never less than one
    assert local_workers(2, 8, 0, threads=1)["samrs-0"]["env"]["OMP_NUM_THREADS"] == "1"
    gpus = local_workers(1, 16, 4)  # several GPUs: one worker each, pinned to its card
    assert [w["env"]["CUDA_VISIBLE_DEVICES"] for w in gpus.values()] == ["0", "1", "2", "3"]
    assert all(w["threads"] == 4 for w in gpus.values())
    assert "CUDA_VISIBLE_DEVICES" not in local_workers(2, 8, 1)["samrs-0"]["env"]  # one GPU: shared as usual


def test_two_workers_give_the_files_of_a_run_without_a_cluster(dataset):
    root, images, labels, local = dataset
    progress = Watch()
    summary = segment_dataset(str(images), str(labels), str(root / "two"), OPTIONS, progress=progress,
                              cluster=TWO_WORKERS)
    assert (summary.done, summary.failed, summary.boxes) == (len(STEMS), 0, 3 * len(STEMS))
    assert summary.backend == "grabcut"
    assert any(m.startswith("Dask cluster: 2 worker(s) at tcp://127.0.0.1:") for m in progress.messages)
    same_files(local, root / "two")
    again = segment_dataset(str(images), str(labels), str(root / "two"), OPTIONS, cluster=TWO_WORKERS)
    assert (again.skipped, again.done) == (len(STEMS), 0)  # resumed: nothing to do, no cluster work


def test_a_worker_killed_mid_image_is_replaced_and_the_files_are_the_same(dataset):
    from distributed import Client

    root, images, labels, local = dataset
    progress = Watch()
    answer = {}
    run = threading.Thread(target=lambda: answer.update(summary=segment_dataset(
        str(images), str(labels), str(root / "killed"), OPTIONS, progress=progress, cluster=TWO_WORKERS)))
    run.start()
    assert progress.address.wait(120)
    killed = None
    with Client(progress.scheduler, timeout="10s") as client:
        deadline = time.time() + 120
        while killed is None and time.time() < deadline:
            busy = [w for w, tasks in client.processing().items() if tasks]
            if busy:
                pid = client.run(os.getpid, workers=busy[:1])[busy[0]]
                os.kill(pid, signal.SIGKILL)  # mid-image: the worker holds a task it has not finished
                killed = pid
            time.sleep(0.05)
        run.join(300)  # with this client still open: closing it early would stop the loop the run's client shares
    assert killed is not None and not run.is_alive()
    summary = answer["summary"]
    assert (summary.done, summary.failed) == (len(STEMS), 0)
    same_files(local, root / "killed")


def test_an_image_that_kills_every_worker_is_failed_and_the_run_goes_on(dataset, monkeypatch):
    import dask

    root, images, labels, _ = dataset
    monkeypatch.setattr(dataset_module, "ImageWork", cluster_tasks.KillsItsWorker)
    progress = Watch()
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        summary = segment_dataset(str(images), str(labels), str(root / "deadly"), OPTIONS, progress=progress,
                                  cluster=TWO_WORKERS)
    assert (summary.done, summary.failed) == (len(STEMS) - 1, 1)
    assert "died each time it was tried" in summary.failures["c"]
    entry = json.loads((root / "deadly" / "manifest.json").read_text())["images"]["c"]
    assert entry["status"] == "failed" and "killed, or out of memory" in entry["error"]
    assert any("c: failed: the Dask worker" in w for w in progress.warnings)


def test_a_killed_clients_run_resumes_to_the_same_files(dataset):
    root, images, labels, local = dataset
    out = root / "client-killed"
    env = dict(os.environ, PYTHONPATH=str(PLUGINS_DIR))
    command = [sys.executable, "-m", "samrs.samrs_qgis", "segment-dataset", str(images), str(labels), "--out-dir",
               str(out), "--backend", "grabcut", "--no-embedding-cache", "--workers", "2",
               "--threads-per-worker", "1", "--quiet"]
    client = subprocess.Popen(command, env=env, cwd=str(root), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    manifest = out / "manifest.json"
    deadline = time.time() + 180
    done = 0
    while time.time() < deadline and client.poll() is None:
        if manifest.exists():
            try:
                done = sum(e.get("status") == "done" for e in json.loads(manifest.read_text())["images"].values())
            except ValueError:  # being replaced
                done = 0
            if done:
                break
        time.sleep(0.1)
    assert client.poll() is None and 0 < done < len(STEMS), (done, client.stderr.read() if client.poll() else "")
    client.send_signal(signal.SIGKILL)
    client.wait()
    resumed = subprocess.run(command, env=env, cwd=str(root), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "already done" in resumed.stdout
    same_files(local, out)


def test_a_scheduler_that_does_not_answer_is_reported_within_seconds(tmp_path):
    started = time.time()
    with pytest.raises(InputError, match=r"The Dask scheduler 'tcp://127.0.0.1:9' does not answer"):
        with cluster_module.connect(ClusterSpec(scheduler="tcp://127.0.0.1:9"), Progress()):
            pass
    assert time.time() - started < cluster_module.CONNECT_TIMEOUT_S + 10
    with pytest.raises(InputError, match="either a number of local workers .* or an existing cluster"):
        ClusterSpec(workers=2, scheduler="tcp://127.0.0.1:9").check()
    token = tmp_path / "token"
    assert not cluster_module._sees_and_writes(str(token))  # a worker that cannot see the client's file
    token.write_text("written by the client\n")
    assert cluster_module._sees_and_writes(str(token))


def test_an_existing_cluster_given_by_its_scheduler_file(dataset, tmp_path):
    """The README's recipe for a cluster started elsewhere (as dask-jobqueue's SLURM jobs start it): a scheduler
    and a worker started by Dask's own commands, sharing a scheduler file; the run is given the file."""
    root, images, labels, local = dataset
    dask = str(Path(sys.executable).parent / "dask")
    env = dict(os.environ, PYTHONPATH=str(PLUGINS_DIR))  # the workers import the engine by the client's name
    scheduler_file = tmp_path / "scheduler.json"
    started = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--dashboard-address",
                                 "127.0.0.1:0", "--scheduler-file", str(scheduler_file)], env=env, cwd=str(tmp_path),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        deadline = time.time() + 60
        while not scheduler_file.exists() and time.time() < deadline:
            time.sleep(0.2)
        started.append(subprocess.Popen([dask, "worker", "--scheduler-file", str(scheduler_file), "--nthreads", "1",
                                         "--host", "127.0.0.1", "--no-dashboard"], env=env, cwd=str(tmp_path),
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        progress = Watch()
        summary = segment_dataset(str(images), str(labels), str(root / "existing"), OPTIONS, progress=progress,
                                  cluster=ClusterSpec(scheduler=str(scheduler_file)))
        assert (summary.done, summary.failed) == (len(STEMS), 0)
        assert any(m.startswith("Dask cluster: ") and " at tcp://127.0.0.1:" in m for m in progress.messages)
        same_files(local, root / "existing")
    finally:
        for process in reversed(started):
            process.terminate()
            process.wait(30)


def test_a_local_run_resumes_on_a_cluster(dataset, tmp_path):
    import shutil

    root, images, labels, local = dataset
    out = tmp_path / "resumed"
    shutil.copytree(local, out)
    summary = segment_dataset(str(images), str(labels), str(out), OPTIONS, cluster=TWO_WORKERS)
    assert (summary.skipped, summary.done) == (len(STEMS), 0)
    same_files(local, out)


def test_cancelling_a_cluster_run_stops_its_work_and_keeps_what_finished(dataset):
    from samrs.samrs_qgis.errors import Cancelled

    root, images, labels, local = dataset
    out = root / "cancelled"
    progress = support.RecordingProgress(cancel_at="image ")  # the first image's answer
    started = time.time()
    with pytest.raises(Cancelled):
        segment_dataset(str(images), str(labels), str(out), OPTIONS, progress=progress, cluster=TWO_WORKERS)
    assert time.time() - started < 60
    statuses = [e["status"] for e in json.loads((out / "manifest.json").read_text())["images"].values()]
    assert 1 <= statuses.count("done") < len(STEMS) and set(statuses) <= {"done", "pending"}
    assert not (out / "coco_instances.json").exists()
    summary = segment_dataset(str(images), str(labels), str(out), OPTIONS, cluster=TWO_WORKERS)  # resumed
    assert summary.skipped == statuses.count("done") and summary.done + summary.skipped == len(STEMS)
    same_files(local, out)


def readme_slurm_recipe() -> str:
    """The Python block of the README's SLURM recipe."""
    import textwrap

    blocks = (REPO / "README.md").read_text().split("```python\n")[1:]
    (block,) = [b.split("```")[0] for b in blocks if "SLURMCluster" in b]
    return textwrap.dedent(block)


def test_the_readme_slurm_recipe_with_dask_jobqueue(dataset, tmp_path, tiny_sam_checkpoint):
    """The README's SLURM recipe as written, but for the site's paths and sizes, with dask-jobqueue's own
    SLURMCluster; ``sbatch`` and ``scancel`` are stand-ins (tests/fake_slurm) that start the job scripts it writes
    on this machine. The run gets the cluster's scheduler, the workers join and every image is done."""
    pytest.importorskip("dask_jobqueue")
    root, images, labels, _ = dataset
    out, jobs = tmp_path / "out", tmp_path / "jobs"
    recipe = readme_slurm_recipe()
    for site, here in (("/shared/images", images), ("/shared/labels", labels), ("/shared/out", out),
                       ("/shared/sam_vit_b_01ec64.pth", tiny_sam_checkpoint), ("/shared/samrs", REPO),
                       ("cores=8", "cores=1"), ("jobs=10", "jobs=2"), ('memory="32GB"', 'memory="4GB"')):
        assert site in recipe, site  # the README still says it
        recipe = recipe.replace(site, str(here))
    env = dict(os.environ, PATH=f"{REPO / 'tests' / 'fake_slurm'}{os.pathsep}{os.environ['PATH']}",
               FAKE_SLURM_DIR=str(jobs), PYTHONPATH=str(REPO))
    try:
        run = subprocess.run([sys.executable, "-c", recipe], env=env, cwd=str(tmp_path), capture_output=True,
                             text=True, timeout=600)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    finally:
        for pid in jobs.glob("*.pid"):  # the jobs end with the cluster; any left would outlive the test
            subprocess.run(["scancel", pid.stem], env=env, check=False)
    assert f"Images: {len(STEMS)} — {len(STEMS)} segmented, 0 already done, 0 failed" in run.stdout, run.stdout
    assert "backend: SAM" in run.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert {e["status"] for e in manifest["images"].values()} == {"done"}
    scripts = sorted(jobs.glob("*.sh"))
    assert len(scripts) == 2
    script = scripts[0].read_text()
    assert "#SBATCH --gres=gpu:1" in script and f"export PYTHONPATH={REPO}" in script
    assert "distributed.cli.dask_worker" in script
