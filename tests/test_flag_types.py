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
