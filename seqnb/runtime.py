"""Process set-up for a run: seeds, threads, device, and the versions banner every notebook prints first."""

from __future__ import annotations

import ctypes
import functools
import platform

import torch
import transformers

from .config import RunConfig


def device_for(cfg: RunConfig) -> torch.device:
    """`cfg.device`, with "auto" meaning the GPU when there is one."""
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.device)


def seeded_generator(seed: int, device: torch.device | str) -> torch.Generator | None:
    """A seeded `torch.Generator` on `device`: CUDA sampling rejects a CPU generator, so every generator that meets
    a model is made here, on the model's device. On the `meta` device (shape-only runs, nothing is drawn) None."""
    device = torch.device(device)
    if device.type == "meta":
        return None
    return torch.Generator(device=device).manual_seed(seed)


def generator_state(generator: torch.Generator | None) -> tuple[str, torch.Tensor] | None:
    """What a checkpoint keeps of a generator: its device and state (None for none)."""
    return None if generator is None else (str(generator.device), generator.get_state())


def restore_generator(state: tuple[str, torch.Tensor] | None) -> torch.Generator | None:
    """The generator `generator_state` described, on its device, continuing where it stopped."""
    if state is None:
        return None
    device, rng = state
    generator = seeded_generator(0, device)
    generator.set_state(rng)
    return generator


def check_generator(generator: torch.Generator | None, device: torch.device | str, param: str = "generator") -> None:
    """Raise a clear error when `generator` lives on another device than the tensors it samples."""
    device = torch.device(device)
    if generator is not None and device.type != "meta" and generator.device.type != device.type:
        raise ValueError(
            f"parameter {param!r}: the generator is on {generator.device}, the model on {device}. Fix: make it "
            f"with seqnb.runtime.seeded_generator(seed, device) on the model's device"
        )


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of a model's (first) parameter: where its inputs, masks and generators must live."""
    return next(model.parameters()).device


@functools.cache
def keep_freed_memory() -> bool:
    """Keep the memory that freed tensors leave inside the process (Linux, glibc; process-wide, once).

    By default glibc hands the top of its heap back to the OS once more than about twice its largest recent block
    lies free there, which happens at the end of every CPU training step; the next step's activations are then
    page-faulted in again (thousands of faults a step, about a tenth of a tiny model's step on 2 cores). This keeps
    up to 1 GiB of freed heap (trim threshold) and maps only blocks of 32 MiB or more on their own (glibc's own
    ceiling for its adaptive mmap threshold). Returns whether the setting was made (False off glibc)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    return bool(libc.mallopt(m_mmap_threshold, 32 * 2**20) and libc.mallopt(m_trim_threshold, 2**30))


def setup(cfg: RunConfig) -> torch.device:
    """Seed python, numpy and torch, fix the CPU thread count, create the run folder; print the banner and, at the
    paper preset, the estimated peak GPU memory of one training step (`seqnb.memory`). On the CPU, freed tensor
    memory stays in the process (`keep_freed_memory`)."""
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    transformers.set_seed(cfg.seed)
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    device = device_for(cfg)
    if device.type == "cpu":
        keep_freed_memory()
    print(banner(cfg, device))
    if cfg.preset == "paper":
        from .memory import memory_report

        print(memory_report(cfg))
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
