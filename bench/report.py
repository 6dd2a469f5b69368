"""The table of figures, and RESULTS.md around it.

Figures are medians over rounds, so that one disturbed round does not move
the verdict.  Every ratio is a speed ratio against tmpfs (above 1, ahead
of tmpfs), so that one kind of target fits every row.
"""

import collections
import dataclasses
import datetime
import os
import pathlib
import statistics
import subprocess

RESULTS = pathlib.Path(__file__).with_name("RESULTS.md")
NOTES_HEADING = "## Where the time goes"
SYSTEMS = ("holefs", "tmpfs", "passthrough_hp")


@dataclasses.dataclass
class Results:
    """Every figure of every round, and why a figure is missing where it is."""
    figures: dict = dataclasses.field(default_factory=lambda: collections.defaultdict(list))
    missing: dict = dataclasses.field(default_factory=dict)   # (label, system) -> reason

    def add(self, system, figures):
        for label, value in figures.items():
            self.figures[label, system].append(value)

    def median(self, label, system):
        values = self.figures.get((label, system))
        return statistics.median(values) if values else None


def number(value):
    """Three significant digits, without exponents, as people read figures."""
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if value >= 0.001 else f"{value:.2e}"


def ratio(metric, figure, tmpfs):
    if not figure or not tmpfs:
        return None
    return tmpfs / figure if metric.lower_is_better else figure / tmpfs


def ratio_cell(speed):
    return "-" if speed is None else f"{speed:.2f}"


def yes_no(met):
    return "" if met is None else ("yes" if met else "**NO**")


def verdict(metric, holefs, speed):
    """The target as written, and whether the median meets it."""
    if metric.ceiling is not None:
        met = holefs is not None and holefs <= metric.ceiling
        return f"<= {number(metric.ceiling)} {metric.unit}", met
    if metric.target is not None:
        written = f"<= {1 / metric.target:.3g}x tmpfs's" if metric.lower_is_better else \
            f">= {metric.target}"
        return written, speed is not None and speed >= metric.target
    return "", None


def cell(results, metric, system, footnotes):
    value = results.median(metric.label, system)
    if value is not None:
        return number(value)
    reason = results.missing.get((metric.label, system))
    if reason is None:
        return "-"
    marks = footnotes.setdefault(reason, f"[{len(footnotes) + 1}]")
    return f"n/a {marks}"


def table(workloads, results, rounds):
    """The results as a Markdown table, legend and footnotes included."""
    footnotes = {}
    lines = ["| workload | unit | holefs | tmpfs | passthrough_hp | holefs/tmpfs "
             "| passthrough_hp/tmpfs | target | met | ahead of passthrough_hp |",
             "|---|---|--:|--:|--:|--:|--:|---|---|---|"]
    for workload in workloads:
        for m in workload.metrics:
            holefs = results.median(m.label, "holefs")
            tmpfs = results.median(m.label, "tmpfs")
            speed = ratio(m, holefs, tmpfs)
            peer = ratio(m, results.median(m.label, "passthrough_hp"), tmpfs)
            target, met = verdict(m, holefs, speed)
            cells = [cell(results, m, s, footnotes) for s in SYSTEMS]
            ahead = None if speed is None or peer is None else speed >= peer
            lines.append(f"| {m.label} | {m.unit} | {' | '.join(cells)} | "
                         f"{ratio_cell(speed)} | {ratio_cell(peer)} | {target} | "
                         f"{yes_no(met)} | {yes_no(ahead)} |")
    lines += ["", f"Medians over {rounds} round(s), each figure on a fresh mount, the "
              "filesystems in rotating order.  The ratios are speed ratios of the medians "
              "against tmpfs (tmpfs/x for ms/call and B/file): above 1, ahead of tmpfs.  "
              "passthrough_hp serves a tmpfs of its own.  Memory is daemon RSS growth "
              "for holefs, kernel slab growth for tmpfs, and both for passthrough_hp, "
              "whose files live in its tmpfs (its slab figure also holds the FUSE "
              "mount's kernel inodes and dentries, which holefs's leaves out)."]
    lines += [f"{mark} {reason}" for reason, mark in footnotes.items()]
    return "\n".join(lines)


def git(*args):
    return subprocess.run(["git", *args], capture_output=True, text=True,
                          cwd=RESULTS.parent).stdout.strip()


def machine():
    """What the figures depend on: the code measured, the CPUs and the kernel."""
    commit = git("rev-parse", "--short", "HEAD")
    if git("status", "--porcelain", "--", "holefs"):
        commit += " with uncommitted changes in holefs/"
    return (f"Measured {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z} "
            f"at commit {commit}, on {os.cpu_count()} CPUs, Linux {os.uname().release}.")


def kept_notes():
    """The hand-written section at the bottom of RESULTS.md, which a run keeps."""
    if RESULTS.exists():
        text = RESULTS.read_text()
        if NOTES_HEADING in text:
            return text[text.index(NOTES_HEADING):]
    return f"{NOTES_HEADING}\n\n(Hand-written notes; `--write-results` keeps this section.)\n"


def write_results(body, command):
    RESULTS.write_text(f"# holefs benchmark results\n\n{machine()}\n\n"
                       f"Command: `{command}`\n\n{body}\n\n{kept_notes()}")
