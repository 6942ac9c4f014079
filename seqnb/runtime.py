"""Process set-up for a run: seeds, threads, device, and the versions banner every notebook prints first."""

from __future__ import annotations

import torch
import transformers

from .config import RunConfig


def device_for(cfg: RunConfig) -> torch.device:
    """`cfg.device`, with "auto" meaning the GPU when there is one."""
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.device)


def setup(cfg: RunConfig) -> torch.device:
    """Seed python, numpy and torch, fix the CPU thread count, create the run folder; print the banner."""
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    transformers.set_seed(cfg.seed)
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    device = device_for(cfg)
    print(banner(cfg, device))
    return device


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def banner(cfg: RunConfig, device: torch.device) -> str:
    from . import __version__

    return (
        f"seqnb {__version__} | torch {torch.__version__} | transformers {transformers.__version__} | "
        f"device {device_name(device)} | {cfg.notebook} preset={cfg.preset} seed={cfg.seed}\n"
        f"output_dir: {cfg.output_dir}"
    )
