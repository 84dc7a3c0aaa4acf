"""Installing the plugin: the zip for "Install from ZIP", and `make deploy` into a profile."""
import configparser
import os
import subprocess
import zipfile

from conftest import REPO


def test_package_zip_installs_and_loads_in_qgis_process(tmp_path):
    target = tmp_path / "samrs.zip"
    subprocess.run(["bash", str(REPO / "scripts" / "package.sh"), str(target)], check=True, capture_output=True)
    with zipfile.ZipFile(target) as zf:
        names = zf.namelist()
        assert {n.split("/")[0] for n in names} == {"samrs"}  # one top folder, named as the plugin
        for required in ("samrs/__init__.py", "samrs/metadata.txt", "samrs/icons/samrs.svg",
                         "samrs/processing/segment_boxes.py", "samrs/samrs_qgis/pipeline.py"):
            assert required in names
        assert not any("/tests/" in n or "__pycache__" in n or "/.venv/" in n for n in names)
        zf.extractall(tmp_path / "plugins")
    config = tmp_path / "config"
    env = dict(os.environ, QGIS_PLUGINPATH=str(tmp_path / "plugins"), QGIS_CUSTOM_CONFIG_PATH=str(config))
    enable = subprocess.run(["/usr/bin/qgis_process.bin", "plugins", "enable", "samrs"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert enable.returncode == 0, enable.stdout + enable.stderr
    listed = subprocess.run(["/usr/bin/qgis_process.bin", "list"], env=env, capture_output=True, text=True,
                            timeout=120)
    assert "samrs:segmentboxes" in listed.stdout


def test_make_deploy_links_the_checkout_and_enables_it(tmp_path):
    profile = tmp_path / "QGIS3" / "profiles" / "default"
    result = subprocess.run(["make", "-s", "deploy", f"PROFILE_DIR={profile}"], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    link = profile / "python" / "plugins" / "samrs"
    assert link.is_symlink() and link.resolve() == REPO
    ini = configparser.ConfigParser()
    ini.read(profile / "QGIS" / "QGIS3.ini")
    assert ini["PythonPlugins"]["samrs"] == "true"
