"""Hostile inputs (fuzz): run every case of the fuzz test and count the answers.

    python bench/fuzz_report.py

Runs each case of tests/fuzz_cases.py exactly as tests/test_fuzz.py does (the CLI in-process
and/or the public API call, in a fresh folder that is also the working and the temporary
directory, under a 20-s alarm), then the sample of cases that run in a real process, and
writes the "Hostile inputs (fuzz)" section of docs/results.md: cases per kind, how many
passed, the exit codes seen, the cases still failing (each owned by another module's fix)
and the time taken.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the cases and their runner

from results_md import command, update_section
from test_fuzz import CASES, SUBPROCESS_SAMPLE, Outcome, run_case, run_real_process

TITLE = "Hostile inputs (fuzz)"


def run_all() -> tuple[list[Outcome], list[Outcome], float]:
    """Every case in-process, then the real-process sample; and the total wall time."""
    started = time.perf_counter()
    outcomes, real = [], []
    for case in CASES:
        with tempfile.TemporaryDirectory() as work:
            outcome = run_case(case, Path(work))
        outcome.problems = [problem.replace(work, "CASE") for problem in outcome.problems]  # no temporary names
        outcomes.append(outcome)
        print(f"{'ok  ' if not outcome.problems else 'FAIL'} {case.name}", flush=True)
    for name in SUBPROCESS_SAMPLE:
        with tempfile.TemporaryDirectory() as work:
            real.append(run_real_process(next(c for c in CASES if c.name == name), Path(work)))
    return outcomes, real, time.perf_counter() - started


def _codes(outcomes: list[Outcome]) -> str:
    counts = Counter(o.exit_code for o in outcomes if o.case.argv)
    return ", ".join(f"{'traceback' if code is None else code}: {n}" for code, n in sorted(
        counts.items(), key=lambda item: (item[0] is None, item[0] or 0)))


def report(outcomes: list[Outcome], real: list[Outcome], seconds: float) -> str:
    """The section's body: a table per kind, the real-process sample, the cases still failing."""
    kinds: dict[str, list[Outcome]] = defaultdict(list)
    for outcome in outcomes:
        kinds[outcome.case.kind].append(outcome)
    passed = sum(not o.problems for o in outcomes)
    cli, api = sum(bool(o.case.argv) for o in outcomes), sum(o.case.api is not None for o in outcomes)
    intro = (f"{len(outcomes)} hostile inputs, each written into a fresh folder and run in-process: {cli} through "
             f"the CLI (`avloc.cli.main`), {api} through the public Python API; {passed} passed. A case passes when "
             "the CLI exits non-zero with one stderr line `avloc: error: ...` naming the offending file (flags that "
             "do not parse: argparse's usage error), the API raises `AvlocError` naming it, nothing outside the "
             "case's output folder changed, no temporary file is left, and the output folder holds no final file "
             "after the failure. Checkpoints that hold pickled code never run it (a marker file would appear).")
    lines = [intro, "", "| kind | cases | CLI | API | passed | exit codes | slowest (s) |", "|---|---|---|---|---|---|---|"]
    for kind, group in [*kinds.items(), ("all", outcomes)]:
        lines.append(f"| {kind} | {len(group)} | {sum(bool(o.case.argv) for o in group)} | "
                     f"{sum(o.case.api is not None for o in group)} | {sum(not o.problems for o in group)} | "
                     f"{_codes(group)} | {max(o.seconds for o in group):.2f} |")
    sample = (f"Real processes (`python -m avloc`, and the `avloc` script for the checkpoint), one case of each of "
              f"{len(real)} kinds: {sum(not o.problems for o in real)} of {len(real)} exited non-zero with one "
              f"error line and no traceback (exit codes {_codes(real)}).")
    lines += ["", sample, ""]
    failing = [o for o in outcomes if o.problems]
    if failing:
        heading = (f"Still failing ({len(failing)}); each fix belongs to the module named, and the case is marked "
                   "xfail in tests/test_fuzz.py until it is made:")
        lines += [heading, "", *(f"- `{o.case.name}` ({o.case.owner or 'no owner'}): {o.problems[0]}"
                                 for o in failing), ""]
    lines += [f"Total time {seconds:.0f} s (in-process cases {sum(o.seconds for o in outcomes):.1f} s).",
              "", f"Command: `{command()}`"]
    return "\n".join(lines)


def main() -> None:
    outcomes, real, seconds = run_all()
    body = report(outcomes, real, seconds)
    print(body)
    update_section(TITLE, body)


if __name__ == "__main__":
    main()
