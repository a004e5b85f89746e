"""`python -m tests.gpu_launch ARGS`, under `accelerate launch` or alone: ptrain's CLI (`python -m ptrain ARGS`) with
Accelerate's state arranged as a GPU launch arranges it, so that FSDP2 and DeepSpeed run for real on this CPU over
gloo. Accelerate selects those engines only for GPU launches (for `Accelerator(cpu=True)` it stays on DDP, as
ptrain's own refusal says); this is a test fixture, never a product code path:

- the process group is formed as ptrain forms it on a CPU (PartialState(cpu=True): gloo), then PartialState records
  the launch as MULTI_GPU, as it would on GPUs, so that AcceleratorState turns an FSDP launch into FSDP;
- DeepSpeed: its CPU accelerator (DS_ACCELERATOR=cpu), its comm layer on the gloo group, and the Accelerator built
  with cpu=False (Accelerate takes DeepSpeed only then); DeepSpeed's shared-memory all-reduce, which only inference
  uses, is not compiled (it would JIT-build a C++ op for ~35 s per process);
- PTRAIN_TEST_GRAD_SCALER=SCALE: fp16 with a CPU grad scaler of that initial scale, as Accelerate gives fp16 on GPUs
  (on the CPU it gives fp16 autocast without loss scaling).
"""

from __future__ import annotations

import os
import runpy
import sys

os.environ.setdefault("DS_ACCELERATOR", "cpu")


def gpu_like_accelerator(build):
    """Accelerator(**kwargs) as `build` makes it, on a state arranged as above."""

    def accelerator(**kwargs):
        import torch
        from accelerate.state import PartialState
        from accelerate.utils import DistributedType

        state = PartialState(cpu=True)
        sharding = any(os.environ.get(f"ACCELERATE_USE_{name}") == "true" for name in ("FSDP", "DEEPSPEED"))
        if sharding and state.distributed_type == DistributedType.MULTI_CPU:
            PartialState._shared_state["distributed_type"] = DistributedType.MULTI_GPU
        if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false") == "true":
            import deepspeed
            import deepspeed.comm.torch  # noqa: F401 (deepspeed.comm.torch is torch itself: comm imports it)

            sys.modules["deepspeed.comm.torch"].build_shm_op = lambda: None
            deepspeed.init_distributed(dist_backend="gloo")
            os.environ.pop("ACCELERATE_USE_CPU", None)
            kwargs["cpu"] = False
        built = build(**kwargs)
        if "PTRAIN_TEST_GRAD_SCALER" in os.environ and built.mixed_precision == "fp16":
            built.scaler = torch.amp.GradScaler("cpu", init_scale=float(os.environ["PTRAIN_TEST_GRAD_SCALER"]))
            built.native_amp = True  # before prepare: the model's forward is wrapped in fp16 autocast
        return built

    return accelerator


def main() -> None:
    from ptrain.config import checks
    from ptrain.runtime import distributed

    distributed.Accelerator = gpu_like_accelerator(distributed.Accelerator)
    if "PTRAIN_TEST_GRAD_SCALER" in os.environ:
        checks._has_cuda = lambda: True  # fp16 is refused on machines without a GPU
    sys.argv = ["ptrain", *sys.argv[1:]]
    runpy.run_module("ptrain", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
