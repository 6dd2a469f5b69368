"""python -m bench: holefs against kernel tmpfs, workload by workload.

Run as root from the repository root with the venv's python.  Every round
runs every chosen workload on each filesystem in turn, rotating which goes
first, so that slow drift in the machine touches all alike.  The peer,
libfuse's passthrough_hp over a tmpfs, shows what a C daemon does for the
same requests.
"""

import argparse
import dataclasses
import os
import shlex
import sys

from . import mounts, passthrough_hp, report
from .workloads import QUICK, WORKLOADS, Scale


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, help="rounds per figure (default 3, 1 with --quick)")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--only", action="append", metavar="NAME",
                        help="run only these workloads (repeat or comma-separate): "
                        + ", ".join(w.name for w in WORKLOADS))
    parser.add_argument("--million", action="store_true",
                        help="memory workload with 1,000,000 files instead of 100,000")
    parser.add_argument("--no-peer", action="store_true",
                        help="skip libfuse's passthrough_hp as the C peer")
    parser.add_argument("--spill-parent", default="/var/tmp", metavar="DIR",
                        help="local-disk directory for holefs's spill file (default /var/tmp)")
    parser.add_argument("--holefs-options", default="", metavar="OPTS",
                        help="more -o options for every holefs mount, as writeback_cache "
                        "for an A/B")
    parser.add_argument("--write-results", action="store_true",
                        help="write the table into bench/RESULTS.md, keeping its notes")
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 3)
    return parser, args


def chosen_workloads(parser, only):
    if not only:
        return WORKLOADS
    names = {n.strip() for item in only for n in item.split(",") if n.strip()}
    unknown = names - {w.name for w in WORKLOADS}
    if unknown:
        parser.error(f"unknown workload(s): {', '.join(sorted(unknown))}")
    return tuple(w for w in WORKLOADS if w.name in names)


def scale_for(args):
    scale = QUICK if args.quick else Scale()
    if args.million:
        scale = dataclasses.replace(scale, empty_files=1_000_000)
    return scale


def find_peer(args):
    """passthrough_hp's binary, or the reason there is none, which the table shows."""
    if args.no_peer:
        return None, "passthrough_hp not run (--no-peer)"
    try:
        return passthrough_hp.binary(), None
    except passthrough_hp.PeerUnavailable as e:
        return None, str(e)


def systems_for(workload, round_no, peer):
    """The filesystems to run a workload on this round, first one rotating."""
    systems = ["holefs", "tmpfs"]
    if peer and workload.peer_note is None:
        systems.append("passthrough_hp")
    turn = round_no % len(systems)
    return systems[turn:] + systems[:turn]


def mount(system, workload, scale, args, peer):
    if system == "tmpfs":
        return mounts.tmpfs()
    if system == "passthrough_hp":
        return mounts.passthrough_hp(peer)
    if workload.spill:
        return mounts.holefs_spilling(f"{scale.spill_ram_mib}M", args.spill_parent,
                                      args.holefs_options)
    return mounts.holefs(args.holefs_options)


def measure(system, workload, scale, args, peer, results):
    """One workload on one fresh mount; a failure costs only these figures."""
    try:
        with mount(system, workload, scale, args, peer) as fs:
            figures = workload.run(fs, scale)
    except (OSError, RuntimeError) as e:
        for m in workload.metrics:
            results.missing[m.label, system] = f"{system} failed: {e}"
        print(f"    {system:<14} FAILED: {e}", file=sys.stderr)
        return
    results.add(system, figures)
    print(f"    {system:<14} " + "  ".join(f"{k} {report.number(v)}" for k, v in figures.items()),
          file=sys.stderr, flush=True)


def note_missing_peer(workloads, peer, peer_reason, results):
    for workload in workloads:
        reason = peer_reason or workload.peer_note
        if reason:
            for m in workload.metrics:
                results.missing[m.label, "passthrough_hp"] = reason


def command_line(argv):
    """The command as typed from the repository root, for RESULTS.md."""
    python = os.path.relpath(sys.executable) if sys.executable.startswith(os.getcwd()) \
        else sys.executable
    return shlex.join([python, "-m", "bench", *argv])


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser, args = parse_args(argv)
    if os.geteuid() != 0:
        parser.error("must run as root: it mounts tmpfs and drops the page cache")
    workloads = chosen_workloads(parser, args.only)
    scale = scale_for(args)
    peer, peer_reason = find_peer(args)
    results = report.Results()
    note_missing_peer(workloads, peer, peer_reason, results)
    for round_no in range(args.rounds):
        for workload in workloads:
            print(f"round {round_no + 1}/{args.rounds} {workload.name}", file=sys.stderr)
            for system in systems_for(workload, round_no, peer):
                measure(system, workload, scale, args, peer, results)
    body = report.table(workloads, results, args.rounds)
    print(body)
    if args.write_results:
        report.write_results(body, command_line(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
