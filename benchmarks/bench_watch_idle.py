"""What a watched folder of processed files costs while nothing arrives: events vs poll.

    python benchmarks/bench_watch_idle.py [--files 30000] [--seconds 30] [--poll-s 1.0] \
        [--json OUT]

1. Creates N small real PNG files in a temporary folder and processes them once, as the
   daemon would: a replay through the folder source, each frame's record committed to an
   outbox (on /dev/shm when there is one: preparing is not what is measured).
2. Starts two child processes side by side, each a folder source watching that folder with
   that outbox: ``watch_method = "events"`` (inotify) and ``"poll"`` (a listing every
   ``poll_s``). Each waits until its first listing is done and a few seconds more, then
   measures for ``--seconds``: CPU share (process CPU time over wall time, all threads) and
   RSS (VmRSS, and VmHWM, the peak) from /proc/self/status.
3. Prints a table and the poll / events ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.service.config import validate
from edge.service.outbox import Outbox
from edge.service.sources import open_source

_WARM_UP_S = 3.0  # after the first listing: its garbage collected, the observer settled


def _source(folder: Path, outbox: Outbox, method: str | None, poll_s: float = 1.0) -> Any:
    spec: dict[str, Any] = {"kind": "folder", "path": str(folder)}
    if method is not None:
        spec.update(watch=True, watch_method=method, poll_s=poll_s)
    return open_source(validate({"bundle": "b", "source": spec}).source, method is None, outbox)


def prepare(root: Path, n: int) -> tuple[Path, Path]:
    """N processed files: the folder and the outbox whose records say so."""
    folder = root / "scanner-out"
    folder.mkdir()
    data = cv2.imencode(".png", np.full((16, 16, 3), (140, 60, 180), np.uint8))[1].tobytes()
    for i in range(n):
        (folder / f"slide_{i:06d}.png").write_bytes(data)
    shm = Path("/dev/shm")
    db_dir = Path(tempfile.mkdtemp(dir=shm)) if shm.is_dir() else root
    outbox = Outbox(db_dir / "outbox.sqlite3", n + 10, "block")
    source = _source(folder, outbox, None)
    source.open()
    for frame in source.frames(threading.Event()):
        outbox.put("bench/result", lambda seq, mid: b"{}", seen_key=frame.seen_key)
    outbox.close()
    return folder, db_dir / "outbox.sqlite3"


def _memory_kb() -> dict[str, int]:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


def child(method: str, folder: Path, db: Path, seconds: float, poll_s: float) -> None:
    """One watcher: report its idle CPU share and memory as one JSON line."""
    outbox = Outbox(db, 10_000_000, "block")
    source = _source(folder, outbox, method, poll_s)
    stop = threading.Event()
    frames: list[Any] = []

    def run() -> None:
        source.open()
        frames.extend(source.frames(stop))

    threading.Thread(target=run, daemon=True).start()
    while source.full_scans < 1:  # the first listing (and the records' refresh) takes a while
        stop.wait(0.05)
    stop.wait(_WARM_UP_S)
    cpu0, wall0 = time.process_time(), time.monotonic()
    stop.wait(seconds)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    report = {"method": method, "cpu_share": cpu / wall, "frames": len(frames), **_memory_kb()}
    report["full_scans"] = source.full_scans
    print(json.dumps(report), flush=True)
    stop.set()


def side_by_side(folder: Path, db: Path, seconds: float, poll_s: float) -> list[dict[str, Any]]:
    procs = []
    for method in ("events", "poll"):
        # One outbox per watcher: a daemon holds its outbox alone (edge.outbox_lock).
        own = db.with_name(f"outbox-{method}.sqlite3")
        shutil.copyfile(db, own)
        common = ["--folder", str(folder), "--db", str(own), "--seconds", str(seconds)]
        procs.append(
            subprocess.Popen(
                [sys.executable, __file__, "--child", method, *common, "--poll-s", str(poll_s)],
                stdout=subprocess.PIPE,
                text=True,
            )
        )
    reports = []
    for proc in procs:
        out, _ = proc.communicate(timeout=seconds + 600)
        if proc.returncode != 0:
            raise SystemExit(f"a watcher failed (exit {proc.returncode})")
        reports.append(json.loads(out.strip().splitlines()[-1]))
    return reports


def table(reports: list[dict[str, Any]], n: int, seconds: float, poll_s: float) -> str:
    rows = [
        f"watching {n} processed files, idle, for {seconds:.0f} s (poll_s {poll_s}):",
        "",
        "| watch_method | CPU (% of a core) | RSS (MiB) | peak RSS (MiB) | full listings |",
        "|---|---|---|---|---|",
    ]
    for r in reports:
        rows.append(
            f"| {r['method']} | {100 * r['cpu_share']:.2f} | {r['VmRSS'] / 1024:.1f} | "
            f"{r['VmHWM'] / 1024:.1f} | {r['full_scans']} |"
        )
    events, poll = reports
    cpu_ratio = poll["cpu_share"] / max(events["cpu_share"], 1e-9)
    rows += [
        "",
        f"poll / events: CPU x{cpu_ratio:.0f}, RSS x{poll['VmRSS'] / events['VmRSS']:.2f}",
    ]
    if events["frames"] or poll["frames"]:
        rows.append(f"frames classified again: {events['frames']} events, {poll['frames']} poll")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--files", type=int, default=30_000, help="processed files in the folder")
    parser.add_argument("--seconds", type=float, default=30.0, help="idle time measured")
    parser.add_argument("--poll-s", type=float, default=1.0, help="poll mode's interval")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the numbers here")
    parser.add_argument("--child", choices=["events", "poll"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.folder, args.db, args.seconds, args.poll_s)
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-watch-") as tmp:
        t0 = time.monotonic()
        folder, db = prepare(Path(tmp), args.files)
        print(f"prepared {args.files} processed files in {time.monotonic() - t0:.0f} s")
        try:
            reports = side_by_side(folder, db, args.seconds, args.poll_s)
        finally:
            for path in db.parent.glob("outbox*"):
                path.unlink()
            if db.parent != Path(tmp):
                os.rmdir(db.parent)
    print(table(reports, args.files, args.seconds, args.poll_s))
    if args.json:
        args.json.write_text(json.dumps(reports, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
