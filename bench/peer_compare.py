"""Compare soundscape's filtered search with the perch-hoplite peer, filter by filter.

    python bench/peer_compare.py [SEARCH_JSON] [PEER_JSON] [VARIANT]

VARIANT picks a layout variant of search.py's results, e.g. "+toast+vector" for the set
"realistic+toast+vector" (default: the set measured with soundscape's defaults).

Without arguments it takes the newest bench/results/search-*.json and peer-hoplite-*.json.
Only the standard library is needed, so any Python runs it. For each set and filter it prints
recall@10 and p50/p95 latency of soundscape (auto: its planner's choice; hnsw: forced) and of
the three hoplite ways (filter_score, ann_filter, ann_filter_usearch), then the ratio of
hoplite's p50 to soundscape-auto's p50 for hoplite's exact way (filter_score) and for its best
way reaching the same recall as soundscape-auto (>= auto's recall - 0.01), and the load times.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
SOUNDSCAPE = ("auto", "hnsw")
HOPLITE = ("filter_score", "ann_filter", "ann_filter_usearch")


def newest(pattern: str) -> Path:
    files = sorted(RESULTS.glob(pattern))
    if not files:
        sys.exit(f"no {pattern} in {RESULTS}")
    return files[-1]


def cell(r: dict | None) -> str:
    if not r:
        return f"{'-':>20}"
    return f"{r['recall_at_10']:5.3f} {r['p50_ms']:6.1f}/{r['p95_ms']:6.1f}"


def ratio(a: float, b: float) -> str:
    if not b:
        return "    - "
    r = a / b
    return f"{r:6.2f}x" if r < 1 else f"{r:6.1f}x"


def main() -> None:
    ours = Path(sys.argv[1]) if len(sys.argv) > 1 else newest("search-*.json")
    peer = Path(sys.argv[2]) if len(sys.argv) > 2 else newest("peer-hoplite-*.json")
    variant = sys.argv[3] if len(sys.argv) > 3 else ""
    s, h = json.loads(ours.read_text()), json.loads(peer.read_text())
    print(
        f"soundscape: {ours.name} (n={s.get('n')}, {s['machine']['cpu']}, "
        f"{s['machine']['cores']} cores, load at start {s['machine']['load_avg_at_start'][0]:.1f})"
    )
    print(
        f"hoplite:    {peer.name} (n={h.get('n')}, {h['machine']['cpu']}, "
        f"{h['machine']['cores']} cores, load at start {h['machine']['load_avg_at_start'][0]:.1f}, "
        f"perch-hoplite {h['machine']['perch_hoplite']}, {h.get('queries')} queries)"
    )
    if s.get("n") != h.get("n"):
        print(f"WARNING: different set sizes ({s.get('n')} vs {h.get('n')})")
    print("cells: recall@10 p50/p95 ms; ratios: hoplite p50 / soundscape-auto p50")
    head = " ".join(f"{m:>20}" for m in SOUNDSCAPE + HOPLITE)
    print(f"\n{'set':<10}{'filter':>7}{'rows':>8} {head} {'exact':>7} {'best':>7}  best is")
    for kind, hs in h["sets"].items():
        ss = s["sets"].get(kind + variant)
        if ss is None:
            print(f"{kind + variant}: not in {ours.name}")
            continue
        for name, hf in hs["filters"].items():
            sf = ss["filters"].get(name, {})
            cells = [cell(sf.get(m)) for m in SOUNDSCAPE] + [cell(hf.get(m)) for m in HOPLITE]
            auto = sf.get("auto")
            exact = best = "    - "
            best_name = ""
            if auto:
                exact = ratio(hf["filter_score"]["p50_ms"], auto["p50_ms"])
                ok = [
                    m
                    for m in HOPLITE
                    if hf.get(m) and hf[m]["recall_at_10"] >= auto["recall_at_10"] - 0.01
                ]
                if ok:
                    best_name = min(ok, key=lambda m: hf[m]["p50_ms"])
                    best = ratio(hf[best_name]["p50_ms"], auto["p50_ms"])
            print(
                f"{kind:<10}{name:>7}{hf['rows']:>8} {' '.join(cells)} {exact:>7} {best:>7}"
                f"  {best_name}"
            )
    print("\nload (n rows): soundscape COPY + HNSW build | hoplite insert (SQL) + USearch HNSW add")
    for kind, hs in h["sets"].items():
        sl = s["sets"].get(kind + variant, {}).get("load", {})
        hl = hs["load"]
        print(
            f"{kind:<10} soundscape {sl.get('copy_s', 0):7.1f} s + {sl.get('hnsw_build_s', 0):7.1f} s"
            f" | hoplite {hl['sql_insert_s']:7.1f} s + {hl['hnsw_build_s']:7.1f} s"
            f" (total {hl['load_s']:.1f} s, {hl['rows_per_s']:.0f} rows/s)"
        )


if __name__ == "__main__":
    main()
