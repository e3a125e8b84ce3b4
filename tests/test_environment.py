"""The project's set-up files agree with each other."""

import re
import sys
from pathlib import Path

import yaml
from packaging.requirements import Requirement

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
CONDA_NAMES = {"pytorch": "torch"}  # conda-forge name -> PyPI name
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def pyproject_lines() -> list[str]:
    """Every requirement of gptlib and of its extras, as written in pyproject.toml."""
    lines = list(PROJECT["dependencies"])
    for extra in PROJECT["optional-dependencies"].values():
        lines += extra
    return lines


def pyproject_requirements() -> dict[str, str]:
    """name -> version specifier, for gptlib's dependencies and all its extras."""
    found = {}
    for line in pyproject_lines():
        req = Requirement(line)
        if req.name != "gptlib" and req.marker is None:  # "dev" only gathers the other extras
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
    spec = Requirement(next(r for r in PROJECT["dependencies"] if r.startswith("torch"))).specifier
    assert spec.contains("2.13.0") and spec.contains("2.13.0+cpu")
    assert not spec.contains("2.13.1") and not spec.contains("2.14.0")


def test_python_requirement_matches_the_readme():
    assert PROJECT["requires-python"] == ">=3.10"
    assert "Python ≥ 3.10" in (ROOT / "README.md").read_text()


IMPORT_NAMES = {"pyyaml": "yaml", "ipython": "IPython"}  # PyPI name -> module
STANDARD = set(sys.stdlib_module_names) | {"gptlib", "conftest", "browser", "parallel"}  # ours


def test_every_package_the_project_imports_is_declared():
    declared = {IMPORT_NAMES.get(name, name.replace("-", "_")) for name in pyproject_requirements()}
    declared.add("tomli")  # Python 3.10 only, declared with a marker
    if "tiktoken" in declared:
        declared.add("tiktoken_ext")  # installed by tiktoken (its encodings' definitions)
    imported = set()
    for path in [*ROOT.glob("gptlib/*.py"), *ROOT.glob("tests/*.py"), *ROOT.glob("benchmarks/*.py"),
                 *ROOT.glob(".ci/*.py"), *ROOT.glob("assets/*/*.py"), *ROOT.glob("solutions/*.py")]:
        for match in re.finditer(r"^\s*(?:from|import) ([A-Za-z_][A-Za-z0-9_]*)",
                                 path.read_text(), flags=re.M):
            imported.add(match.group(1))
    missing = sorted(imported - declared - STANDARD)
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"
