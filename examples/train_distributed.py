"""DP-SGD of a reference generator over several processes, started by torchrun; rank 0 saves the model and ledger.

    torchrun --nproc_per_node 2 examples/train_distributed.py ddp-out    # CPU: gloo; with GPUs: NCCL
    genguard privacy verify ddp-out

Each rank reads the whole (embedded) data set and Poisson-samples its shard;
PrivateTrainer opens the process group from torchrun's environment. The
epsilon is that of one process with the same sample rate, sigma and steps.
"""
from __future__ import annotations

import sys
import uuid
from pathlib import Path

import torch.distributed as dist

from genguard.generators import make_generator
from genguard.generators.data import digits_split
from genguard.guardrails.privacy import PrivateTrainer, build_ledger, write_ledger


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "ddp-out")
    train, _ = digits_split()
    gen = make_generator("vae", epochs=3, batch_size=256, seed=0)
    gen.fit(train, trainer=PrivateTrainer(target_epsilon=4.0), progress=False)
    rank = dist.get_rank() if dist.is_initialized() else 0
    if rank == 0:  # the replicas are equal: one writes
        gen.save(out)
        ledger = build_ledger(gen.training_report_, generator="vae", run_id=uuid.uuid4().hex[:12], seed=0,
                              weights_path=out / "weights.safetensors")
        write_ledger(out, ledger)
        rep = gen.training_report_
        print(f"world size {rep['distributed']['world_size']}: epsilon {rep['epsilon']:.3f} over {rep['steps']} "
              f"steps; wrote {out}")
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
