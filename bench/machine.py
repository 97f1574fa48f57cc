"""What a benchmark ran on: device, library versions, and whether Triton was interpreted."""

from __future__ import annotations

import platform

import torch
import triton

from lstm_triton.kernels.launch_config import interpreter_on


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device) -> dict:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        import os

        threads = torch.get_num_threads()
        name = f"{cpu_name()} ({os.cpu_count()} cores, {threads} torch thread{'s' * (threads != 1)})"
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "device": name,
        "device_type": device.type,
        "torch": torch.__version__,
        "triton": triton.__version__,
        "cudnn": str(cudnn) if cudnn else "n/a",
        "cuda": torch.version.cuda or "n/a",
        "hip": getattr(torch.version, "hip", None) or "n/a",  # a ROCm torch: "cudnn" is then MIOpen's version
        "interpreter": interpreter_on(),
        "python": platform.python_version(),
    }
