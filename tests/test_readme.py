"""The README's examples run as they are written."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_two_setup_commands_first():
    text = README.read_text()
    bash = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    assert len(bash) >= 2
    assert bash[0].strip() == 'pip install -e ".[test]" && python -m pytest -q'
    assert bash[1].strip().endswith("python launch/train.py --model cmma")
    ci = (README.parent / ".ci" / "run").read_text()
    assert bash[0].strip() in ci, ".ci/run must run the README's test command exactly"


def test_readme_objectives_example_runs(capsys):
    blocks = _python_blocks()
    assert blocks, "the README lost its objectives example"
    namespace = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)
    out = capsys.readouterr().out
    assert "bound" in out and "nats/image" in out
    assert namespace["grads"]["enc"].shape == namespace["params"]["enc"].shape
