#!/usr/bin/env python3
"""Where pgdr wal-fetch spends its time: per-phase timings of the prefetch worker's path.

    .venv/bin/python bench/profile_wal_fetch.py --config C --credentials K \\
        --first 000000010000000000000011 --count 32 [--workers 2]

Against an existing archive (for example the "corpus" archive a `run_wal.py --keep` run
leaves in its work directory), fetches COUNT consecutive segments the way
wal_fetch._prefetch_worker does (storage.head + storage.get + zstd decompress +
spool.write_atomic, which fsyncs), first one at a time with every phase timed, then with
WORKERS threads, with and without the fsync, and reports segments/s for each. Also times the
foreground `pgdr wal-fetch` call on a staged segment (the path PostgreSQL waits on when
prefetch keeps ahead). Read-only on the repository; writes only under a temporary directory.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ENGINE = REPO / "plugins" / "module_utils" / "_pgdr"
SEG = 16 * 1024 * 1024


def load_engine():
    spec = importlib.util.spec_from_file_location("pgdr", ENGINE / "__init__.py",
                                                  submodule_search_locations=[str(ENGINE)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["pgdr"] = module
    spec.loader.exec_module(module)


def names_from(first: str, count: int) -> list[str]:
    per = 0x100000000 // SEG
    tli, segno = int(first[:8], 16), int(first[8:16], 16) * per + int(first[16:24], 16)
    return [f"{tli:08X}{(segno + i) // per:08X}{(segno + i) % per:08X}" for i in range(count)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--credentials", required=True)
    ap.add_argument("--first", required=True)
    ap.add_argument("--count", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    load_engine()
    from pgdr import archive, spool  # noqa: E402
    from pgdr.commands import wal_fetch  # noqa: E402
    from pgdr.compress import SUFFIX, Codec  # noqa: E402
    from pgdr.options import resolve  # noqa: E402
    from pgdr.storage import open_storage  # noqa: E402

    t = time.monotonic()
    settings = resolve({}, config_file=args.config, credentials_file=args.credentials,
                       config_required=True)
    storage = open_storage(settings)
    t_open = time.monotonic() - t
    codec = Codec(settings.compression)
    names = names_from(args.first, args.count)
    tmp = Path(tempfile.mkdtemp(prefix="pgdr-prof-"))
    out = {"open_storage_s": round(t_open, 3), "segments": args.count}

    # 1. one at a time, every phase timed
    phases = {"head": [], "get": [], "decompress": [], "write_fsync": [], "packed_mb": []}
    t_all = time.monotonic()
    for n in names:
        key = archive.wal_key(settings.cluster, n, SUFFIX[settings.compression])
        t = time.monotonic(); storage.head(key); phases["head"].append(time.monotonic() - t)
        t = time.monotonic(); packed = storage.get(key); phases["get"].append(time.monotonic() - t)
        t = time.monotonic(); data = codec.decompress(packed)
        phases["decompress"].append(time.monotonic() - t)
        t = time.monotonic(); spool.write_atomic(str(tmp / n), data)
        phases["write_fsync"].append(time.monotonic() - t)
        phases["packed_mb"].append(len(packed) / 1e6)
    serial = time.monotonic() - t_all
    out["serial"] = {"seconds": round(serial, 2), "segments_s": round(args.count / serial, 2),
                     **{f"{k}_median_ms" if k != "packed_mb" else "packed_mb_median":
                        round(statistics.median(v) * (1000 if k != "packed_mb" else 1), 1)
                        for k, v in phases.items()}}
    for p in tmp.iterdir():
        p.unlink()

    # 2. the worker's path (wal_fetch.fetch + write_atomic) on N threads, fsync on / off
    def worker_path(fsync: bool):
        def one(n):
            data = wal_fetch.fetch(storage, settings, n)
            if fsync:
                spool.write_atomic(str(tmp / n), data)
            else:
                with open(tmp / (n + ".tmp"), "wb") as f:
                    f.write(data)
                os.rename(tmp / (n + ".tmp"), tmp / n)
        t = time.monotonic()
        with ThreadPoolExecutor(args.workers) as pool:
            list(pool.map(one, names))
        s = time.monotonic() - t
        for p in tmp.iterdir():
            p.unlink()
        return {"seconds": round(s, 2), "segments_s": round(args.count / s, 2)}

    out[f"threads{args.workers}_fsync"] = worker_path(True)
    out[f"threads{args.workers}_no_fsync"] = worker_path(False)

    # 3. the foreground call PostgreSQL waits on, when the segment is already staged
    pgdata = tmp / "pgdata"
    pgdata.mkdir()
    os.chmod(tmp, 0o755)
    settings_dir = None
    calls = []
    if settings.spool_dir:
        stage = Path(spool.fetch_dir(settings, str(pgdata)))
        settings_dir = stage
        data = wal_fetch.fetch(storage, settings, names[0])
        for i in range(5):
            (stage / names[0]).write_bytes(data)
            # prefetch=0 on the command line is not available: the call may spawn a
            # worker; it returns without waiting for it
            t = time.monotonic()
            subprocess.run([str(REPO / "bin" / "pgdr"), "wal-fetch", "--config", args.config,
                            "--credentials", args.credentials, names[0],
                            str(pgdata / "RECOVERYXLOG")], cwd=pgdata, check=True,
                           capture_output=True)
            calls.append(time.monotonic() - t)
            time.sleep(0.5)
        out["staged_call_ms"] = [round(c * 1000) for c in calls]
    print(json.dumps(out, indent=1))
    subprocess.run(["rm", "-rf", str(tmp)])
    if settings_dir:
        subprocess.run(["rm", "-rf", str(settings_dir)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
