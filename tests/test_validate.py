"""dlfun.validate: range checks that name the flag, the value and the accepted range."""

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dlfun.errors import ConfigError
from dlfun.validate import (SEED_MAX, check_finite, check_finite_positive, check_float_range,
                            check_fraction, check_int_range, check_seed, flag_name)

ROOT = Path(__file__).resolve().parent.parent


def test_validate_imports_no_jax():
    out = subprocess.run([sys.executable, "-c", "import sys, dlfun.validate; "
                          "print('jax' in sys.modules)"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_flag_name():
    assert flag_name("weight_decay") == "--weight-decay"
    assert flag_name("--port") == "--port"


@pytest.mark.parametrize("call,message", [
    (lambda: check_int_range("port", 99999, 1, 65535),
     "--port 99999 is out of range; use an integer in [1, 65535]"),
    (lambda: check_int_range("port", 0, 1, 65535),
     "--port 0 is out of range; use an integer in [1, 65535]"),
    (lambda: check_int_range("num_seeds", -3, 1),
     "--num-seeds -3 is out of range; use an integer >= 1"),
    (lambda: check_int_range("depth", 9, None, 8),
     "--depth 9 is out of range; use an integer <= 8"),
    (lambda: check_int_range("nproc", 2.0, 1, 8),
     "--nproc expects an integer, got 2; use an integer in [1, 8]"),
    (lambda: check_int_range("nproc", True, 1, 8),
     "--nproc expects an integer, got True; use an integer in [1, 8]"),
    (lambda: check_int_range("nproc", "2"),
     "--nproc expects an integer, got '2'; use an integer"),
    (lambda: check_seed(99999999999999999999),
     "--seed 99999999999999999999 is out of range; use an integer in [0, 2147483647]"),
    (lambda: check_seed(-1), "--seed -1 is out of range; use an integer in [0, 2147483647]"),
    (lambda: check_seed(SEED_MAX, count=4),
     "--seed 2147483647 is out of range; use an integer in [0, 2147483644]"),
    (lambda: check_finite_positive("timeout", math.nan),
     "--timeout nan is not a finite number; use a finite number > 0"),
    (lambda: check_finite_positive("timeout", -5),
     "--timeout -5 is out of range; use a finite number > 0"),
    (lambda: check_finite_positive("timeout", 0.0),
     "--timeout 0 is out of range; use a finite number > 0"),
    (lambda: check_finite_positive("epochs", 10**400),
     "--epochs inf is not a finite number; use a finite number > 0"),
    (lambda: check_finite_positive("timeout", "soon"),
     "--timeout expects a number, got 'soon'; use a finite number > 0"),
    (lambda: check_finite("forget_bias", -math.inf),
     "--forget-bias -inf is not a finite number; use a finite number"),
    (lambda: check_float_range("weight_decay", -0.5, 0.0),
     "--weight-decay -0.5 is out of range; use a finite number >= 0"),
    (lambda: check_float_range("lr", 2.0, None, 1.0, hi_inclusive=False),
     "--lr 2 is out of range; use a finite number < 1"),
    (lambda: check_fraction("dropout", 1.0),
     "--dropout 1 is out of range; use a finite number in [0, 1)"),
    (lambda: check_fraction("gamma", 5, hi_exclusive=False),
     "--gamma 5 is out of range; use a finite number in [0, 1]"),
    (lambda: check_fraction("share", 0.0, lo_inclusive=False),
     "--share 0 is out of range; use a finite number in (0, 1)"),
    (lambda: check_fraction("share", -1e-300),
     "--share -1e-300 is out of range; use a finite number in [0, 1)"),
])
def test_refused_values_give_one_line_naming_flag_value_and_range(call, message):
    with pytest.raises(ConfigError) as info:
        call()
    assert str(info.value) == message
    assert "\n" not in str(info.value)


def test_accepted_values_are_returned_as_python_numbers():
    assert check_int_range("port", np.int64(80), 1, 65535) == 80
    assert type(check_int_range("port", np.int64(80), 1, 65535)) is int
    assert check_int_range("n", 10**30) == 10**30  # no bounds: any integer
    assert check_seed(0) == 0 and check_seed(SEED_MAX) == SEED_MAX
    assert check_seed(SEED_MAX - 3, count=4) == SEED_MAX - 3
    assert check_finite_positive("timeout", 5) == 5.0
    assert type(check_finite_positive("timeout", np.float32(0.5))) is float
    assert check_finite("bias", -1e300) == -1e300
    assert check_fraction("dropout", 0) == 0.0
    assert check_fraction("gamma", 1, hi_exclusive=False) == 1.0
    assert check_float_range("wd", 0.0, 0.0) == 0.0
    assert check_float_range("x", 1.0, 1.0, 1.0) == 1.0


def test_bounds_are_exact_at_the_edges():
    # Just inside and just outside each open and closed bound.
    below, above = np.nextafter(1.0, 0.0), np.nextafter(1.0, 2.0)
    assert check_float_range("x", 1.0, 1.0) == 1.0
    with pytest.raises(ConfigError):
        check_float_range("x", below, 1.0)
    with pytest.raises(ConfigError):
        check_float_range("x", 1.0, 1.0, lo_inclusive=False)
    assert check_float_range("x", above, 1.0, lo_inclusive=False) == above
    assert check_fraction("p", below) == below
    with pytest.raises(ConfigError):
        check_fraction("p", 1.0)
    with pytest.raises(ConfigError):
        check_seed(0, count=0)
