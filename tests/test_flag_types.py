"""cmma_jax.flag_types: list flags converted and checked while parsed, with errors that name the
flag and say what it takes; and the doors use them (one bad value, one line, nothing run)."""

import sys

import pytest
from absl import flags

from cmma_jax import flag_types

from conftest import run_command


def _flags():
    fv = flags.FlagValues()
    flag_types.DEFINE_positive_ints("ks", [1, 10], "", flag_values=fv)
    flag_types.DEFINE_indices("faces", None, "", flag_values=fv)
    flag_types.DEFINE_positive_floats("sigmas", None, "", flag_values=fv)
    flag_types.DEFINE_floats("values", [-3.0, 3.0, 7.0], "", count=3, flag_values=fv)
    flag_types.DEFINE_index_triples("triples", None, "", flag_values=fv)
    return fv


def test_values_are_converted():
    fv = _flags()
    fv(["prog", "--ks=1,100", "--faces=0, 3", "--sigmas=0.05,1e-1", "--values=-1,1.5,5",
        "--triples=0:1:2,3:4:5"])
    assert fv.ks == [1, 100] and fv.faces == [0, 3] and fv.sigmas == [0.05, 0.1]
    assert fv.values == [-1.0, 1.5, 5.0] and fv.triples == [(0, 1, 2), (3, 4, 5)]
    fresh = _flags()
    fresh(["prog"])
    assert fresh.ks == [1, 10] and fresh.faces is None


@pytest.mark.parametrize("arg,message", [
    ("--ks=abc", r"flag --ks=abc: expected integers >= 1, comma-separated \(e.g. 1,10,100\); "
                 r"'abc' is not one"),
    ("--ks=1,0", r"'0' is not one"),
    ("--faces=-1", r"expected integers >= 0.*'-1' is not one"),
    ("--sigmas=0.1,nan", r"expected numbers > 0.*'nan' is not one"),
    ("--values=1,2", r"expected exactly 3 numbers \(e.g. -3,3,7\), got 2"),
    ("--triples=a:b:c", r"expected a:b:c triples of integers >= 0.*'a:b:c' is not one"),
    ("--triples=1:2", r"'1:2' is not one"),
])
def test_bad_values_name_the_flag_and_what_it_takes(arg, message):
    with pytest.raises(flags.IllegalFlagValueError, match=message):
        _flags()(["prog", arg])


@pytest.mark.parametrize("door,args", [
    ("evaluate.py", ["--workdirs=nowhere", "--iwae_samples=abc"]),
    ("generate.py", ["--workdirs=nowhere", "--traverse_values=1,2"]),
    ("generate.py", ["--workdirs=nowhere", "--arithmetic_faces=a:b:c"]),
    ("reproduce.py", ["--workdir=nowhere", "--seeds=one"]),
    ("ground_truth.py", ["--workdirs=nowhere", "--ridge_alphas=x"]),
])
def test_the_doors_refuse_a_malformed_list_in_one_line(door, args):
    result = run_command([sys.executable, f"launch/{door}", *args],
                         cwd=str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    assert result.returncode != 0
    flag = args[1].split("=")[0]
    assert f"FATAL Flags parsing error: flag {flag}=" in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr


# Flags generated from the settings dataclasses: one declaration of names, types, defaults, help.

def _settings_classes():
    from cmma_jax.evaluate import EvalSettings
    from cmma_jax.evaluate.ground_truth import GroundTruthSettings
    from cmma_jax.figures import FigureSettings
    from cmma_jax.reproduce import ReproduceSettings

    return {"evaluate": (EvalSettings, {}), "figures": (FigureSettings, {}),
            "ground_truth": (GroundTruthSettings, {}),
            "reproduce": (ReproduceSettings, {"skip": ("evaluation", "figures")})}


@pytest.mark.parametrize("which", ["evaluate", "figures", "ground_truth", "reproduce"])
def test_settings_flags_default_to_the_dataclass_and_carry_its_help(which):
    cls, kwargs = _settings_classes()[which]
    fv = flags.FlagValues()
    fields = flag_types.define_settings_flags(cls, flag_values=fv, **kwargs)
    fv(["prog"])
    assert flag_types.settings_from_flags(cls, fields, flag_values=fv) == cls()
    for name in fields:  # every flag has its field's docstring line, not just its name
        assert fv[name].help != name and len(fv[name].help) > 10, name


def test_settings_flags_parse_every_kind():
    from cmma_jax.evaluate import EvalSettings
    from cmma_jax.figures import FigureSettings
    from cmma_jax.reproduce import ReproduceSettings

    fv = flags.FlagValues()
    rename = {"show_progress": "progress", "overrides": "override"}
    eval_fields = flag_types.define_settings_flags(EvalSettings, flag_values=fv, rename=rename)
    figure_fields = flag_types.define_settings_flags(
        FigureSettings, flag_values=fv, skip=("split", "seed", "data_dir", "prepared_dir",
                                              "num_test", "classifier_workdir"))
    repro_fields = flag_types.define_settings_flags(
        ReproduceSettings, flag_values=fv, only=("overrides", "seeds"), rename=rename)
    fv(["prog", "--num_test=0", "--parzen_num_test=7", "--iwae_samples=1,5",
        "--estimators=bound,parzen", "--parzen_sigmas=0.1,0.2", "--noprogress",
        "--base=zeros", "--traverse_values=-2,2,5", "--arithmetic_faces=0:1:2,3:4:5",
        "--edits=Male,Smiling", "--faces=4,1",
        "--override=model.encoder_features=(8,16),training.batch_size=32,data.name=x",
        "--seeds=0,2"])
    e = flag_types.settings_from_flags(EvalSettings, eval_fields, flag_values=fv, rename=rename)
    assert e == EvalSettings(num_test=None, parzen_num_test=7, iwae_samples=(1, 5),
                             estimators=("bound", "parzen"), parzen_sigmas=(0.1, 0.2),
                             show_progress=False)
    f = flag_types.settings_from_flags(FigureSettings, figure_fields, flag_values=fv)
    assert (f.base, f.traverse_values, f.arithmetic_faces, f.edits, f.faces) == (
        "zeros", (-2.0, 2.0, 5), ((0, 1, 2), (3, 4, 5)), ("Male", "Smiling"), (4, 1))
    assert isinstance(f.traverse_values[2], int)
    fv2 = flags.FlagValues()
    flag_types.define_settings_flags(FigureSettings, flag_values=fv2, only=("base",))
    with pytest.raises(flags.IllegalFlagValueError, match="<mode|zeros|mean>"):
        fv2(["prog", "--base=median"])
    assert fv["override"].value == {"model.encoder_features": (8, 16),
                                    "training.batch_size": 32, "data.name": "x"}
    assert fv["seeds"].value == [0, 2]
    with pytest.raises(ValueError, match="count must be an integer >= 2"):
        FigureSettings(traverse_values=(0.0, 1.0, 1.5))


def test_key_value_flags_name_a_malformed_item():
    fv = flags.FlagValues()
    flag_types.DEFINE_key_values("override", None, "", flag_values=fv)
    with pytest.raises(flags.IllegalFlagValueError,
                       match=r"flag --override=a=1,b: expected key=value items.*'b' is not one"):
        fv(["prog", "--override=a=1,b"])
