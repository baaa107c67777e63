"""The README's Python example runs as printed (with a small untrained checkpoint in place of the
demo's), so the section cannot drift from the API."""

from __future__ import annotations

import re
from pathlib import Path

from hmpc.checkpoint import save_checkpoint
from hmpc.world_model import LevelSpec, WorldModelSpec, build_world_model

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_block(section: str) -> str:
    text = README.read_text()
    start = text.index(f"## {section}\n")
    match = re.search(r"```python\n(.*?)```", text[start:], re.S)
    assert match is not None, f"no python block in README section {section!r}"
    return match.group(1)


def test_the_from_python_example_runs(tmp_path: Path, capsys) -> None:
    code = _python_block("From Python")
    placeholder = "outputs/demo/<run>/train/checkpoint"
    assert placeholder in code
    spec = WorldModelSpec(image_size=16, action_dim=2, latent_dim=8, widths=(4, 8), hidden=16,
                          levels=(LevelSpec(latent_dim=6, k=2, macro_dim=2, hidden=16),))
    checkpoint = save_checkpoint(tmp_path / "ck", build_world_model(spec, seed=0), {})
    code = code.replace(placeholder, str(checkpoint)).replace("range(100)", "range(3)")
    exec(compile(code, str(README), "exec"), {"__name__": "readme"})
    assert re.search(r"success=(True|False) after [123] steps, last plan \d+\.\d ms", capsys.readouterr().out)
