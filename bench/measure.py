"""Measuring a timed phase: wall time and CPU utilisation, UNet forward/backward counts, peak memory, and the
alternating repeats that ``--repeat`` adds (see ``run_bench.py`` for the CPU-utilisation definition)."""

from __future__ import annotations

import math
import os
import statistics
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, Optional


class UNetCounter:
    """Counts one UNet's forward calls, evaluated rows and backward passes (a forward hook on the UNet)."""

    def __init__(self, unet) -> None:
        self.forwards = self.rows = self.backwards = 0
        unet.register_forward_hook(self._hook)

    def _hook(self, module, args, output) -> None:
        self.forwards += 1
        self.rows += int(output.shape[0])
        if output.requires_grad:
            output.register_hook(self._count_backward)

    def _count_backward(self, grad) -> None:
        self.backwards += 1

    def snapshot(self) -> tuple[int, int, int]:
        """(forward calls, evaluated rows, backward passes) so far."""
        return self.forwards, self.rows, self.backwards


class UNetCounters:
    """The counts of every UNet the run has built (the main model, then each ``--precision`` model), summed."""

    def __init__(self, unets: Iterable = ()) -> None:
        self.counters = [UNetCounter(u) for u in unets]

    def add(self, unet) -> None:
        """Count ``unet`` too (a model loaded later in the run)."""
        self.counters.append(UNetCounter(unet))

    def snapshot(self) -> tuple[int, int, int]:
        """(forward calls, evaluated rows, backward passes) so far, over all counted UNets."""
        return tuple(sum(c.snapshot()[k] for c in self.counters) for k in range(3))


class PeakMemory:
    """Peak process RSS and GPU allocator peak during a block.

    On Linux the kernel's own high-water mark is reset before the block (``/proc/self/clear_refs``) and read after
    it, so nothing runs alongside the timed code. Elsewhere a thread samples RSS every 50 ms (it competes for the
    cores, so timings taken that way read a little high).
    """

    def __init__(self, torch) -> None:
        self.torch = torch

    @staticmethod
    def _hwm_bytes() -> Optional[int]:
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None

    @staticmethod
    def _reset_hwm() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            return True
        except OSError:
            return False

    @contextmanager
    def measure(self, out: dict) -> Iterator[None]:
        """Put the block's ``peak_rss_mib`` (and on CUDA ``gpu_start_mib``, ``peak_gpu_mib``) into ``out``."""
        cuda = self.torch.cuda.is_available()
        if cuda:
            self.torch.cuda.synchronize()
            self.torch.cuda.reset_peak_memory_stats()
            out["gpu_start_mib"] = round(self.torch.cuda.memory_allocated() / 2 ** 20, 1)
        kernel = self._hwm_bytes() is not None and self._reset_hwm()
        stop = threading.Event()
        peak = [0]
        thread = None
        if not kernel:
            import psutil

            proc = psutil.Process()
            peak[0] = proc.memory_info().rss

            def sample() -> None:
                while not stop.is_set():
                    peak[0] = max(peak[0], proc.memory_info().rss)
                    stop.wait(0.05)

            thread = threading.Thread(target=sample, daemon=True)
            thread.start()
        try:
            yield
        finally:
            if thread is not None:
                stop.set()
                thread.join()
            else:
                peak[0] = self._hwm_bytes() or 0
            out["peak_rss_mib"] = round(peak[0] / 2 ** 20, 1)
            if cuda:
                out["peak_gpu_mib"] = round(self.torch.cuda.max_memory_allocated() / 2 ** 20, 1)


def cpu_threads() -> int:
    """The T of the CPU-utilisation definition: torch's intra-op threads, at most the CPUs this process may use."""
    import torch

    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(torch.get_num_threads(), cpus))


def timed(fn: Callable[[], Any], cuda: bool) -> tuple[Any, float, Optional[float]]:
    """(result, wall seconds, CPU utilisation) of ``fn()``; on CUDA the device is synchronised before both clocks."""
    import torch

    if cuda:
        torch.cuda.synchronize()
    c0, t0 = time.process_time(), time.perf_counter()
    result = fn()
    if cuda:
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    return result, round(wall, 3), round(cpu / (wall * cpu_threads()), 3) if wall > 0 else None


def time_pairs(rows: list, fns: dict, repeat: int, cuda: bool) -> None:
    """Run each of ``fns`` (phase name -> callable) ``repeat - 1`` more times, alternating the order (forward, then
    backward), and set its row's ``wall_s`` to the median of all its runs (``wall_runs`` and ``cpu_util_runs`` keep
    every run; run k of each phase belongs to pair k)."""
    by_name = {r["phase"]: r for r in rows}
    names = [n for n in fns if n in by_name]
    runs = {n: [by_name[n]["wall_s"]] for n in names}
    utils = {n: [by_name[n].get("cpu_util")] for n in names}
    for k in range(1, repeat):
        for name in (names[::-1] if k % 2 else names):
            _, wall, util = timed(fns[name], cuda)
            runs[name].append(wall)
            utils[name].append(util)
            print(f"  {name:<52} {wall:8.2f} s  cpu util {util}  (repeat {k + 1}/{repeat})", flush=True)
    for name in names:
        by_name[name]["wall_runs"] = runs[name]
        by_name[name]["cpu_util_runs"] = utils[name]
        by_name[name]["wall_s"] = round(statistics.median(runs[name]), 3)


def psnr(a, b) -> float:
    """PSNR in dB of two images in [0, 1] (inf when equal)."""
    mse = float(((a.detach().double() - b.detach().double()) ** 2).mean())
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)

