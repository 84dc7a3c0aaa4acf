"""Installing the plugin: the zip for "Install from ZIP" (built by `make package` on a fresh clone, checked
against the QGIS plugin repository's rules, holding every module the plugin imports), and `make deploy` into
a profile."""
import ast
import configparser
import io
import re
import subprocess
import zipfile
from pathlib import Path
from typing import Dict, Iterator, Optional, Sequence, Tuple
from urllib.parse import urlparse

from conftest import REPO

PLUGIN = "samrs"  # the folder QGIS installs the plugin into: the package name of its imports
CONTENTS = REPO / "scripts" / "package-contents.txt"
# Where QGIS enters the plugin: classFactory in __init__.py, which imports the plugin object.
ENTRY_POINTS = ("__init__.py", "processing/plugin.py")


def package_contents(path: Path = CONTENTS) -> list:
    """The ZIP's top-level entries, as scripts/package.sh reads them (comments and blank lines left out)."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line]


def build_zip(target: Path, cwd: Path = REPO) -> Path:
    result = subprocess.run(["bash", str(cwd / "scripts" / "package.sh"), str(target)], cwd=cwd,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return target


# -- the plugin's imports -------------------------------------------------------------------------

def _module_file(root: Path, parts: Sequence[str]) -> Optional[Path]:
    """The file of plugin module ``parts`` (relative to the plugin folder): a .py file or a package."""
    if not parts:
        return root / "__init__.py" if (root / "__init__.py").is_file() else None
    base = root.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _package_of(root: Path, path: Path) -> Tuple[str, ...]:
    """The package (parts relative to the plugin folder) that relative imports in ``path`` start from."""
    return path.relative_to(root).parent.parts


def _dynamic_name(call: ast.Call) -> Optional[str]:
    """The name given to ``importlib.import_module`` / ``__import__``: a string, or the tail of an f-string
    after its last placeholder (``f"{parent}.samrs_previews"`` gives ``.samrs_previews``)."""
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
    if name not in ("import_module", "__import__") or not call.args:
        return None
    arg = call.args[0]
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    if isinstance(arg, ast.JoinedStr):
        tail = []
        for piece in arg.values:
            if isinstance(piece, ast.FormattedValue):
                tail = ["."]  # whatever the placeholder holds is the plugin's package (or above it)
            elif isinstance(piece, ast.Constant):
                tail.append(piece.value)
        return "".join(tail)
    return None


def imported_modules(root: Path, path: Path) -> Iterator[Tuple[Tuple[str, ...], int]]:
    """(module parts relative to the plugin folder, line) for every plugin import in ``path``: relative
    imports anywhere in the file (also inside functions), absolute ``samrs.…`` imports, and names given to
    ``importlib.import_module`` that are top-level modules of the plugin."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = _package_of(root, path)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                up = node.level - 1
                assert up <= len(package), f"{path}:{node.lineno}: relative import leaves the plugin folder"
                yield from _from_import(root, package[:len(package) - up], node.module, node)
            elif node.module and node.module.split(".")[0] == PLUGIN:
                yield from _from_import(root, (), node.module.partition(".")[2] or None, node)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == PLUGIN:
                    yield tuple(parts[1:]), node.lineno
        elif isinstance(node, ast.Call):
            name = _dynamic_name(node)
            if not name:
                continue
            parts = tuple(p for p in name.lstrip(".").split(".") if p)
            if parts and parts[0] == PLUGIN:
                parts = parts[1:]
            if parts and _module_file(root, parts[:1]) is not None:  # a top-level module of the plugin
                yield parts, node.lineno


def _from_import(root, base, module, node):
    parts = tuple(base) + (tuple(module.split(".")) if module else ())
    yield parts, node.lineno
    for alias in node.names:  # ``from .pkg import module`` imports a module too
        if alias.name != "*" and _module_file(root, parts + (alias.name,)) is not None:
            yield parts + (alias.name,), node.lineno


def reachable_files(root: Path, entry_points: Sequence[str] = ENTRY_POINTS) -> Dict[Path, str]:
    """Every plugin .py file the plugin can import, starting at its entry points, with where it is
    imported from (``file:line``); each module brings its packages' ``__init__.py`` with it."""
    found = {root / e: "entry point" for e in entry_points}
    queue = list(found)
    while queue:
        path = queue.pop()
        for parts, line in imported_modules(root, path):
            where = f"{path.relative_to(root)}:{line}"
            target = _module_file(root, parts)
            assert target is not None, f"{where} imports {'.'.join(parts)}, which is no module of the plugin"
            packages = [_module_file(root, parts[:i]) for i in range(len(parts))]
            for file in [p for p in packages if p is not None] + [target]:
                if file not in found:
                    found[file] = where
                    queue.append(file)
    return found


def unpackaged(root: Path, entries: Sequence[str]) -> Dict[str, str]:
    """Plugin files the plugin imports that lie under none of the package entries: {file: imported from}."""
    return {str(path.relative_to(root)): where for path, where in reachable_files(root).items()
            if path.relative_to(root).parts[0] not in entries}


def test_the_import_walk_follows_lazy_and_dynamic_imports(tmp_path):
    """On a small plugin: imports inside functions, ``from ..pkg import module``, ``from . import x``, an
    absolute ``samrs.…`` import and an f-string ``import_module`` are followed; a folder the plugin
    imports but the list leaves out is reported, and an import of a missing module is an error."""
    root = tmp_path / PLUGIN
    files = {
        "__init__.py": "import os\n\ndef classFactory(iface):\n    from .processing.plugin import Plugin\n"
                       "    return Plugin(iface)\n",
        "processing/__init__.py": "",
        "processing/plugin.py": "from qgis.core import QgsApplication\nfrom . import provider\n\nclass Plugin:\n"
                                "    def show(self):\n        from ..gui.dock import Dock\n",
        "processing/provider.py": "import samrs.engine.core\n",
        "gui/__init__.py": "",
        "gui/dock.py": "import importlib\n\ndef render():\n    parent = __package__.rpartition('.')[0]\n"
                       "    return importlib.import_module(f'{parent}.previews').draw\n"
                       "importlib.import_module('qgis.core')\n",
        "engine/__init__.py": "",
        "engine/core.py": "from .helpers import tools\n",
        "engine/helpers/__init__.py": "",
        "engine/helpers/tools.py": "",
        "engine/unused.py": "",
        "previews/__init__.py": "from .render import draw\n",
        "previews/render.py": "def draw():\n    pass\n",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    found = {str(p.relative_to(root)) for p in reachable_files(root)}
    assert found == set(files) - {"engine/unused.py"}
    missing = unpackaged(root, ["__init__.py", "processing", "engine"])
    assert set(missing) == {"gui/__init__.py", "gui/dock.py", "previews/__init__.py", "previews/render.py"}
    assert missing["gui/dock.py"] == "processing/plugin.py:6"
    assert missing["previews/__init__.py"] == "gui/dock.py:5"
    (root / "engine" / "core.py").write_text("def f():\n    from .gone import x\n")
    try:
        reachable_files(root)
    except AssertionError as exc:
        assert "engine/core.py:2 imports engine.gone" in str(exc)
    else:
        raise AssertionError("an import of a missing module went unnoticed")


def test_every_module_the_plugin_imports_is_in_the_zip(tmp_path):
    entries = package_contents()
    assert not unpackaged(REPO, entries), "imported but not listed in scripts/package-contents.txt"
    reached = reachable_files(REPO)
    assert REPO / "gui" / "review_dock.py" in reached and REPO / "samrs_previews" / "render.py" in reached
    tracked = set(subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True,
                                 check=True).stdout.splitlines())
    with zipfile.ZipFile(build_zip(tmp_path / "samrs.zip")) as zf:
        names = set(zf.namelist())
    for path in reached:
        rel = path.relative_to(REPO).as_posix()
        if rel in tracked:  # a module not yet added to git is not packaged until it is
            assert f"{PLUGIN}/{rel}" in names, rel
    for entry in entries:
        assert f"{PLUGIN}/{entry}" in names or any(n.startswith(f"{PLUGIN}/{entry}/") for n in names), entry


# -- the QGIS plugin repository's rules -----------------------------------------------------------

# https://plugins.qgis.org/docs/publish and the repository's upload validator (qgis/QGIS-Django,
# plugins/validator.py): mandatory metadata, a LICENSE file, one top folder holding __init__.py, no
# binaries, no .pyc/__pycache__/.git, at most 25 MB.
REQUIRED_METADATA = ("name", "qgisMinimumVersion", "description", "about", "version", "author", "email",
                     "repository", "tracker")
RECOMMENDED_METADATA = ("homepage",)
BINARY_SUFFIXES = (".so", ".pyd", ".dll", ".exe", ".dylib", ".pyc", ".pyo", ".o", ".a", ".lib", ".bin", ".pth",
                   ".pt", ".onnx", ".whl", ".egg", ".zip", ".jar")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".ico", ".bmp", ".webp")
GPL2 = Path("/usr/share/common-licenses/GPL-2")


def check_plugin_repository_rules(zip_path: Path) -> configparser.SectionProxy:
    """Assert the QGIS plugin repository's upload rules on a plugin ZIP; returns its [general] metadata."""
    assert zip_path.stat().st_size <= 25_000_000
    with zipfile.ZipFile(zip_path) as zf:
        assert zf.testzip() is None
        names = zf.namelist()
        tops = {n.split("/")[0] for n in names}
        assert tops == {PLUGIN} and re.match(r"^[A-Za-z][A-Za-z0-9-_]+$", PLUGIN)  # one top folder
        files = [n for n in names if not n.endswith("/")]
        for name in names:
            parts = name.rstrip("/").split("/")
            assert ".." not in parts and not name.startswith("/"), name
            assert not any(p.startswith(".") for p in parts), f"hidden file or folder: {name}"
            assert not {"__pycache__", "__MACOSX", ".git", "tests", ".venv"} & set(parts), name
        for name in files:
            assert not name.lower().endswith(BINARY_SUFFIXES), f"binary file: {name}"
            if not name.lower().endswith(IMAGE_SUFFIXES):
                assert b"\0" not in zf.read(name), f"binary content (NUL bytes): {name}"
        for required in ("__init__.py", "metadata.txt", "LICENSE"):
            assert f"{PLUGIN}/{required}" in names, required
        licence = zf.read(f"{PLUGIN}/LICENSE").decode("utf-8")
        metadata_text = zf.read(f"{PLUGIN}/metadata.txt").decode("utf-8")
        parser = configparser.ConfigParser()  # as the repository reads it (interpolation included)
        parser.optionxform = str
        parser.read_file(io.StringIO(metadata_text))
        general = parser["general"]
        values = dict(general.items())  # every value read once: a stray '%' fails here as it does on upload
        for key in REQUIRED_METADATA + RECOMMENDED_METADATA:
            assert values.get(key, "").strip(), f"metadata.txt lacks {key}"
        assert "/" not in values["author"]
        for key in ("tracker", "repository", "homepage"):
            url = urlparse(values[key])
            assert url.scheme in ("http", "https") and url.netloc, (key, values[key])
        assert f"{PLUGIN}/{values['icon']}" in names
        assert re.fullmatch(r"\d+\.\d+(\.\d+)?", values["qgisMinimumVersion"])
        assert values["hasProcessingProvider"] == "yes"
        assert values["license"] == "GPL-2.0-or-later" and "GPL-2.0-or-later" in values["about"]
    assert "SPDX-License-Identifier: GPL-2.0-or-later" in licence
    if GPL2.is_file():  # Debian's copy: the licence text is shipped unchanged
        assert licence.endswith(GPL2.read_text(encoding="utf-8"))
    else:
        assert "GNU GENERAL PUBLIC LICENSE" in licence and "Version 2, June 1991" in licence
    return general


def test_make_package_on_a_fresh_clone_follows_the_plugin_repository_rules(tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True, capture_output=True)
    assert not (clone / "dist").exists()
    result = subprocess.run(["make", "-s", "package"], cwd=clone, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    zips = list((clone / "dist").glob("*.zip"))
    assert len(zips) == 1 and f"package: {zips[0]}" in result.stdout
    metadata = check_plugin_repository_rules(zips[0])
    assert zips[0].name == f"{PLUGIN}-{metadata['version']}.zip"  # the zip is named by the version inside
    with zipfile.ZipFile(zips[0]) as zf:
        names = set(zf.namelist())
    listed = package_contents(clone / "scripts" / "package-contents.txt")
    assert {n.split("/")[1] for n in names if n.count("/") >= 1 and n.split("/")[1]} == set(listed)
    # a relative target from another folder lands where it was asked for, its folders made
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = subprocess.run(["bash", str(clone / "scripts" / "package.sh"), "out/nested/samrs.zip"], cwd=elsewhere,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (elsewhere / "out" / "nested" / "samrs.zip").is_file()


def test_package_refuses_an_entry_git_does_not_track(tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True, capture_output=True)
    with open(clone / "scripts" / "package-contents.txt", "a") as f:
        f.write("nowhere\n")
    result = subprocess.run(["bash", "scripts/package.sh", str(tmp_path / "x.zip")], cwd=clone,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "'nowhere'" in result.stderr and not (tmp_path / "x.zip").exists()


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


def test_engine_version_is_the_plugins():
    from samrs.samrs_qgis import __version__

    metadata = configparser.ConfigParser(interpolation=None)
    metadata.read(REPO / "metadata.txt", encoding="utf-8")
    assert __version__ == metadata["general"]["version"]
