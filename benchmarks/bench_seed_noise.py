"""Seed-to-seed spread of a cpu-ladder rung's final loss at a given budget (the noise the
review's ``scaling_regime`` check compares the rungs against).

Usage: python benchmarks/bench_seed_noise.py --rung w32 --lr 5e-3 --steps 768 [--batch 8] [--seeds 0,1]
Trains the rung once per seed with the built-in data (one thread, warmup 0.1, cosine) and prints
each seed's final loss, per-domain losses and wall time, then the spread (max - min).
Measured on two cores: w32 at lr 1e-2, 384 steps: 2.319 / 2.118 (spread 0.2: mid-transition);
w32 at lr 5e-3, 768 steps: 1.7405 / 1.7451; w128 at lr 2.5e-3, 768 steps: 1.456.
"""

from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rung", default="w32", help="a rung of the cpu ladder")
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--steps", type=int, default=768)
    parser.add_argument("--batch", type=int, default=8, help="sequences of 128 bytes per step")
    parser.add_argument("--seeds", default="0,1", help="comma-separated training seeds")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")   # before torch is imported

    from proxy.backends import load_backend
    from proxy.data import load_data
    from proxy.hparams import TrainHParams
    from proxy.ladder import get_ladder

    backend, data = load_backend("torch"), load_data()
    config = get_ladder("cpu").rung(args.rung).config
    hparams = TrainHParams(lr=args.lr, batch_size=args.batch, tokens=args.steps * args.batch * config.seq_len)
    losses = []
    for seed in (int(s) for s in args.seeds.split(",")):
        t0 = time.time()
        r = backend.train(config, hparams, data, seed)
        losses.append(r.final_loss)
        domains = ", ".join(f"{d} {v:.3f}" for d, v in sorted(r.eval_loss_by_domain.items()))
        print(f"{args.rung} lr {args.lr:g} {args.steps} steps x {args.batch}: seed {seed} loss {r.final_loss:.4f} "
              f"({domains}) {time.time() - t0:.1f} s", flush=True)
    print(f"spread over {len(losses)} seeds: {max(losses) - min(losses):.4f} nats")


if __name__ == "__main__":
    main()
