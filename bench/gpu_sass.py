"""The GPU check's SASS stage: ``python -m lstm_triton.layers.kernel_report --arch ARCH --json`` for the
device's own architecture (sm_90 when there is no GPU or the report does not know the device's),
started in the background, and the rows it marks as the d2l and large configurations.

On an AMD GPU (a ROCm torch) the stage compiles for its ISA (gfx942 when the report does not know
it) and shows the AMDGCN columns in place of the SASS ones (:data:`AMD_COLUMNS`: VGPRs, AGPRs,
scratch, LDS, MFMA instructions, resident grid).

The tensor-core columns (``mma_instructions`` in the PTX, ``sass_mma_instructions``,
``useful_mac_fraction``) are shown when the report has them; an older report without them gives a
note, not a failure.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

TENSOR_CORE_COLUMNS = ("mma_instructions", "sass_mma_instructions", "useful_mac_fraction")
COLUMNS = ("shape", "kernel", "level", "dtype", "num_warps", "registers", "spill_bytes", "shared_bytes",
           *TENSOR_CORE_COLUMNS)
AMD_COLUMNS = ("shape", "kernel", "level", "dtype", "num_warps", "vgprs", "agprs", "scratch_bytes", "shared_bytes",
               "mma_instructions", "resident", "useful_mac_fraction")
REPORT_ARCHES = ("sm_80", "sm_90", "gfx90a", "gfx942", "gfx950")  # what kernel_report --arch accepts


def is_amd_arch(arch: str) -> bool:
    return arch.startswith("gfx")


def device_arch() -> tuple[str, str]:
    """(arch for kernel_report, why): the device's own when the report knows it, else sm_90 (on a
    ROCm torch: its ISA from gcnArchName, else gfx942)."""
    if torch.cuda.is_available() and getattr(torch.version, "hip", None):
        own = str(getattr(torch.cuda.get_device_properties(0), "gcnArchName", "")).split(":")[0]
        if own in REPORT_ARCHES:
            return own, "the device's own ISA"
        return "gfx942", f"kernel_report has no {own or 'ISA for this device'}; gfx942 instead"
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        own = f"sm_{major}{minor}"
        if own in REPORT_ARCHES:
            return own, "the device's own architecture"
        return "sm_90", f"kernel_report has no {own}; sm_90 instead"
    return "sm_90", "no GPU: sm_90"


class SassReport:
    """``kernel_report`` running in a subprocess (TRITON_INTERPRET unset: it compiles for a GPU)."""

    def __init__(self, out_json: Path, arch: str, rated_only: bool = True):
        """``rated_only`` (the GPU check's default): compile and disassemble just the d2l/large builds
        the table shows (8 on sm_90); False: every build (612 on sm_90, minutes on every core, beside
        the tests' own compiles), kept in ``out_json``."""
        self.out_json, self.arch, self.start = out_json, arch, time.perf_counter()
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        self._stdout = open(out_json, "w")
        # niced: it compiles on every core while the CUDA tests compile their kernels too
        cmd = [sys.executable, "-m", "lstm_triton.layers.kernel_report", "--arch", arch, "--json"]
        cmd += ["--rated"] if rated_only else []
        self.proc = subprocess.Popen(cmd,
                                     stdout=self._stdout, stderr=subprocess.PIPE, text=True, env=env,
                                     preexec_fn=lambda: os.nice(10), start_new_session=True)

    def kill(self) -> None:
        """Stop the report and its compile workers (its own process group) if still running."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.communicate()
        if not self._stdout.closed:
            self._stdout.close()

    def collect(self, timeout_s: float) -> dict:
        """Wait at most ``timeout_s``; the d2l/large rows, or a note saying why there are none."""
        try:
            _, err = self.proc.communicate(timeout=max(timeout_s, 1))
        except subprocess.TimeoutExpired:
            self.kill()  # its own group: the compile workers too
            return {"arch": self.arch, "rows": [], "note": f"kernel_report did not finish within its deadline "
                                                           f"({time.perf_counter() - self.start:.0f} s)"}
        self._stdout.close()
        seconds = round(time.perf_counter() - self.start, 1)
        if self.proc.returncode != 0:
            last = (err or "").strip().splitlines()[-1:] or [""]
            return {"arch": self.arch, "rows": [], "seconds": seconds,
                    "note": f"kernel_report exited {self.proc.returncode}: {last[0]}"}
        try:
            builds = json.loads(self.out_json.read_text())
        except json.JSONDecodeError as exc:
            return {"arch": self.arch, "rows": [], "seconds": seconds, "note": f"kernel_report JSON unreadable: {exc}"}
        return {"arch": self.arch, "seconds": seconds, **shape_rows(builds)}


def shape_rows(builds: list[dict]) -> dict:
    """Rows of the builds marked d2l_shape / large_shape, with COLUMNS ("—" where a column is absent);
    builds for an AMD target with AMD_COLUMNS, named as the AMDGCN report names them (LDS, MFMA)."""
    amd = any(is_amd_arch(str(b.get("arch", ""))) for b in builds)
    columns = AMD_COLUMNS if amd else COLUMNS
    names = {"shared_bytes": "lds_bytes", "mma_instructions": "mfma_instructions"} if amd else {}
    rows = []
    for build in builds:
        for flag, shape in (("d2l_shape", "d2l"), ("large_shape", "large")):
            if build.get(flag):
                rows.append({names.get(c, c): shape if c == "shape" else build.get(c, "—") for c in columns})
    missing = [c for c in TENSOR_CORE_COLUMNS if c in columns and not any(c in b for b in builds)]
    note = (f"this kernel_report has no {', '.join(missing)} column(s) yet" if missing else "")
    return {"rows": rows, "note": note, "builds": len(builds)}
