"""The README's code examples run as written."""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def python_blocks():
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_spiking_core_example_runs():
    blocks = python_blocks()
    assert blocks, "the README has no python example"
    namespace = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    assert tuple(namespace["winners"].shape) == (8, 5, 3)
    assert tuple(namespace["spikes"].shape) == (8, 15, 2, 28, 28)
