"""`ptrain sweep CONFIG key=v1,v2 ... [--seeds 0,1]`: the grid (cartesian product), one point after another,
each a `ptrain train` process of its own in output_dir/name/<sweep-id>/<point>/. A failed point does not stop
the sweep; running the same command again skips finished points and resumes checkpointed ones. Sweeps of one
grid running at once share its points: each point is claimed by one of them."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ptrain.config import SEED_KEY, to_yaml
from ptrain.errors import RunInUseError, SweepError
from ptrain.files.atomic import written_through
from ptrain.files.lock import acquire, describe, holder
from ptrain.outputs.run_dir import RUNNING
from ptrain.tasks import load_config
from ptrain.training.checkpointing.checkpoint import latest_complete
from ptrain.training.checkpointing.preemption import EXIT_CODES, Preemption

SWEEP_FILE = "sweep.json"
LOG_FILE = "train.log"
SET_BY_SWEEP = ("run_dir", "hparams", "train.resume")
WAIT_SECONDS = 1.0  # between looks at a point another sweep trains


@dataclass(frozen=True)
class Point:
    name: str
    overrides: tuple[str, ...]  # key=value, one per varied key


def parse_grid(args: list[str], seeds: str | None) -> tuple[list[str], dict[str, list[str]]]:
    """Split `key=v1,v2` arguments into fixed overrides (one value) and axes (several values), in given order."""
    fixed, axes = [], {}
    for arg in args:
        key, sep, text = arg.partition("=")
        if not sep or not key:
            raise SweepError(
                f"sweep argument '{arg}' is not of the form dotted.key=v1,v2 (e.g. train.learning_rate=1e-4,3e-4)"
            )
        if key in SET_BY_SWEEP:
            raise SweepError(f"sweep argument '{arg}': the sweep sets {key} itself for every point")
        if key in axes or any(f.startswith(f"{key}=") for f in fixed):
            raise SweepError(f"sweep argument '{arg}': {key} is given twice")
        values = split_values(text)
        if len(values) == 1:
            fixed.append(arg)
        else:
            axes[key] = values
    if seeds is not None:
        if SEED_KEY in axes or any(f.startswith(f"{SEED_KEY}=") for f in fixed):
            raise SweepError(f"give the seeds either with --seeds or with {SEED_KEY}=..., not both")
        axes[SEED_KEY] = split_values(seeds)
    if not axes:
        raise SweepError("nothing to sweep: give at least one key=v1,v2 with two or more values, or --seeds 0,1")
    return fixed, axes


def split_values(text: str) -> list[str]:
    """Comma-separated values; commas inside [..] or {..} belong to a YAML list or mapping value."""
    values, depth, current = [], 0, ""
    for char in text:
        depth += char in "[{"
        depth -= char in "]}"
        if char == "," and depth == 0:
            values.append(current)
            current = ""
        else:
            current += char
    values.append(current)
    if any(not v.strip() for v in values):
        raise SweepError(f"sweep values '{text}' contain an empty value")
    return [v.strip() for v in values]


def grid_points(axes: dict[str, list[str]]) -> list[Point]:
    """The cartesian product, named by the short keys and values (`learning_rate-0.001_seed-0`)."""
    last = [key.rsplit(".", 1)[-1] for key in axes]
    short = last if len(set(last)) == len(last) else list(axes)  # full keys when two short ones clash
    points = []
    for combo in itertools.product(*axes.values()):
        name = "_".join(f"{s}-{re.sub(r'[^A-Za-z0-9.+-]', '', v) or 'x'}" for s, v in zip(short, combo))
        points.append(Point(name, tuple(f"{k}={v}" for k, v in zip(axes, combo))))
    if len({p.name for p in points}) != len(points):
        raise SweepError("two sweep points would share a folder name; give values that differ in letters or digits")
    return points


def sweep(config: str, args: list[str], seeds: str | None, sweep_id: str | None, launcher: str | None) -> int:
    """Run every point not finished yet; returns 0 when all are finished, the signal's code when stopped."""
    fixed, axes = parse_grid(args, seeds)
    points = grid_points(axes)
    # every point's config is checked before the first one trains; the first names the sweep's folder (the
    # fixed keys alone may not validate: data.num_folds=5 needs the data.fold that the grid gives)
    base, *_ = [load_config(config, [*fixed, *point.overrides]) for point in points]
    spec = {"config": str(Path(config).resolve()), "fixed": fixed, "axes": axes, "resolved": to_yaml(base)}
    sweep_id = sweep_id or "sweep-" + hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:8]
    sweep_dir = Path(base.output_dir) / base.name / sweep_id
    record_sweep(sweep_dir, spec, points)
    prefix = shlex.split(launcher) if launcher else [sys.executable]
    print(f"ptrain: sweep {sweep_dir}: {len(points)} points ({' x '.join(f'{len(v)} {k}' for k, v in axes.items())})")
    stop = StopRequest().install()
    try:
        failed, stopped_code = run_points(config, fixed, list(axes), points, sweep_dir, prefix, stop)
    finally:
        stop.uninstall()
    if stopped_code is not None:
        print("ptrain: sweep stopped; run the same command again to continue it", file=sys.stderr)
        return stopped_code
    print(
        f"ptrain: sweep done: {len(points) - len(failed)} of {len(points)} points finished; "
        f"table: ptrain runs {sweep_dir}"
    )
    if failed:
        print(
            f"ptrain: failed points: {', '.join(failed)} (their train.log says why; run the sweep again to retry them)",
            file=sys.stderr,
        )
        return 1
    return 0


def run_points(
    config: str,
    fixed: list[str],
    keys: list[str],
    points: list[Point],
    sweep_dir: Path,
    prefix: list[str],
    stop: StopRequest,
) -> tuple[list[str], int | None]:
    """Every point in turn. A point another process trains (a second `ptrain sweep` of this grid, started on
    another GPU or by mistake) is left to it, and waited for at the end. Returns the names of the failed points,
    and the exit code when a signal stopped the sweep."""
    failed, elsewhere = [], []
    for number, point in enumerate(points, 1):
        label = f"{number}/{len(points)}"
        code = 0 if stop.received else run_point(config, fixed, keys, point, sweep_dir, prefix, label, stop)
        if code is None:
            elsewhere.append((label, point))
        elif code in EXIT_CODES.values() or stop.received:
            return failed, code or EXIT_CODES[stop.received]
        elif code != 0:
            failed.append(point.name)
    for label, point in elsewhere:
        code = wait_for_point(point, sweep_dir, label, stop)
        if stop.received:
            return failed, EXIT_CODES[stop.received]
        if code != 0:
            failed.append(point.name)
    return failed, None


def record_sweep(sweep_dir: Path, spec: dict, points: list[Point]) -> None:
    """sweep.json holds the grid; a folder that holds another grid is refused, never mixed. Two sweeps that start
    at once each write their own temporary file; the grid renamed into place last is the one both compare with."""
    path = sweep_dir / SWEEP_FILE
    if not path.is_file():
        sweep_dir.mkdir(parents=True, exist_ok=True)
        points_list = [{"name": p.name, "overrides": list(p.overrides)} for p in points]
        with written_through(path, path.with_name(f"{SWEEP_FILE}.{os.getpid()}.tmp")) as tmp:
            tmp.write_text(json.dumps({**spec, "points": points_list}, indent=2))
    saved = json.loads(path.read_text())
    if {k: saved.get(k) for k in spec} != spec:
        raise SweepError(f"{sweep_dir} holds a different sweep ({path}); choose another --id")


def run_point(
    config: str,
    fixed: list[str],
    keys: list[str],
    point: Point,
    sweep_dir: Path,
    prefix: list[str],
    label: str,
    stop: StopRequest,
) -> int | None:
    """One point as its own process, claimed for this sweep while it trains: skipped when finished, resumed when
    it has a checkpoint. None when another process has claimed it."""
    point_dir = sweep_dir / point.name
    if (point_dir / "metrics.json").is_file():
        print(f"ptrain: [{label}] {point.name}: finished before, skipped")
        return 0
    try:
        claim = acquire(claim_file(point_dir), f"sweep point {point_dir}")
    except RunInUseError as err:
        print(f"ptrain: [{label}] {point.name}: trained by {describe(err.owner)}; left to it")
        return None
    with claim:
        return train_point(config, [*fixed, *point.overrides], keys, point_dir, prefix, label, stop)


def claim_file(point_dir: Path) -> Path:
    """SWEEP/<point>.json, the owner record of SWEEP/<point>.lock (files/lock.py): held by the sweep that trains
    the point (outside the point's folder, which a failed attempt's retry deletes)."""
    return point_dir.with_name(point_dir.name + ".json")


def train_point(
    config: str,
    overrides: list[str],
    keys: list[str],
    point_dir: Path,
    prefix: list[str],
    label: str,
    stop: StopRequest,
) -> int:
    """`ptrain train` of a claimed point; its exit code (0 also when another sweep finished it before the claim)."""
    if (point_dir / "metrics.json").is_file():
        print(f"ptrain: [{label}] {point_dir.name}: finished before, skipped")
        return 0
    extra = [f"run_dir={point_dir}", f"hparams={json.dumps(keys)}"]
    if latest_complete(point_dir) is not None:
        extra.append("train.resume=auto")
    elif point_dir.exists():
        owner = holder(point_dir / RUNNING)
        if owner is not None:  # a `ptrain train run_dir=POINT` started by hand: its folder is not deleted
            print(f"ptrain: [{label}] {point_dir.name}: in use by {describe(owner)}; not started", file=sys.stderr)
            return 1
        shutil.rmtree(point_dir)  # an attempt that failed before its first checkpoint: nothing to keep
    point_dir.mkdir(parents=True, exist_ok=True)
    command = [*prefix, "-m", "ptrain", "train", config, *overrides, *extra]
    started = time.perf_counter()
    with open(point_dir / LOG_FILE, "a") as log:
        log.write(f"$ {shlex.join(command)}\n")
        log.flush()
        stop.child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        code = stop.child.wait()
        stop.child = None
    if code < 0:  # killed outside its own signal handling: report it as shells do
        code = 128 - code
    if (point_dir / "metrics.json").is_file():
        code = 0  # its results were written (a signal may have come after): finished, as a rerun will see it
    outcome = "finished" if code == 0 else f"failed (exit {code}), see {point_dir / LOG_FILE}"
    if code in EXIT_CODES.values():
        outcome = f"stopped by a signal (exit {code}); the next run of the sweep continues it"
    resumed = " (resumed)" if "train.resume=auto" in extra else ""
    print(f"ptrain: [{label}] {point_dir.name}{resumed}: {outcome} in {time.perf_counter() - started:.0f}s")
    return code


def wait_for_point(point: Point, sweep_dir: Path, label: str, stop: StopRequest) -> int:
    """A point another process claimed: wait until it lets go, then report what it left. It is not trained again
    here (a failed point is retried by the next run of the sweep, as after a sweep of one's own)."""
    point_dir = sweep_dir / point.name
    owner = holder(claim_file(point_dir))
    if owner is not None:
        print(f"ptrain: [{label}] {point.name}: waiting for {describe(owner)} to finish it")
    while owner is not None and not stop.received:
        time.sleep(WAIT_SECONDS)
        owner = holder(claim_file(point_dir))
    if (point_dir / "metrics.json").is_file():
        print(f"ptrain: [{label}] {point.name}: finished by another process")
        return 0
    if not stop.received:
        print(
            f"ptrain: [{label}] {point.name}: not finished by the other process ({point_dir / LOG_FILE} says why); "
            "run the sweep again to continue it",
            file=sys.stderr,
        )
    return 1


class StopRequest(Preemption):
    """Remembers a Ctrl-C or SIGTERM, so no further point starts. The running point checkpoints and exits: the
    terminal sends Ctrl-C to it too, and a SIGTERM (to the sweep alone, as schedulers send it) is passed on."""

    def __init__(self):
        super().__init__()
        self.child: subprocess.Popen | None = None

    def _handle(self, signum, frame) -> None:
        self.received = signal.Signals(signum).name
        if signum == signal.SIGTERM and self.child is not None:
            self.child.send_signal(signal.SIGTERM)
