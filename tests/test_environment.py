"""The managed environment: where it lives and how the plugin finds it, the torch build chosen from recorded
``nvidia-smi`` outputs, the constraints built from QGIS's own Python, and real pip runs: the light profile
installed into a temporary managed environment and checked, the full profile resolved with ``pip install
--dry-run --report``, pip's failures recognised and named, and a cancelled install stopping pip."""
import json
import sys
from pathlib import Path

import pytest

from conftest import REPO
from samrs.samrs_qgis.environment import constraints, installer, locations, nvidia, profiles, status
from samrs.samrs_qgis.environment.interpreter import qgis_python
from samrs.samrs_qgis.errors import Cancelled, InputError
from samrs.samrs_qgis.progress import Progress

RECORDED = Path(__file__).parent / "data" / "nvidia-smi"


def recorded(name):
    return nvidia.parse_nvidia_smi((RECORDED / f"{name}.txt").read_text())


# -- the driver and the torch build ----------------------------------------------------------------

@pytest.mark.parametrize("name, driver, cuda, gpus, build", [
    ("rtx3060-driver550", "550.54.14", (12, 4), ("NVIDIA GeForce RTX 3060",), "cu126"),
    ("two-a100-driver570", "570.86.15", (12, 8), ("NVIDIA A100-SXM4-40GB",) * 2, "cu128"),
    ("rtx5090-driver580", "580.65.06", (13, 0), ("NVIDIA GeForce RTX 5090",), "cu130"),
    ("t4-driver520", "520.61.05", (11, 8), ("Tesla T4",), "cu118"),
    ("gtx1080-driver470", "470.182.03", (11, 4), ("NVIDIA GeForce ...",), "cpu"),
])
def test_the_torch_build_follows_the_driver_nvidia_smi_reports(name, driver, cuda, gpus, build):
    found = recorded(name)
    assert (found.driver_version, found.cuda_version, found.gpus) == (driver, cuda, gpus)
    chosen = nvidia.torch_build(found, "linux")
    assert chosen.name == build and chosen.index_url == f"https://download.pytorch.org/whl/{build}"
    assert chosen.cuda == (build != "cpu")
    if build == "cu118":  # the last torch with CUDA 11.8 builds
        assert "torch<2.8" in chosen.pins
    if build == "cpu":
        assert "older than any CUDA build" in chosen.reason and "update the NVIDIA driver" in chosen.reason
    assert nvidia.torch_build(found, "win32").name == build
    assert nvidia.torch_build(found, "darwin").name == "default"


def test_without_a_driver_the_cpu_build_and_onnx_runtimes_cpu_build():
    assert recorded("no-driver") is None
    assert nvidia.torch_build(None, "linux").name == "cpu"
    assert nvidia.torch_build(None, "darwin").index_url is None  # macOS: PyPI's one build
    steps, build = profiles.install_steps("light", None, "linux")
    assert build is None and steps[0].packages[0] == f"onnxruntime=={profiles.ONNXRUNTIME_VERSION}"
    steps, _ = profiles.install_steps("light", recorded("rtx3060-driver550"), "linux")
    assert steps[0].packages[0].startswith("onnxruntime-gpu==")
    assert profiles.install_steps("light", recorded("rtx3060-driver550"), "darwin")[0][0].packages[0].startswith(
        "onnxruntime==")
    if nvidia.detect() is None:  # this machine: no NVIDIA driver
        assert nvidia.torch_build(nvidia.detect(), sys.platform).name in ("cpu", "default")


def test_the_full_profile_installs_torch_first_then_builds_sam2_against_it():
    steps, build = profiles.install_steps("full", recorded("two-a100-driver570"), "linux")
    assert build.name == "cu128"
    assert steps[0].packages[:2] == profiles.TORCH and steps[0].index_url == build.index_url
    assert steps[1].pin_installed == ("torch", "torchvision") and not steps[1].index_url
    assert steps[2].packages == (profiles.SAM2,) and "--no-build-isolation" in steps[2].options
    assert steps[2].env["SAM2_BUILD_CUDA"] == "0"
    mirrored, _ = profiles.install_steps("full", None, "linux", torch_index_url="https://mirror.example/torch")
    assert mirrored[0].index_url == "https://mirror.example/torch"
    assert profiles.install_steps("full", None, "linux", torch_index_url="")[0][0].index_url is None
    with pytest.raises(InputError, match="Unknown profile 'medium'.*light, full"):
        profiles.install_steps("medium", None, "linux")


def test_the_profiles_pin_the_versions_the_engine_is_tested_with():
    """Each version a profile installs is the one of the development venv (requirements/venv.txt)."""
    tested = {}
    for line in (REPO / "requirements" / "venv.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            tested[constraints.normalized(name)] = version.strip()
    pinned = list(profiles.TORCH) + list(profiles.SAM_PACKAGES) + [profiles.OPENCV,
                                                                  f"onnxruntime=={profiles.ONNXRUNTIME_VERSION}"]
    for pin in pinned:
        name, version = pin.split("==")
        assert tested[constraints.normalized(name)] == version, pin
    sam2_version = next(line for line in (REPO / "requirements" / "constraints.txt").read_text().splitlines()
                        if line.startswith("sam2=="))
    assert profiles.SAM2 == sam2_version


# -- where it lives, how the plugin finds it --------------------------------------------------------

def test_the_managed_environment_lives_per_user_and_per_python_version(monkeypatch, tmp_path):
    monkeypatch.setenv("SAMRS_HOME", str(tmp_path / "home"))
    tag = f"py{sys.version_info[0]}.{sys.version_info[1]}"
    assert locations.managed_environment() == tmp_path / "home" / "envs" / tag
    assert locations.models_folder() == tmp_path / "home" / "models"
    monkeypatch.delenv("SAMRS_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert locations.data_home() == tmp_path / "xdg" / "samrs"
    assert locations.site_packages(Path("/e"), (3, 9)) == Path("/e/lib/python3.9/site-packages")


def test_the_plugin_puts_samrs_venv_then_the_managed_environment_then_its_venv_on_the_path(monkeypatch, tmp_path):
    monkeypatch.setenv("SAMRS_HOME", str(tmp_path / "home"))
    plugin = tmp_path / "plugin"
    named = tmp_path / "named"
    folders = [locations.site_packages(named), locations.site_packages(locations.managed_environment()),
               locations.site_packages(plugin / ".venv")]
    for folder in folders:
        folder.mkdir(parents=True)
    monkeypatch.setenv("SAMRS_VENV", str(named))
    system = "/usr/lib/python3/dist-packages"
    monkeypatch.setattr(sys, "path", ["/usr/lib/python311.zip", system, "/somewhere/else"])
    added = locations.add_environments_to_path(str(plugin))
    assert added == folders
    assert sys.path == ["/usr/lib/python311.zip"] + [str(f) for f in folders] + [system, "/somewhere/else"]
    assert locations.add_environments_to_path(str(plugin)) == []  # twice: nothing added again
    monkeypatch.delenv("SAMRS_VENV")
    assert locations.environment_folders(str(plugin)) == folders[1:]
    assert locations.environment_folders(None) == folders[1:2]


# -- QGIS's Python and its constraints ----------------------------------------------------------------

def test_qgis_python_is_found_and_its_own_packages_are_pinned(tmp_path):
    python = qgis_python()
    assert Path(python).resolve() == Path("/usr/bin/python3").resolve()  # the Python QGIS embeds here
    packages = constraints.installed_packages(python)
    lines = constraints.write_constraints(str(tmp_path / "c.txt"), packages, ["torch==2.14.1"])
    import numpy
    from osgeo import gdal

    assert f"numpy=={numpy.__version__}" in lines and f"GDAL=={gdal.__version__}" in lines
    assert any(line.lower().startswith("pyqt5==") for line in lines) and lines[-1] == "torch==2.14.1"
    assert not any(line.lower().startswith(("sympy", "typing-extensions")) for line in lines)  # torch needs newer
    assert (tmp_path / "c.txt").read_text().splitlines()[1:] == lines


# -- pip's failures, recognised ------------------------------------------------------------------------

PIP_OUTPUTS = {
    "no network": ("WARNING: Retrying (Retry(total=4, connect=None, read=None, redirect=None, status=None)) after "
                   "connection broken by 'NewConnectionError('<pip._vendor.urllib3.connection.HTTPSConnection object "
                   "at 0x7f>: Failed to establish a new connection: [Errno -3] Temporary failure in name "
                   "resolution')': /simple/onnxruntime/\nERROR: Could not find a version that satisfies the "
                   "requirement onnxruntime==1.32.0 (from versions: none)\nERROR: No matching distribution found "
                   "for onnxruntime==1.32.0", "could not be reached", "--proxy"),
    "ssl": ("Could not fetch URL https://pypi.org/simple/torch/: There was a problem confirming the ssl certificate: "
            "HTTPSConnectionPool(host='pypi.org', port=443): Max retries exceeded with url: /simple/torch/ (Caused "
            "by SSLError(SSLCertVerificationError(1, '[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
            "self signed certificate in certificate chain (_ssl.c:1006)')))", "SSL", "--cert"),
    "proxy": ("WARNING: Retrying ... after connection broken by 'ProxyError('Cannot connect to proxy.', "
              "NewConnectionError(...Connection refused))': /simple/torch/", "proxy refused", "--proxy"),
    "disk full": ("ERROR: Could not install packages due to an OSError: [Errno 28] No space left on device",
                  "disk is full", "SAMRS_HOME"),
    "no wheel": ("ERROR: Could not find a version that satisfies the requirement torch==2.14.1 (from versions: "
                 "2.0.1, 2.1.0)\nERROR: No matching distribution found for torch==2.14.1",
                 "no build for this Python", "other profile"),
}


@pytest.mark.parametrize("case", list(PIP_OUTPUTS))
def test_pips_failures_are_named_with_what_to_do(case):
    output, cause, fix = PIP_OUTPUTS[case]
    found = installer.recognise_failure(output, Path("/home/user/.local/share/samrs"))
    assert found is not None and cause in found[0] and fix in found[1], found
    assert installer.recognise_failure("ERROR: something nobody has seen", Path("/x")) is None


# -- real pip ----------------------------------------------------------------------------------------------

class Recorder(Progress):
    def __init__(self, cancel_after=None):
        self.lines, self.fractions, self.cancel_after = [], [], cancel_after

    def info(self, message):
        self.lines.append(message)

    def set_fraction(self, fraction):
        self.fractions.append(fraction)

    def is_cancelled(self):
        return self.cancel_after is not None and any(self.cancel_after in line for line in self.lines)


@pytest.fixture(scope="session")
def light_environment(tmp_path_factory):
    """The light profile installed by real pip into a managed environment of a temporary SAMRS_HOME."""
    home = tmp_path_factory.mktemp("samrs-home")
    environment = home / "envs" / locations.python_tag()
    progress = Recorder()
    result = installer.install(installer.InstallRequest("light", environment), progress)
    return home, result, progress


def test_the_light_profile_installs_and_is_checked_by_running_tiny_models(light_environment):
    home, result, progress = light_environment
    environment = result.environment
    assert result.torch_build is None and result.record["profile"] == "light"
    assert status.read_record(environment)["versions"]["onnxruntime"] == profiles.ONNXRUNTIME_VERSION
    components = result.status.components
    assert components["onnxruntime"]["ran"].startswith("a tiny graph") and "GrabCut" in components["opencv"]["ran"]
    assert not components["torch"]["ok"] and result.status.missing_for("light") == []
    assert components["numpy"]["detail"].startswith("/usr/lib/python3/dist-packages")  # QGIS's numpy, kept
    site = locations.site_packages(environment)
    assert (site / "onnxruntime").is_dir() and (site / "cv2").is_dir()
    assert not list(site.glob("numpy*")) and not list(site.glob("osgeo*"))  # QGIS's own stay QGIS's
    log = result.log_path.read_text()
    assert "Successfully installed" in log and "numpy==" in (environment / installer.CONSTRAINTS_NAME).read_text()
    assert progress.fractions == sorted(progress.fractions) and progress.fractions[-1] == 1.0
    assert any(line.startswith("== ONNX Runtime and OpenCV") for line in progress.lines)
    lines = result.status.lines()
    assert any(line.startswith(f"ONNX Runtime {profiles.ONNXRUNTIME_VERSION} (providers: ") for line in lines)
    assert "torch: not installed" in lines


def test_setup_env_status_shows_the_install(light_environment, monkeypatch, capsys):
    from samrs.samrs_qgis.cli import main

    home, result, _ = light_environment
    monkeypatch.setenv("SAMRS_HOME", str(home))
    assert main(["setup-env", "--status"]) == 0
    out = capsys.readouterr().out
    assert f"managed environment: {result.environment} (light profile installed" in out
    assert f"ONNX Runtime {profiles.ONNXRUNTIME_VERSION}" in out and "segment-anything: not installed" in out


def test_the_full_profile_resolves_without_replacing_qgis_packages(tmp_path, capsys):
    """torch's download is several GB: its resolution is tested (pip --dry-run --report), from pip's configured
    index (PyTorch's own index is not reachable here)."""
    from samrs.samrs_qgis.cli import main

    environment = tmp_path / "env"
    assert main(["setup-env", "--profile", "full", "--env", str(environment), "--dry-run",
                 "--torch-index-url", ""]) == 0
    reports = [Path(line.split(": ", 1)[1]) for line in capsys.readouterr().out.splitlines()
               if line.startswith("pip report: ")]
    # torch's step, the SAM packages' and Dask's (SAM 2 is built once torch is installed)
    assert [r.name for r in reports] == [f"samrs-dry-run-step{k}.json" for k in (1, 2, 4)]
    resolved = [{item["metadata"]["name"].lower(): item["metadata"]["version"] for item in json.loads(r.read_text())
                 ["install"]} for r in reports]
    assert resolved[0]["torch"] == "2.14.1" and resolved[0]["torchvision"] == "0.29.1"
    assert {"segment-anything", "segment-anything-hq", "opencv-python-headless", "hydra-core"} <= set(resolved[1])
    assert resolved[2]["distributed"] == resolved[2]["dask"] == "2026.8.0"
    everything = {name for r in resolved for name in r}
    assert not everything & {"numpy", "gdal", "pyqt5", "pyproj", "shapely", "rasterio", "fiona", "scipy"}
    assert not (environment / status.RECORD_NAME).exists()  # nothing installed: no record of an install


def test_a_package_with_no_build_fails_with_its_cause_and_leaves_no_record(light_environment, monkeypatch):
    home, result, _ = light_environment
    missing = profiles.InstallStep("a package", ("samrs-no-such-package==9.9.9",))
    monkeypatch.setattr(profiles, "install_steps", lambda *args: ([missing], None))
    with pytest.raises(installer.InstallFailed, match="(?s)no build for this Python .*other profile.*"
                                                      "samrs-no-such-package.*full log is in"):
        installer.install(installer.InstallRequest("light", result.environment))
    assert status.read_record(result.environment) is None  # no longer a finished install
    monkeypatch.undo()
    installer.install(installer.InstallRequest("light", result.environment))  # installing again restores it
    assert status.read_record(result.environment)["profile"] == "light"


def test_a_cancelled_install_stops_pip(tmp_path):
    progress = Recorder(cancel_after="== ONNX Runtime and OpenCV")
    environment = tmp_path / "env"
    with pytest.raises(Cancelled, match="cancelled"):
        installer.install(installer.InstallRequest("light", environment), progress)
    assert status.read_record(environment) is None
    assert "Stopped: the environment may be incomplete" in (environment / installer.LOG_NAME).read_text()
    assert not list(locations.site_packages(environment).glob("onnxruntime"))


# -- models in the per-user models folder --------------------------------------------------------------

def test_an_official_model_is_found_in_the_models_folder(monkeypatch, tmp_path, tiny_sam_checkpoint, capsys):
    """``--official-model`` / OFFICIAL_MODEL names a file of the models folder: missing, it says how to download
    it; there, it is the checkpoint; with another model file as well, both are refused."""
    import shutil

    from samrs.samrs_qgis.checkpoints import OFFICIAL_CHECKPOINTS
    from samrs.samrs_qgis.cli import main
    from samrs.samrs_qgis.settings import make_options

    monkeypatch.setenv("SAMRS_HOME", str(tmp_path / "home"))
    with pytest.raises(InputError, match=r"official model vit_b \(SAM vit_b \(sam_vit_b_01ec64.pth, 375 MB\)\) is not "
                                         r"downloaded yet.*samrs:downloadmodel.*download-checkpoints vit_b"):
        make_options({"official_model": "vit_b"})
    folder = locations.models_folder()
    folder.mkdir(parents=True)
    shutil.copy(tiny_sam_checkpoint, folder / OFFICIAL_CHECKPOINTS["vit_b"].file_name)  # stands in for the file
    options = make_options({"official_model": "vit_b"})
    assert options.checkpoint == str(folder / "sam_vit_b_01ec64.pth") and options.backend == "sam"
    with pytest.raises(InputError, match="either an official model .* or a model file .*not both"):
        make_options({"official_model": "vit_b", "checkpoint": tiny_sam_checkpoint})
    with pytest.raises(SystemExit):
        main(["segment", "x.tif", "y.gpkg", "--out", str(tmp_path / "o"), "--official-model", "vit_x"])
    assert "vit_x" in capsys.readouterr().err


def test_the_checks_tiny_onnx_graph_is_a_valid_model_computing_its_softmax():
    """The probe writes its ONNX graph by hand (no model file in the plugin, no onnx package in the light profile):
    onnx's checker accepts it and ONNX Runtime computes softmax(x W)."""
    import numpy as np
    import onnx
    import onnxruntime

    from samrs.samrs_qgis.environment.probe import tiny_onnx_model

    model = onnx.load_from_string(tiny_onnx_model())
    onnx.checker.check_model(model, full_check=True)
    assert [n.op_type for n in model.graph.node] == ["MatMul", "Softmax"]
    x = np.array([[0.5, -1.0, 2.0, 0.25]], dtype=np.float32)
    session = onnxruntime.InferenceSession(tiny_onnx_model(), providers=["CPUExecutionProvider"])
    logits = x @ (np.arange(8, dtype=np.float32).reshape(4, 2) / 8)
    expected = np.exp(logits) / np.exp(logits).sum()
    assert np.allclose(session.run(None, {"x": x})[0], expected, atol=1e-6)
