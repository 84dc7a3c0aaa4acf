"""Test set-up: real QGIS (headless), the plugin imported as the package ``samrs`` (the folder name QGIS
gives it), and a tiny but real SAM checkpoint.

The repository root is never put on ``sys.path``: its ``processing/`` folder would shadow QGIS's own
``processing`` package. The plugin is reached through a folder holding a ``samrs`` link to the checkout,
exactly as QGIS finds it through ``QGIS_PLUGINPATH``.
"""
import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PLUGINS_DIR = Path(tempfile.mkdtemp(prefix="samrs-test-plugins-"))
(PLUGINS_DIR / "samrs").symlink_to(REPO)

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
_runtime = Path(tempfile.gettempdir()) / f"samrs-test-runtime-{os.getuid()}"
_runtime.mkdir(mode=0o700, exist_ok=True)
os.environ["XDG_RUNTIME_DIR"] = str(_runtime)
os.environ["QGIS_PLUGINPATH"] = str(PLUGINS_DIR)
QGIS_CONFIG = Path(tempfile.mkdtemp(prefix="samrs-test-qgis-config-"))
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="samrs-test-cache-")  # embedding cache stays out of ~
os.environ["QGIS_CUSTOM_CONFIG_PATH"] = str(QGIS_CONFIG)
os.environ["SAMRS_HOME"] = tempfile.mkdtemp(prefix="samrs-test-home-")  # not the user's environment or models
for _scratch in (PLUGINS_DIR, QGIS_CONFIG, Path(os.environ["XDG_CACHE_HOME"]), Path(os.environ["SAMRS_HOME"])):
    atexit.register(shutil.rmtree, _scratch, ignore_errors=True)

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO]
sys.path.insert(0, str(PLUGINS_DIR))
sys.path.append("/usr/share/qgis/python/plugins")  # QGIS's Processing framework

# Tiny SAM: segment-anything's own classes with a small image encoder (the prompt encoder and
# mask decoder are the standard ones). Window size stays 14 as in segment-anything's builder.
TINY_SAM = dict(encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2, encoder_global_attn_indexes=[1])


@pytest.fixture(scope="session")
def tiny_sam_checkpoint(tmp_path_factory):
    """Path of a saved state dict of a tiny, randomly initialised (seeded) SAM."""
    import torch
    from segment_anything.build_sam import _build_sam

    torch.manual_seed(0)
    model = _build_sam(**TINY_SAM, checkpoint=None)
    path = tmp_path_factory.mktemp("sam") / "sam_tiny_test.pth"
    torch.save(model.state_dict(), path)
    return str(path)


# Tiny SAM 2: the sam2 package's SAM 2.1 hiera_t (its smallest official model) with random weights.
TINY_SAM2_CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"


@pytest.fixture(scope="session")
def tiny_sam2_checkpoint(tmp_path_factory):
    """Path of a SAM 2.1 hiera_t built by the sam2 package from its config with random weights (torch seed 0),
    saved as the official files are (``{"model": state_dict}``)."""
    import torch
    from sam2.build_sam import build_sam2

    torch.manual_seed(0)
    model = build_sam2(TINY_SAM2_CONFIG, ckpt_path=None, device="cpu", apply_postprocessing=False)
    path = tmp_path_factory.mktemp("sam2") / "sam2.1_hiera_t.pt"
    torch.save({"model": model.state_dict()}, path)
    return str(path)


@pytest.fixture(scope="session")
def qgis_app():
    """A headless QgsApplication with Processing initialised and the plugin's provider registered."""
    from qgis.core import QgsApplication

    app = QgsApplication([], False)
    app.initQgis()
    from processing.core.Processing import Processing

    Processing.initialize()
    import samrs

    plugin = samrs.classFactory(None)
    plugin.initProcessing()
    yield app
    plugin.unload()


@pytest.fixture(scope="session")
def qgis_process():
    """Run ``scripts/qgis-process`` (which calls ``qgis_process.bin``) with the given arguments."""

    def run(*args, timeout=600):
        return subprocess.run([str(REPO / "scripts" / "qgis-process"), *map(str, args)], capture_output=True,
                              text=True, timeout=timeout, cwd=tempfile.gettempdir())

    return run


@pytest.fixture
def dota(tmp_path):
    """A folder of DOTA labelTxt files (tools_data.DOTA_A with a malformed line, DOTA_B)."""
    import tools_data

    folder = tmp_path / "labelTxt"
    folder.mkdir()
    (folder / "a.txt").write_text(tools_data.DOTA_A)
    (folder / "b.txt").write_text(tools_data.DOTA_B)
    return folder
