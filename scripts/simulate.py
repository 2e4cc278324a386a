#!/usr/bin/env python3
"""Run the deterministic raft simulator over many seeds and print one summary line.

    scripts/simulate.py --seeds 10000 --steps 2000 [--seed S] [--loss P] [--crashes] [--no-partitions] [--pauses]
                        [--membership [--member-rate R]] [--queues]

Seeds run from ``--seed`` (default 0) to ``--seed + --seeds - 1``; ``--seed S --seeds 1`` replays
one seed exactly. Any violation prints the seed, the step and the failed check, and the exit status
is 1. leader_time is the share of simulated ticks, after the first election, during which a live
leader shares its term with a quorum of the live nodes it can reach; mean_election_ticks is the mean
length of the periods without one. With ``--membership`` the leader also adds new nodes as learners,
promotes them and removes members (itself included) at ``--member-rate`` per step, and the line counts the
changes proposed and refused (a change waits for the previous one; a learner must catch up first).
With ``--queues`` every node runs the queue state machine and clients enqueue with idempotency keys (retried
across leader changes), delay records, consume, fail and dead-letter them (taskflux/domain/sim_workload.py);
the line adds what they did.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from taskflux.domain.sim_workload import QueueWorkload
from taskflux.raft.sim import SimConfig, Simulation, Violation

QUEUE_PROPOSE_RATE = 0.2  # the queue clients' steps: producing, consuming and ticking share them


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=1, help="how many seeds to run")
    parser.add_argument("--steps", type=int, default=2000, help="steps per seed")
    parser.add_argument("--seed", type=int, default=0, help="the first seed")
    parser.add_argument("--loss", type=float, default=0.0, help="probability that a message is dropped")
    parser.add_argument("--crashes", action="store_true", help="crash and restart nodes at random")
    parser.add_argument("--crash-rate", type=float, default=SimConfig().crash_rate, help="crashes per tick")
    parser.add_argument("--no-partitions", action="store_true", help="never partition the network")
    parser.add_argument("--pauses", action="store_true", help="stall nodes at random (GC / VM pauses)")
    parser.add_argument("--nodes", type=int, default=0, choices=(0, 1, 3, 5), help="0: 1, 3 or 5 by seed")
    parser.add_argument("--membership", action="store_true", help="add, promote and remove nodes at run time")
    parser.add_argument("--member-rate", type=float, default=SimConfig().member_rate,
                        help="membership changes tried per step")
    parser.add_argument("--queues", action="store_true", help="the queue state machine and its clients on top")
    parser.add_argument("--verbose", action="store_true", help="print one line per seed")
    args = parser.parse_args(argv)
    config = SimConfig(
        steps=args.steps,
        nodes=args.nodes,
        loss=args.loss,
        crashes=args.crashes,
        crash_rate=args.crash_rate,
        partitions=not args.no_partitions,
        pause_rate=0.002 if args.pauses else 0.0,
    )
    if args.membership:
        config = dataclasses.replace(config, membership=True, member_rate=args.member_rate, wipe_rate=0.0)
    flags = f"--steps {args.steps}" + (f" --loss {args.loss}" if args.loss else "")
    flags += (" --crashes" if args.crashes else "") + (" --no-partitions" if args.no_partitions else "")
    flags += " --pauses" if args.pauses else ""
    flags += f" --crash-rate {args.crash_rate}" if args.crash_rate != SimConfig().crash_rate else ""
    flags += f" --nodes {args.nodes}" if args.nodes else ""
    flags += " --membership" if args.membership else ""
    flags += f" --member-rate {args.member_rate}" if args.member_rate != SimConfig().member_rate else ""
    flags += " --queues" if args.queues else ""
    if args.queues:
        config = dataclasses.replace(config, propose_rate=QUEUE_PROPOSE_RATE)
    violations = leader_ticks = counted_ticks = changes = refused = 0
    work: dict[str, int] = {}
    elections: list[int] = []
    for seed in range(args.seed, args.seed + args.seeds):
        sim = Simulation(seed, config, QueueWorkload if args.queues else None)
        try:
            result = sim.run()
        except Violation as exc:
            violations += 1
            print(f"VIOLATION {exc}  (replay: scripts/simulate.py --seed {seed} {flags})", flush=True)
            continue
        except Exception as exc:  # the core's own assertion, or the simulator's: as bad as a violation
            violations += 1
            print(f"CRASH seed={seed} step={sim.step_no}: {type(exc).__name__}: {exc}  "
                  f"(replay: scripts/simulate.py --seed {seed} {flags})", flush=True)
            continue
        if isinstance(sim.workload, QueueWorkload):
            for name, value in sim.workload.stats.items():
                work[name] = work.get(name, 0) + value
        changes += sim.stats_changes
        refused += sim.stats_changes_refused
        leader_ticks += result.leader_ticks
        counted_ticks += result.counted_ticks
        elections += result.elections
        if args.verbose:
            share = result.leader_ticks / max(result.counted_ticks, 1)
            print(f"seed={seed} ticks={result.ticks} committed={result.committed} leader_time={share:.1%}")
    leader_time = 100.0 * leader_ticks / max(counted_ticks, 1)
    mean_election = sum(elections) / max(len(elections), 1)
    print(
        f"seeds={args.seeds} steps={args.steps} violations={violations} "
        f"leader_time={leader_time:.2f}% mean_election_ticks={mean_election:.1f}"
        + (f" changes={changes} refused={refused}" if args.membership else "")
        + "".join(f" {name}={value}" for name, value in work.items())
    )
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
