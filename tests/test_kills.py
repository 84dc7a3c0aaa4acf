"""Runs killed or terminated at the worst moment lose nothing, with real processes and real signals.

In 0.2.0 a SIGKILL while the outputs were moved into place left a mix of old and new files, the hidden
``.…partial-*`` files and the scratch folder stayed forever, and SIGTERM ended the CLI silently with 143.
"""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import rasterio

import tools_data as td
from conftest import REPO
from support import read_features


def cli_env(tmp_root):
    """The CLI's environment with its own temporary folder, so that scratch folders can be watched."""
    return dict(os.environ, TMPDIR=str(tmp_root), XDG_CACHE_HOME=str(tmp_root / "cache"))


def settings_of(path) -> dict:
    with rasterio.open(path) as ds:
        return json.loads(ds.tags()["SAMRS_SETTINGS"])


def leftovers(folder):
    return sorted(n for n in os.listdir(folder) if ".partial-" in n or n.startswith(".samrs-commit-"))


def scratch_folders(tmp_root):
    return sorted(n for n in os.listdir(tmp_root) if n.startswith("samrs-"))


KILL_DURING_COMMIT = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, sys.argv[1])
    real_replace = os.replace

    def replace_then_die(src, dst):  # the first output moved into place, then SIGKILL: no cleanup can run
        real_replace(src, dst)
        if ".partial-" in os.path.basename(src):
            os.kill(os.getpid(), signal.SIGKILL)

    os.replace = replace_then_die
    from samrs_qgis.cli import main
    sys.exit(main(sys.argv[2:]))
""")


def test_a_run_killed_while_moving_its_outputs_is_finished_by_the_next_run(tmp_path):
    raster = td.scene_raster(tmp_path / "scene.tif")
    boxes = td.scene_boxes(tmp_path / "boxes.gpkg")
    out, tmp_root = tmp_path / "out", tmp_path / "tmp"
    tmp_root.mkdir()
    env = cli_env(tmp_root)
    args = ["segment", raster, boxes, "--out-dir", out, "--class-field", "label", "--no-cache", "--quiet"]
    first = subprocess.run([sys.executable, "-m", "samrs_qgis", *args], cwd=REPO, env=env, capture_output=True,
                           text=True)
    assert first.returncode == 0, first.stderr
    outputs = {name: out / f"scene_{name}" for name in ("instances.tif", "semantic.tif", "masks.gpkg")}
    assert settings_of(outputs["instances.tif"])["fill_holes"] is False

    script = tmp_path / "kill_during_commit.py"
    script.write_text(KILL_DURING_COMMIT)
    killed = subprocess.run([sys.executable, str(script), str(REPO), *args, "--fill-holes"], cwd=REPO, env=env,
                            capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL
    assert any(n.startswith(".samrs-commit-") for n in os.listdir(out))  # the journal of the cut-short commit
    assert any(".partial-" in n for n in os.listdir(out)) and scratch_folders(tmp_root)
    fill = [settings_of(outputs[n])["fill_holes"] for n in ("instances.tif", "semantic.tif")]
    assert fill == [True, False] or fill == [False, True]  # a mixed set, as a kill leaves it

    # the next run into the folder (here one writing another file) finishes the commit and cleans up
    other = subprocess.run([sys.executable, "-m", "samrs_qgis", "segment", raster, boxes, "--polygons",
                            out / "other.gpkg", "--no-cache", "--quiet"], cwd=REPO, env=env, capture_output=True,
                           text=True)
    assert other.returncode == 0, other.stderr
    assert leftovers(out) == [] and scratch_folders(tmp_root) == []
    assert [settings_of(outputs[n])["fill_holes"] for n in ("instances.tif", "semantic.tif")] == [True, True]
    assert len(read_features(outputs["masks.gpkg"], layer="masks")) == len(td.DISCS)


def test_sigterm_cleans_up_and_says_so(tmp_path):
    from support import write_boxes, pixel_box

    raster = td.scene_raster(tmp_path / "scene.tif")
    many = [pixel_box(td.TRANSFORM, *b) for b in td.disc_bounds()] * 40  # GrabCut takes seconds on these
    boxes = write_boxes(tmp_path / "boxes.gpkg", many)
    out, tmp_root = tmp_path / "out", tmp_path / "tmp"
    tmp_root.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "samrs_qgis", "segment", raster, boxes, "--out-dir", out,
                             "--no-cache", "--quiet"], cwd=REPO, env=cli_env(tmp_root), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not scratch_folders(tmp_root) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)  # the run is working once its scratch folder exists
    assert proc.poll() is None, "the run ended before it could be terminated"
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr
    assert "terminated; no output was written" in stderr and "Traceback" not in stderr
    assert not out.exists() or os.listdir(out) == []
    assert scratch_folders(tmp_root) == []


def test_partial_files_of_a_live_process_are_left_alone(tmp_path):
    from samrs.samrs_qgis.leftovers import recover_folder

    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        mine = tmp_path / f".x.partial-{live.pid}-0123abcd.tif"
        dead = tmp_path / ".x.partial-999999999-0123abcd.tif"
        foreign = tmp_path / ".x.partial-notours.tif"
        for path in (mine, dead, foreign):
            path.write_bytes(b"data")
        recover_folder(str(tmp_path))
        assert mine.exists() and foreign.exists() and not dead.exists()
    finally:
        live.kill()
        live.wait()
