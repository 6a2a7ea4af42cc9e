"""The README runs as written.

Its bash blocks run in a fresh folder laid out like a checkout (``examples/`` copied, the
shared data as ``../shared/data``), one command at a time, through bash, with ``polytask`` and
``python3`` those of the interpreter running the tests. The one change the README itself
documents is made: ``training.epochs=1`` appended to each ``polytask train`` command. The
quick start's install steps and its test command are what CI itself runs (``.ci/run``), so
only its ``polytask demo`` runs here. Console blocks (``$ command`` then its output) are run
and their output compared, ``[...]`` standing for any text. The Python block runs as a script
in the same folder, after the bash blocks.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")
QUICK_EPOCHS = "training.epochs=1"
CHECKED_BY_CI = ("python3 -m pip install", "python3 -m pytest")


def blocks(language: str) -> list[str]:
    return [
        body for lang, body in re.findall(r"```(\w*)\n(.*?)```", README, re.S) if lang == language
    ]


def commands() -> list[str]:
    """Every bash command of the README, with the documented quick-check override."""
    out = []
    for block in blocks("bash"):
        for line in block.splitlines():
            command = re.split(r"\s+# ", line, maxsplit=1)[0].strip()
            if not command or command.startswith("#"):
                continue
            for part in (p.strip() for p in command.split("&&")):
                if part.startswith(CHECKED_BY_CI):
                    continue
                if part.startswith("polytask train "):
                    part = f"{part} {QUICK_EPOCHS}"
                out.append(part)
    return out


def test_the_readme_documents_the_quick_check_override() -> None:
    assert f"Append\n`{QUICK_EPOCHS}` to a `train` command" in README or (
        f"`{QUICK_EPOCHS}`" in README and "tests/test_readme.py" in README
    )


def test_the_readme_has_the_commands_this_test_runs() -> None:
    found = commands()
    assert "polytask demo" in found
    assert any(c.startswith("polytask evaluate") for c in found)
    assert any(c.startswith("polytask predict") for c in found)
    assert len(blocks("python")) == 1


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory, census_test_file: Path) -> Path:
    root = tmp_path_factory.mktemp("readme")
    repo = root / "repo"
    repo.mkdir()
    shutil.copytree(REPO / "examples", repo / "examples")
    (root / "shared").mkdir()
    (root / "shared" / "data").symlink_to(census_test_file.parents[1], target_is_directory=True)
    return repo


def run(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        ["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )


@pytest.mark.slow
def test_every_readme_command_and_snippet_runs(checkout: Path) -> None:
    for command in commands():
        done = run(command, checkout)
        assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    assert (checkout / "runs" / "census" / "model" / "weights.safetensors").is_file()
    assert (checkout / "runs" / "x" / "checkpoints").is_dir()
    assert (checkout / "pred.parquet").is_file() and (checkout / "scores.parquet").is_file()

    for block in re.findall(r"```\n(\$ .*?)```", README, re.S):
        command, *expected = block.rstrip("\n").splitlines()
        done = run(command.removeprefix("$ "), checkout)
        got = (done.stdout + done.stderr).rstrip("\n").splitlines()
        assert len(got) == len(expected), (command, got)
        for want, line in zip(expected, got, strict=True):
            pattern = ".*".join(re.escape(part) for part in want.split("[...]"))
            assert re.fullmatch(pattern, line), (want, line)

    (snippet,) = blocks("python")
    (checkout / "readme_snippet.py").write_text(snippet)
    done = subprocess.run(
        [sys.executable, "readme_snippet.py"],
        cwd=checkout,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (checkout / "runs" / "api" / "model" / "weights.safetensors").is_file()
    assert (checkout / "test_scores.parquet").is_file()


def test_the_weighting_list_marks_exactly_the_weightings_that_need_an_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from polytask.errors import MissingExtraError
    from polytask.tasks import TaskSpec
    from polytask.weighting import WEIGHTINGS

    for module in ("quadprog", "qpsolvers", "cvxpy", "ecos", "clarabel"):
        monkeypatch.setitem(sys.modules, module, None)  # `import module` raises ImportError
    tasks = {"a": TaskSpec(type="binary"), "b": TaskSpec(type="regression")}
    needs = set()
    for name, entry in WEIGHTINGS.items():
        try:
            entry.build(tasks=tasks, params=entry.params())
        except MissingExtraError:
            needs.add(name)
    (row,) = [line for line in README.splitlines() if line.startswith("| combining tasks |")]
    marked = set(re.findall(r"`(\w+)`\\\*", row))
    assert needs and marked == needs
