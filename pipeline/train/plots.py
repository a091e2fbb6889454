"""PNG training curves from metrics.jsonl rows (matplotlib, Agg backend: no display needed).

    python -m pipeline.train.plots runs/demo/base      # writes runs/demo/base/loss.png (+ lr.png)
"""

from __future__ import annotations

import json
import os
import sys

#: (file stem, metric keys on one panel); a panel is drawn when any key has points.
PANELS = [("loss", ("loss", "val_loss")), ("lr", ("lr",)), ("grad_norm", ("grad_norm",)),
          ("tokens_per_s", ("tokens_per_s",))]


def plot_metrics(rows: list[dict], out_dir: str, panels=PANELS) -> list[str]:
    """Write one PNG per panel into out_dir (local path or URI); returns the files written."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.runfs import RunDir

    out = RunDir(out_dir)
    written = []
    for stem, keys in panels:
        series = {k: [(r["step"], r[k]) for r in rows if r.get(k) is not None and "step" in r] for k in keys}
        series = {k: v for k, v in series.items() if v}
        if not series:
            continue
        fig, ax = plt.subplots(figsize=(6, 3.2))
        for k, pts in series.items():
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=k, marker="." if len(pts) < 30 else None)
        ax.set_xlabel("step")
        ax.set_title(f"{os.path.basename(out.root)}: {', '.join(series)}")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90)
        plt.close(fig)
        out.fs.makedirs(out._base, exist_ok=True)
        with out.fs.open(out._p(f"{stem}.png"), "wb") as f:
            f.write(buf.getvalue())
        written.append(out.path(f"{stem}.png"))
    return written


if __name__ == "__main__":
    folder = sys.argv[1]
    with open(os.path.join(folder, "metrics.jsonl")) as f:
        print("\n".join(plot_metrics([json.loads(x) for x in f if x.strip()], folder)))
