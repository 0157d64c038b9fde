import re
import tomllib

import yaml

# The only differences a GPU environment may have from pyproject: the GPU build of a package
# at the same version.
GPU_SUBSTITUTES = {"faiss-cpu": "faiss-gpu"}


def _normalise(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", requirement.strip().lower())


def _pinned(repo) -> set[str]:
    pyproject = tomllib.loads((repo / "pyproject.toml").read_text())
    return {_normalise(r) for r in pyproject["project"]["dependencies"]}


def _listed(env_file) -> set[str]:
    env = yaml.safe_load(env_file.read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    return {_normalise(r) for r in pip_section if not r.startswith("-e")}


def _gpu_variant(requirement: str) -> str:
    name = re.match(r"[a-z0-9-]+", requirement).group(0)
    return GPU_SUBSTITUTES.get(name, name) + requirement[len(name):]


def test_there_are_cpu_and_gpu_environments(repo):
    assert {p.name for p in (repo / "envs").glob("*.yaml")} >= {"cpu.yaml", "gpu.yaml"}


def test_conda_env_pins_agree_with_pyproject(repo):
    pinned = _pinned(repo)
    for env_file in sorted((repo / "envs").glob("*.yaml")):
        expected = {_gpu_variant(r) for r in pinned} if env_file.stem == "gpu" else pinned
        listed = _listed(env_file)
        assert listed == expected, f"{env_file.name} drifted from pyproject: {listed ^ expected}"


def test_the_gpu_environment_has_faiss_gpu_at_the_cpu_version(repo):
    gpu, cpu = _listed(repo / "envs/gpu.yaml"), _listed(repo / "envs/cpu.yaml")
    assert any(r.startswith("faiss-gpu==") for r in gpu)
    assert not any(r.startswith("faiss-cpu") for r in gpu)
    assert gpu - cpu == {r.replace("faiss-cpu", "faiss-gpu") for r in cpu - gpu}
