"""The project's set-up files agree with each other."""

import re
from importlib.metadata import requires
from pathlib import Path

import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
CONDA_NAMES = {"pytorch": "torch"}  # conda-forge name -> PyPI name


def pyproject_requirements() -> dict[str, str]:
    """name -> version specifier, for gptlib's dependencies and all its extras."""
    found = {}
    for line in requires("gptlib"):
        req = Requirement(line)
        if req.name != "gptlib":  # the "dev" extra only gathers the other extras
            found[req.name.lower()] = str(req.specifier)
    return found


def conda_requirements() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    found = {}
    for dep in env["dependencies"]:
        if isinstance(dep, str):
            name, spec = re.match(r"([A-Za-z0-9_.-]+)(.*)", dep).groups()
            if name not in ("python", "pip"):
                found[CONDA_NAMES.get(name, name).lower()] = spec.replace(" ", "")
    return found


def test_environment_yml_and_pyproject_list_the_same_packages():
    pyproject = pyproject_requirements()
    conda = conda_requirements()
    assert set(conda) == set(pyproject)
    for name, spec in pyproject.items():
        # Compare specifiers as sets of clauses: ">=1,<2" and "<2,>=1" are the same.
        assert set(conda[name].split(",")) == set(spec.split(",")), name


def test_environment_yml_installs_gptlib_itself():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-e ." in pip_section


def test_torch_requirement_takes_2_13_and_nothing_newer():
    # CI's machines install torch 2.13.0 from a local CPU wheel; a newer release
    # would make pip download a multi-GB CUDA build.
    spec = Requirement(next(r for r in requires("gptlib") if r.startswith("torch"))).specifier
    assert spec.contains("2.13.0") and spec.contains("2.13.0+cpu")
    assert not spec.contains("2.13.1") and not spec.contains("2.14.0")


def test_python_requirement_matches_the_readme():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'requires-python = ">=3.10"' in pyproject
    assert "Python ≥ 3.10" in (ROOT / "README.md").read_text()
