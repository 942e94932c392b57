"""
One import package: the wheel installs ``conntune`` and nothing else at the top level, the
design card's folders (facts/, operations/, deploys/) inside it. And no import circles: every
module imports on its own, and the policy imports no pyinfra at all.
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# The tuning policy: plain Python from host facts and settings to a desired state
POLICY = [
    "conntune.sizing", "conntune.profiles", "conntune.settings", "conntune.plan",
    "conntune.policy", "conntune.render", "conntune.changes", "conntune.audit",
    "conntune.cake", "conntune.timeouts", "conntune.conflicts", "conntune.undo",
    "conntune.firewalld", "conntune.hostfacts", "conntune.qdisc", "conntune.units",
    "conntune.facts.parse", "conntune.facts.reading", "conntune.readings",
    "conntune.facts.sections", "conntune.facts.tc_json", "conntune.facts.config_lines",
    "conntune.cake_options", "conntune.hypothetical", "conntune.watch", "conntune.metrics",
    "conntune.terminal",
]  # fmt: skip


PACKAGES = ["conntune", "conntune.facts", "conntune.operations", "conntune.deploys"]


def all_modules() -> list[str]:
    """Every module of the package (the subpackages live in the card's top-level folders)."""
    found = list(PACKAGES)
    for package in PACKAGES:
        path = importlib.import_module(package).__path__
        found += [f"{package}.{info.name}" for info in pkgutil.iter_modules(path)]
    return sorted(set(found))


def test_every_design_card_folder_is_the_subpackage():
    for package, folder in zip(PACKAGES[1:], ("facts", "operations", "deploys"), strict=True):
        assert importlib.import_module(package).__path__ == [str(REPO / folder)]
    assert set(POLICY) <= set(all_modules())


@pytest.mark.parametrize("module", all_modules())
def test_each_module_imports_alone_in_a_fresh_interpreter(module):
    run = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True,
                         text=True, cwd="/")  # fmt: skip
    assert run.returncode == 0, run.stderr


def test_the_policy_runs_with_pyinfra_unimportable(tmp_path):
    # a meta path finder that refuses pyinfra, then every policy module, then a whole plan
    script = f"""
import sys
class NoPyinfra:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("pyinfra", "pyinfra_cli", "gevent"):
            raise ImportError("pyinfra is not importable here: " + name)
sys.meta_path.insert(0, NoPyinfra())
for module in {POLICY!r}:
    __import__(module)
from conntune.hypothetical import hypothetical
from conntune.policy import plan
from conntune.settings import settings_from_data
print(plan(hypothetical(64 * 2**30, 8, 1000), settings_from_data({{}})).conntrack_max)
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=tmp_path)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "2097152"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The wheel, built from the checkout and installed (not editable) into a fresh venv."""
    work = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(work), str(REPO)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    (wheel,) = work.glob("conntune-*.whl")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    install = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr
    return wheel, venv


def test_the_wheel_has_one_top_level_name(installed):
    wheel, _ = installed
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        top = {name.split("/")[0] for name in names if ".dist-info" not in name.split("/")[0]}
        assert top == {"conntune"}
        top_level = next(n for n in names if n.endswith(".dist-info/top_level.txt"))
        assert archive.read(top_level).decode().split() == ["conntune"]
        assert "conntune/facts/reading.sh" in names  # the reading script ships as data


def test_the_installed_cli_works_from_another_directory(installed, tmp_path):
    _, venv = installed
    run = subprocess.run([str(venv / "bin" / "conntune"), "plan", "--mem", "64GiB", "--json"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["conntrack_max"] == 2097152


def test_a_dry_run_from_the_checkout_uses_the_installed_package(installed):
    _, venv = installed
    # what the pyinfra command sees: its own bin directory first, the checkout appended last
    # (pyinfra_cli/main.py: sys.path.append(".")), so the installed conntune wins
    probe = "import sys; sys.path.append('.'); import conntune.facts.host as m; print(m.__file__)"
    site = subprocess.run([str(venv / "bin" / "python"), "-P", "-c", probe],
                          capture_output=True, text=True, cwd=REPO).stdout.strip()  # fmt: skip
    assert site.startswith(str(venv)), site
    run = subprocess.run(
        [str(venv / "bin" / "pyinfra"), "@local", "deploy.py", "--dry"],
        capture_output=True, text=True, cwd=REPO, timeout=300, stdin=subprocess.DEVNULL,
        env={**os.environ, "PYINFRA_PROGRESS": "off", "NO_COLOR": "1"},
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Detected changes" in run.stdout + run.stderr
