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


def _block_with(needle):
    blocks = [b for b in _python_blocks() if needle in b]
    assert len(blocks) == 1, f"the README should have one python example with {needle!r}"
    return blocks[0]


def test_readme_objectives_example_runs(capsys):
    namespace = {}
    exec(compile(_block_with("losses.cmma_elbo"), str(README), "exec"), namespace)
    out = capsys.readouterr().out
    assert "bound" in out and "nats/image" in out
    assert namespace["grads"]["enc"].shape == namespace["params"]["enc"].shape


def test_readme_loading_example_runs_as_written(tiny_data_dir, tmp_path, monkeypatch, capsys):
    """Run where the README's main command would have left its workdir (a tiny one here)."""
    from cmma_jax import train
    from test_train import tiny_config

    train.train_and_evaluate(tiny_config(tiny_data_dir, num_steps=2),
                             str(tmp_path / "workdirs" / "cmma_synthetic_faces"))
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()  # the training's progress lines
    namespace = {}
    exec(compile(_block_with("load_trained"), str(README), "exec"), namespace)
    assert capsys.readouterr().out.strip() == "(2, 64, 64, 3)"
    assert namespace["faces"].shape == (2, 64, 64, 3)
