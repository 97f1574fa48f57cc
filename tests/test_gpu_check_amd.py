"""The GPU check on an AMD machine (a ROCm torch), without one: the compile stage picks the device's
ISA and shows the AMDGCN columns in place of the SASS ones."""

from types import SimpleNamespace

import torch

from bench.gpu_sass import AMD_COLUMNS, device_arch, shape_rows


def test_the_stage_compiles_for_the_devices_isa(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.version, "hip", "7.0.0", raising=False)
    for isa, expected in (("gfx950:sramecc+:xnack-", "gfx950"), ("gfx942:sramecc+:xnack-", "gfx942"),
                          ("gfx1100", "gfx942")):
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i, isa=isa: SimpleNamespace(gcnArchName=isa))
        assert device_arch()[0] == expected


def test_amd_rows_show_vgprs_agprs_scratch_lds_mfma_and_residency():
    build = {"arch": "gfx942", "kernel": "persistent_forward_kernel", "level": "persistent", "dtype": "fp32",
             "num_warps": 8, "vgprs": 108, "agprs": 0, "scratch_bytes": 0, "shared_bytes": 32768,
             "mma_instructions": 64, "resident": True, "useful_mac_fraction": 1.0, "registers": 108,
             "d2l_shape": True, "large_shape": False}
    got = shape_rows([build])
    assert list(got["rows"][0]) == ["shape", "kernel", "level", "dtype", "num_warps", "vgprs", "agprs",
                                    "scratch_bytes", "lds_bytes", "mfma_instructions", "resident",
                                    "useful_mac_fraction"]
    assert len(AMD_COLUMNS) == len(got["rows"][0]) and got["note"] == ""
    assert got["rows"][0]["lds_bytes"] == 32768 and got["rows"][0]["mfma_instructions"] == 64
