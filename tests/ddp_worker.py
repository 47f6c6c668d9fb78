"""Worker for tests/test_distributed.py, launched by ``torchrun --nproc_per_node 2`` (gloo on CPU).

Runs the same jobs as the test's single-process reference and, on rank 0, writes the trained students'
tensors to ``OUT/<job>.safetensors``. Everything trains in float64 (see ``_ddp_jobs.DDP_EQUAL_TOL``).
Jobs: ``symclone.distill.distill`` with family cloning (blocks student, 6 Adam steps) and function
cloning (mlp student, 6 SGD steps), 2 epochs of training a C4-symmetrized classifier with
``symclone.trainer.fit`` (interrupted after epoch 1 and resumed), ``symclone symmetrize`` on a tiny cloned run (in one go, and
stopped after epoch 1 then resumed), and ``symclone clone`` command lines (CLI_JOBS: family cloning
with Adam, function cloning with SGD and an equivariance penalty), and anchored fine-tuning (``finetune(..., ctx=ctx)``).
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from symclone.distill import distill
from symclone.distributed import DistributedContext
from symclone.trainer import fit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _ddp_jobs import (CLI_JOBS, JOBS, SYM_ARGS, SYM_CHECKPOINT, TEACHER_ARGS, build, build_finetune,  # noqa: E402
                       build_symmetrized, float64_default, teacher_params)


def main(out: str) -> None:
    torch.set_num_threads(1)
    out = Path(out)
    with DistributedContext.from_env(device="cpu") as ctx, float64_default():
        assert ctx.world_size == 2 and ctx.backend == "gloo"
        results = {}
        for name in JOBS:
            teacher, student, cfg = build(name)
            distill(student, teacher, None, cfg, ctx=ctx)
            results[name] = student
        model, data, loss_fn = build_symmetrized()
        fit(model, data, loss_fn, epochs=2, batch_size=8, lr=1e-2, ctx=ctx, progress=False, stop_after=1,
            checkpoint=out / "ck" / "sym")
        model, data, loss_fn = build_symmetrized()  # resume the second epoch from rank 0's checkpoint
        r = fit(model, data, loss_fn, epochs=2, batch_size=8, lr=1e-2, ctx=ctx, progress=False,
                checkpoint=out / "ck" / "sym", resume=True)
        assert r["resumed_from"] == 1 and r["world_size"] == 2
        results["symmetrized"] = model
        from symclone.finetune import finetune

        model, task, kw = build_finetune()
        finetune(model, task, ctx=ctx, checkpoint=str(out / "ck" / "finetune"), **kw)
        results["finetune"] = model
        from symclone.cli import main as cli

        for name, argv in CLI_JOBS.items():  # the real CLI under torchrun (it joins the existing group)
            assert cli(argv + ["--out", str(out / name)]) == 0
        assert cli(TEACHER_ARGS + ["--data-root", str(out / "fm"), "--out", str(out / "cli_teacher")]) == 0
        results["cli_teacher"] = teacher_params(out / "cli_teacher" / "teacher")
        # symclone symmetrize on the run directories the test prepared: in one go, and stopped after
        # epoch 1 then resumed from rank 0's checkpoint
        assert cli(["symmetrize", str(out / "sym_run")] + SYM_ARGS) == 0
        assert cli(["symmetrize", str(out / "sym_resumed")] + SYM_ARGS + ["--stop-after", "1"]) == 0
        assert (out / "sym_resumed" / SYM_CHECKPOINT).exists()
        assert cli(["symmetrize", str(out / "sym_resumed")] + SYM_ARGS + ["--resume"]) == 0
        if ctx.is_main:
            for name, s in results.items():
                sd = s if isinstance(s, dict) else s.state_dict()
                save_file({k: v.contiguous() for k, v in sd.items()}, str(out / f"{name}.safetensors"))
        ctx.barrier()


if __name__ == "__main__":
    main(sys.argv[1])
