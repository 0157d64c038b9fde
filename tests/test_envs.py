import re
import tomllib

import yaml


def _normalise(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", requirement.strip().lower())


def test_conda_env_pins_agree_with_pyproject(repo):
    pyproject = tomllib.loads((repo / "pyproject.toml").read_text())
    pinned = {_normalise(r) for r in pyproject["project"]["dependencies"]}
    for env_file in sorted((repo / "envs").glob("*.yaml")):
        env = yaml.safe_load(env_file.read_text())
        pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
        listed = {_normalise(r) for r in pip_section if not r.startswith("-e")}
        assert listed == pinned, f"{env_file.name} drifted from pyproject: {listed ^ pinned}"
