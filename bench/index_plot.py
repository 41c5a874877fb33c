#!/usr/bin/env python3
"""Plots peak RSS against index size from bench/index_bench.py's JSON.

    python3 bench/index_plot.py bench/index_results.json docs/index-memory.png
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

rows = json.load(open(sys.argv[1]))
fig, ax = plt.subplots(figsize=(7, 4.5))
# "cache build" is the first backup after the repository was written: for
# the new binary it builds the local index cache; for main it is a backup
# like the next one, so it is left out.
series = sorted({(r["binary"], r["command"]) for r in rows
                 if r["binary"] != "main" or not r["command"].startswith("cache")})
for binary, command in series:
    pts = sorted((r["chunks"], r["peak_rss_mib"]) for r in rows
                 if r["binary"] == binary and r["command"] == command)
    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o",
            linestyle=":" if command.startswith("cache") else "-" if binary == "new" else "--",
            label=f"{binary}: {command}")
ax.set_xscale("log")
ax.set_xlabel("chunks in the index")
ax.set_ylabel("peak RSS (MiB)")
ax.set_title("lifeboat: peak memory vs index size")
ax.axhline(512, color="grey", linewidth=0.8, linestyle=":")
ax.text(1.05e6, 530, "512 MiB target", fontsize=7, color="grey")
ax.legend(fontsize=7)
ax.grid(True, which="both", alpha=0.3)
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=120)
