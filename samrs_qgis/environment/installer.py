"""Installing a profile into the managed environment with pip: progress, a log, cancellation, recognised failures.

The environment is a virtual environment made from QGIS's own interpreter with ``--system-site-packages`` (so
pip sees, and the constraints keep, what QGIS has); each profile step is one ``pip install`` under the
constraints file; the end is a check in a fresh QGIS Python that imports everything and runs tiny models. The
record of a good install (``samrs-environment.json``) is removed when an install starts and written only when
it ended well, so a failed, cancelled or killed install never looks finished.
"""
from __future__ import annotations

import datetime
import importlib
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from ..errors import Cancelled, SamrsError
from ..progress import Progress
from . import constraints, nvidia, profiles, status
from .interpreter import child_environment, qgis_python
from .locations import add_environments_to_path, managed_environment, site_packages

LOG_NAME = "samrs-install.log"
CONSTRAINTS_NAME = "samrs-constraints.txt"
DETECT = "detect"  # InstallRequest.driver: ask nvidia-smi

# (pattern in pip's output, the cause, what to do), first match wins: connection failures come first, as pip
# also reports "no matching distribution" when it could not reach the index at all.
FAILURES: Tuple[Tuple[str, str, str], ...] = (
    (r"No space left on device|\[Errno 28\]", "the disk is full",
     "Free some space on the disk of {folder} (the full profile needs about 8 GB while it installs), or set "
     "the SAMRS_HOME environment variable to a folder on another disk, and install again."),
    (r"SSLError|CERTIFICATE_VERIFY_FAILED|certificate verify failed",
     "a secure (SSL) connection to the package index failed",
     "A proxy or firewall that inspects HTTPS needs its certificate: give it in the extra pip options as "
     "`--cert /path/to/certificate.pem` (or `--trusted-host HOST`), and install again."),
    (r"ProxyError|Cannot connect to proxy|407 Proxy Authentication", "the proxy refused the connection",
     "Give the proxy in the extra pip options as `--proxy http://user:password@host:port`, and install again."),
    (r"Failed to establish a new connection|Temporary failure in name resolution|Name or service not known|"
     r"Network is unreachable|Connection refused|Read timed out|ConnectTimeoutError|Could not fetch URL",
     "the package index could not be reached",
     "Check the internet connection (behind a proxy, give it in the extra pip options as `--proxy "
     "http://host:port`), or give the URL of a package index that can be reached, and install again."),
    (r"No matching distribution found|Could not find a version that satisfies the requirement",
     "a package has no build for this Python ({python}) on this system ({platform})",
     "Pick the other profile, or a QGIS whose Python is supported by the package named above, or give a "
     "package index that has a build for it."),
    (r"Permission denied|\[Errno 13\]", "a file or folder could not be written",
     "Check that {folder} can be written by this user, or set SAMRS_HOME to a folder that can."),
)


@dataclass
class InstallRequest:
    """What to install where. ``environment`` None: the managed environment of this Python version;
    ``index_url``: the package index for every step but torch's (None: pip's configured one);
    ``torch_index_url``: where torch comes from (None: the build's own PyTorch index; "" pip's configured one);
    ``pip_options``: added to every pip run (``--proxy``, ``--cert`` ...); ``dry_run``: resolve, install nothing
    (``pip install --dry-run --report``); ``driver``: :data:`DETECT`, or the NVIDIA driver to plan for (None:
    none)."""

    profile: str
    environment: Optional[Path] = None
    index_url: Optional[str] = None
    torch_index_url: Optional[str] = None
    pip_options: Sequence[str] = ()
    dry_run: bool = False
    python: Optional[str] = None
    driver: object = DETECT


@dataclass
class InstallResult:
    environment: Path
    log_path: Path
    torch_build: Optional[nvidia.TorchBuild]
    status: Optional[status.EnvironmentStatus] = None
    reports: List[Path] = field(default_factory=list)  # dry run: pip's JSON report per step
    record: Optional[dict] = None


class InstallFailed(SamrsError):
    """pip (or the check after it) failed; the message names the cause when it was recognised, and the log."""


def venv_python(environment: Path) -> Path:
    return Path(environment) / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def recognise_failure(output: str, folder: Path, python: str = "", platform: str = sys.platform):
    """(cause, what to do) for pip's ``output``, or None when no known cause is in it."""
    for pattern, cause, fix in FAILURES:
        if re.search(pattern, output):
            values = {"folder": folder, "python": python or f"Python {sys.version_info[0]}.{sys.version_info[1]}",
                      "platform": platform}
            return cause.format(**values), fix.format(**values)
    return None


class Installer:
    """One install of ``request``; :meth:`run` does it, reporting to ``progress`` (fractions, and every pip line
    as info) and stopping when ``progress`` is cancelled."""

    def __init__(self, request: InstallRequest, progress: Optional[Progress] = None):
        profiles.find_profile(request.profile)
        self.request = request
        self.progress = progress or Progress()
        self.environment = Path(request.environment or managed_environment())
        self.log_path = self.environment / LOG_NAME
        self._log = None

    # -- the run -------------------------------------------------------------------------------------
    def run(self) -> InstallResult:
        request = self.request
        python = request.python or qgis_python()
        driver = nvidia.detect() if request.driver == DETECT else request.driver
        steps, build = profiles.install_steps(request.profile, driver, sys.platform, request.torch_index_url)
        self.environment.mkdir(parents=True, exist_ok=True)
        record_path = self.environment / status.RECORD_NAME
        if record_path.exists() and not request.dry_run:
            record_path.unlink()  # the environment is about to change: not a finished install until the end
        result = InstallResult(self.environment, self.log_path, build)
        with open(self.log_path, "w", encoding="utf-8") as self._log:
            self._say(f"Installing the {request.profile} profile into {self.environment} "
                      f"({'dry run, ' if request.dry_run else ''}QGIS's Python {python})")
            if driver is not None:
                self._say(f"Found {driver.describe()}")
            if build is not None:
                self._say(f"torch: {build.name} build ({build.reason})")
            self._make_venv(python)
            self.progress.set_fraction(0.05)
            qgis_packages = constraints.installed_packages(python)
            constraints_path = self.environment / CONSTRAINTS_NAME
            pins = constraints.write_constraints(str(constraints_path), qgis_packages)
            self._say(f"Kept as QGIS has them: {', '.join(pins) or 'nothing found to keep'}")
            for i, step in enumerate(steps):
                span = (0.08 + 0.8 * i / len(steps), 0.08 + 0.8 * (i + 1) / len(steps))
                report = self._pip_step(step, constraints_path, qgis_packages, span, i)
                if report:
                    result.reports.append(report)
            if request.dry_run:
                self.progress.set_fraction(1.0)
                self._say("Dry run: nothing was installed.")
                return result
            self._say("Checking: importing everything in a new QGIS Python and running tiny models ...")
            result.status = status.probe(python, [site_packages(self.environment)], run=True)
            for line in result.status.lines():
                self._say("  " + line)
            missing = result.status.missing_for(request.profile)
            if missing:
                raise InstallFailed(f"The {request.profile} profile was installed, but the check failed for: "
                                    f"{', '.join(status.COMPONENTS[m][0] for m in missing)} ("
                                    + "; ".join(result.status.components[m].get("error", "") for m in missing)
                                    + f"). The full log is in {self.log_path}.")
            result.record = {"profile": request.profile, "torch_build": build.name if build else None,
                             "python": python, "installed": datetime.datetime.now(datetime.timezone.utc)
                             .isoformat(timespec="seconds"),
                             "versions": {name: c.get("version") for name, c in result.status.components.items()
                                          if c.get("ok")}}
            status.write_record(self.environment, result.record)
            if self.environment == managed_environment():  # this Python's own: usable now, without a restart
                importlib.invalidate_caches()
                add_environments_to_path()
            self._say(f"Done: the {request.profile} profile works.")
            self.progress.set_fraction(1.0)
        return result

    # -- steps ---------------------------------------------------------------------------------------
    def _make_venv(self, python: str) -> None:
        if venv_python(self.environment).exists():
            self._say(f"Using the environment in {self.environment}")
            return
        self._say(f"Creating a virtual environment from {python} ...")
        code, output = self._run([python, "-m", "venv", "--system-site-packages", str(self.environment)],
                                 child_environment(), (0.0, 0.05))
        if code:
            hint = ("On Debian or Ubuntu install the package python3-venv (`sudo apt install python3-venv`)."
                    if "ensurepip" in output or "venv" in output else "")
            raise InstallFailed(f"Could not create a virtual environment with QGIS's Python ({python}): "
                                f"{output.strip()[-400:]} {hint} The full log is in {self.log_path}.")

    def _pip_step(self, step: profiles.InstallStep, constraints_path: Path, qgis_packages: dict, span,
                  number: int) -> Optional[Path]:
        request = self.request
        self._say(f"== {step.title}: {' '.join(step.packages)}")
        extra_pins = []
        if step.pin_installed:
            # keep what an earlier step installed (torch of the chosen build); in a dry run, the versions asked for
            asked = {constraints.normalized(p.split("==")[0]): p for p in profiles.TORCH}
            installed = {} if request.dry_run else self._installed_versions(step.pin_installed)
            extra_pins = [f"{name}=={installed[name]}" if name in installed else asked.get(name, name)
                          for name in step.pin_installed]
        step_constraints = constraints_path
        if extra_pins:
            step_constraints = self.environment / f"samrs-constraints-step{number + 1}.txt"
            constraints.write_constraints(str(step_constraints), qgis_packages, extra_pins)
        args = [str(venv_python(self.environment)), "-m", "pip", "install", "--disable-pip-version-check",
                "--no-input", "--progress-bar", "off", "-c", str(step_constraints)]
        index = step.index_url if step.index_url else request.index_url
        if index:
            args += ["--index-url", index]
        args += list(step.options) + list(request.pip_options)
        report = None
        if request.dry_run:
            if "--no-build-isolation" in step.options:  # built against the torch of an earlier step
                self._say("   (dry run: built from source against the installed torch; not resolved without it)")
                return None
            report = self.environment / f"samrs-dry-run-step{number + 1}.json"
            args += ["--dry-run", "--report", str(report)]
        env = child_environment()
        env.update(step.env)
        code, output = self._run(args + list(step.packages), env, span)
        if code:
            found = recognise_failure(output, self.environment.parent, platform=sys.platform)
            tail = "\n".join(line for line in output.strip().splitlines()[-6:])
            if found:
                cause, fix = found
                raise InstallFailed(f"Installing {step.title} failed: {cause}. {fix}\npip said:\n{tail}\n"
                                    f"The full log is in {self.log_path}.")
            raise InstallFailed(f"Installing {step.title} failed (pip exit status {code}). pip said:\n{tail}\n"
                                f"The full log is in {self.log_path}.")
        return report

    def _installed_versions(self, names) -> dict:
        code = ("import json, importlib.metadata as m\nout = {}\nfor n in %r:\n    try: out[n] = m.version(n)\n"
                "    except m.PackageNotFoundError: pass\nprint(json.dumps(out))" % (list(names),))
        out = subprocess.run([str(venv_python(self.environment)), "-c", code], capture_output=True, text=True,
                             timeout=120, env=child_environment())
        import json

        return json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 and out.stdout.strip() else {}

    # -- running a program ----------------------------------------------------------------------------
    def _say(self, line: str) -> None:
        if self._log:
            self._log.write(line + "\n")
            self._log.flush()
        self.progress.info(line)

    def _run(self, args: List[str], env: dict, span) -> Tuple[int, str]:
        """Run ``args``, each output line to the log and to progress; fractions within ``span`` as pip goes.
        Cancellation stops the program (its process group) and raises :class:`Cancelled`."""
        self._log.write("+ " + " ".join(args) + "\n")
        self._log.flush()
        popen = dict(stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, bufsize=1,
                     errors="replace")
        if os.name == "posix":
            popen["start_new_session"] = True  # pip's own children (builds) stop with it
        else:
            popen["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
        try:
            process = subprocess.Popen(args, **popen)
        except OSError as exc:
            raise InstallFailed(f"Could not start {args[0]}: {exc}") from exc
        lines: "queue.Queue[Optional[str]]" = queue.Queue()

        def read():
            for line in process.stdout:
                lines.put(line.rstrip("\n"))
            lines.put(None)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        output: List[str] = []
        fraction, collected = 0.0, 0
        start, end = span
        try:
            while True:
                if self.progress.is_cancelled():
                    raise Cancelled("The installation was cancelled; the environment is incomplete until it is "
                                    "installed again.")
                try:
                    line = lines.get(timeout=0.2)
                except queue.Empty:
                    continue
                if line is None:
                    break
                output.append(line)
                self._say(line)
                if line.startswith("Collecting "):
                    collected += 1
                    fraction = max(fraction, 0.6 * (1 - 0.85 ** collected))
                elif line.startswith("Installing collected packages"):
                    fraction = max(fraction, 0.7)
                elif line.startswith(("Successfully installed", "Would install")):
                    fraction = 1.0
                self.progress.set_fraction(start + (end - start) * fraction)
        except BaseException:  # cancelled, Ctrl-C, SIGTERM: pip (in its own session) must stop too
            self._stop(process)
            self._say("Stopped: the environment may be incomplete; install again to finish it.")
            raise
        code = process.wait()
        self.progress.set_fraction(end)
        return code, "\n".join(output)

    @staticmethod
    def _stop(process: subprocess.Popen) -> None:
        try:
            if os.name == "posix":
                os.killpg(process.pid, signal.SIGTERM)
            else:
                process.send_signal(signal.CTRL_BREAK_EVENT)
            process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            process.kill()
            process.wait()


def install(request: InstallRequest, progress: Optional[Progress] = None) -> InstallResult:
    """Install ``request``'s profile (see :class:`Installer`)."""
    return Installer(request, progress).run()
