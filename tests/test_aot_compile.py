"""Every kernel configuration the launchers can pick compiles ahead of time for sm_80 and sm_90.

Compiling needs real (not interpreted) @triton.jit functions, so the report runs in a
subprocess with TRITON_INTERPRET unset. ptxas ships inside the triton wheel: no GPU needed.
"""

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

SHARED_LIMIT = {"sm_80": 163 * 1024, "sm_90": 227 * 1024}  # max shared memory per block


@pytest.fixture(scope="module", params=["sm_80", "sm_90"])
def builds(request):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-m", "lstm_triton.kernel_report", "--arch", request.param, "--json"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    df = pd.DataFrame(json.loads(proc.stdout.splitlines()[-1]))
    df.attrs["arch"] = request.param
    return df


def test_every_launcher_configuration_compiles(builds, record_property):
    table = builds[["kernel", "level", "dtype", "constexprs", "num_warps", "registers", "spill_bytes",
                    "shared_bytes"]].to_string(index=False)
    print(table)  # shown with -s / -rA: registers, spills and shared memory per configuration
    record_property("kernel_builds", table)
    assert set(builds["level"]) == {"cell", "step", "persistent"}
    assert set(builds["dtype"]) == {"fp32", "bf16", "fp16"}
    assert (builds["registers"] > 0).all() and (builds["registers"] <= 255).all()
    over = builds[builds["shared_bytes"] > SHARED_LIMIT[builds.attrs["arch"]]]
    assert over.empty, "shared memory over the per-block limit (launch would fail):\n" + over.to_string()


def test_persistent_grids_fit_the_sms_and_nothing_is_prefetched_across_the_barrier(builds):
    persistent = builds[builds["level"] == "persistent"]
    assert len(persistent) >= 8 and persistent["grid_fits_sms"].all()
    assert (persistent["num_stages"] == 1).all() and (persistent["cp_async"] == 0).all()


def test_auto_picks_a_compiled_persistent_config_for_the_d2l_and_large_shapes(builds):
    persistent = builds[builds["level"] == "persistent"]
    assert persistent["d2l_shape"].sum() == 2  # forward + backward kernels
    if builds.attrs["arch"] == "sm_90":
        assert persistent["large_shape"].sum() == 2


def test_no_spills_at_the_d2l_shape(builds):
    d2l = builds[builds["d2l_shape"]]
    assert len(d2l) == 4  # forward and backward kernels of the step and persistent levels
    spilled = d2l[d2l["spill_bytes"] > 0]
    assert spilled.empty, spilled.to_string()


def test_no_spills_anywhere(builds):
    spilled = builds[builds["spill_bytes"] > 0]
    assert spilled.empty, spilled.to_string()


def test_persistent_kernels_compile_once_for_every_sequence_length():
    """T is a runtime argument Triton must not specialise on (T == 1, T % 16 == 0 variants)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    code = ("from lstm_triton.kernels import lstm_persistent as P\n"
            "for f in (P.persistent_forward_kernel, P.persistent_backward_kernel):\n"
            "    print(f.__name__, [p.name for p in f.params if p.do_not_specialize])\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines() == ["persistent_forward_kernel ['T']", "persistent_backward_kernel ['T']"]
