"""The examples of docs/architecture.md run, in order, in one namespace."""

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


def test_architecture_examples_run():
    from frugal.solvers import variants

    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) == 3, ("docs/architecture.md: expected the amplitude-step, the new-problem and the "
                              "manifold examples")
    registry = dict(variants.AMPLITUDE_STEPS)
    namespace: dict = {}
    try:
        for i, code in enumerate(blocks):
            exec(compile(code, f"{DOC.name} block {i + 1}", "exec"), namespace)
        assert "richardson-lucy" in variants.AMPLITUDE_STEPS
    finally:  # the example registers a step: leave the registry as it was
        variants.AMPLITUDE_STEPS.clear()
        variants.AMPLITUDE_STEPS.update(registry)
