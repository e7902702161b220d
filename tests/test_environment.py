"""The kit's own plumbing: pyproject.toml and environment.yml list the same
packages with the same versions; CI runs the README's test command; the test
command treats "no tests collected" as a failure; LAB_REQUIRE_WEIGHTS works."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parent.parent
IGNORED = {"python", "pip"}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pip_requirements(lines) -> dict[str, SpecifierSet]:
    out = {}
    for line in lines:
        line = line.strip()
        if not line or line.startswith("-e") or line.startswith("#"):
            continue
        req = Requirement(line)
        name = normalize(req.name)
        assert name not in out, f"{name} listed twice"
        out[name] = req.specifier
    return out


def pyproject_requirements() -> dict[str, SpecifierSet]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = data["project"]
    return pip_requirements(project["dependencies"] + project["optional-dependencies"]["test"])


def conda_requirements() -> dict[str, SpecifierSet]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    out, pip_lines = {}, []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip_lines += dep.get("pip", [])
            continue
        m = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\s*(.*?)\s*", str(dep))
        assert m, f"cannot parse conda dependency {dep!r}"
        name, spec = normalize(m.group(1)), m.group(2).replace(" ", "")
        if name in IGNORED:
            continue
        if re.fullmatch(r"=[^=<>!].*", spec):  # conda's "pkg=1.2" means 1.2.*
            spec = "=" + spec + ("" if spec.endswith("*") else ".*")
        assert name not in out, f"{name} listed twice"
        out[name] = SpecifierSet(spec)
    for name, spec in pip_requirements(pip_lines).items():
        assert name not in out, f"{name} listed twice (conda and pip sections)"
        out[name] = spec
    return out


def test_pyproject_and_environment_yml_agree():
    pyproject, conda = pyproject_requirements(), conda_requirements()
    assert pyproject, "no dependencies parsed from pyproject.toml"
    missing_in_conda = sorted(set(pyproject) - set(conda))
    missing_in_pyproject = sorted(set(conda) - set(pyproject))
    assert not missing_in_conda and not missing_in_pyproject, (
        f"only in pyproject.toml: {missing_in_conda}; only in environment.yml: {missing_in_pyproject}")
    differ = {n: (str(pyproject[n]), str(conda[n])) for n in pyproject if pyproject[n] != conda[n]}
    assert not differ, f"version specifiers differ (pyproject, environment.yml): {differ}"


def test_environment_yml_installs_the_kit():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_lines = [line for dep in env["dependencies"] if isinstance(dep, dict) for line in dep.get("pip", [])]
    assert "-e ." in [line.strip() for line in pip_lines]
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    conda_python = [d for d in env["dependencies"] if isinstance(d, str) and normalize(d).startswith("python=")]
    assert conda_python, "environment.yml pins no python"
    version = conda_python[0].split("=", 1)[1]
    assert SpecifierSet(data["project"]["requires-python"]).contains(version + ".0")


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "./run-tests.sh" in ci
    assert "LAB_REQUIRE_WEIGHTS=1" in ci  # real-weight tests must not skip in CI
    readme = ROOT / "README.md"
    if not readme.is_file():
        pytest.skip("README.md not written yet")
    assert "./run-tests.sh" in readme.read_text()


@pytest.fixture
def fake_kit(tmp_path):
    """A copy of run-tests.sh whose setup script puts a fake `python` on PATH.

    The fake records its arguments and LAB_PROGRESS and exits with $FAKE_RC:
    the script's own logic runs for real, without installing or collecting anything.
    """
    kit = tmp_path / "kit"
    (kit / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "run-tests.sh", kit / "run-tests.sh")
    fake_bin = kit / "fakebin"
    fake_bin.mkdir()
    (kit / "scripts" / "setup-env.sh").write_text(f'export PATH="{fake_bin}:$PATH"\n')
    python = fake_bin / "python"
    python.write_text('#!/usr/bin/env bash\n'
                      'echo "$@" > "$FAKE_LOG"\necho "LAB_PROGRESS=$LAB_PROGRESS" >> "$FAKE_LOG"\n'
                      'exit "$FAKE_RC"\n')
    python.chmod(0o755)
    return kit


@pytest.mark.parametrize("pytest_rc, expected", [(0, 0), (1, 1), (2, 2), (5, 1)])
def test_run_tests_sh_turns_no_tests_into_a_failure(fake_kit, tmp_path, pytest_rc, expected):
    log = tmp_path / "log"
    env = {**os.environ, "FAKE_RC": str(pytest_rc), "FAKE_LOG": str(log), "LAB_PROGRESS": "1"}
    proc = subprocess.run(["bash", str(fake_kit / "run-tests.sh"), "-k", "no_such_test", "tests/x.py"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == expected, proc.stderr
    args, progress = log.read_text().splitlines()
    assert args == "-m pytest -k no_such_test tests/x.py"
    assert progress == "LAB_PROGRESS=0"
    if pytest_rc == 5:
        assert "no tests" in proc.stderr


def _conftest_module(request):
    here = Path(__file__).resolve().parent / "conftest.py"
    for plugin in request.config.pluginmanager.get_plugins():
        if getattr(plugin, "__file__", None) and Path(plugin.__file__).resolve() == here:
            return plugin
    pytest.fail("tests/conftest.py is not loaded")


def test_missing_weights_skip_or_fail(request, tmp_path, monkeypatch):
    conftest = _conftest_module(request)
    monkeypatch.setenv("LAB_WEIGHTS_DIR", str(tmp_path))  # empty: no weights file
    monkeypatch.setenv("LAB_REQUIRE_WEIGHTS", "1")
    with pytest.raises(pytest.fail.Exception, match="LAB_REQUIRE_WEIGHTS=1.*vgg16_imagenet_notop.h5"):
        conftest.require_weights("vgg16")
    monkeypatch.delenv("LAB_REQUIRE_WEIGHTS")
    with pytest.raises(pytest.skip.Exception, match="vgg16_imagenet_notop.h5"):
        conftest.require_weights("vgg16")


def test_test_session_environment():
    # set by conftest.py at import time: no progress bars, a throw-away cache
    assert os.environ["LAB_PROGRESS"] == "0"
    cache = Path(os.environ["LAB_CACHE_DIR"])
    assert cache.resolve() != (ROOT / ".lab_cache").resolve()
