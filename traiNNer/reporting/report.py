"""One picture of what the automations did to a run: report.png and report.html.

Panels against iterations, each drawn only when the run recorded it: the LR with the
automations' multiplier, the clip threshold and clip rate, batch size and accumulation,
precision, the validation interval, aug_prob, weight decay, loss weights, training losses,
each validation metric, and a strip with every decision. Knob values are step functions
rebuilt from the decisions (exact), completed by the automations' monitoring scalars.
The HTML page embeds the PNG; hovering a decision's marker shows its reason.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from traiNNer.reporting.run_record import RunRecord, Series
from traiNNer.utils.errors import UserError

PRECISION_LADDER = ("fp16", "bf16", "fp32")
DPI = 100
COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink")


@dataclass
class Panel:
    title: str
    lines: dict[str, Series] = field(default_factory=dict)
    twin: dict[str, Series] = field(default_factory=dict)  # a second y axis (rates, factors)
    decides: Callable[[str], bool] = lambda parameter: False
    log: bool = False
    ticks: tuple[str, ...] = ()  # text-valued knob: y positions 0..n-1

    @property
    def empty(self) -> bool:
        return not any(self.lines.values()) and not any(self.twin.values())


def _number(value: Any, ticks: tuple[str, ...] = ()) -> float | None:
    if ticks and isinstance(value, str) and value in ticks:
        return float(ticks.index(value))
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def knob_series(
    decisions: list[dict[str, Any]], parameter: str, end: int, ticks: tuple[str, ...] = ()
) -> Series:
    """The knob's value over the run as steps: the first decision's old value from the start,
    then each decision's new value, held to `end`."""
    rows = [d for d in decisions if d["parameter"] == parameter]
    points: Series = []
    # A knob set at iteration 0 (a schedule's start) starts at its new value.
    first_at_start = bool(rows) and int(rows[0]["iteration"]) == 0
    if rows and not first_at_start and (start := _number(rows[0]["old"], ticks)) is not None:
        points.append((0, start))
    for row in rows:
        value = _number(row["new"], ticks)
        if value is not None:
            points.append((int(row["iteration"]), value))
    if points:
        points.append((max(end, points[-1][0]), points[-1][1]))
    return points


def build_panels(run: RunRecord) -> list[Panel]:
    end = run.last_iteration
    decisions = run.decisions
    parameters = sorted({d["parameter"] for d in decisions})

    def knobs(predicate: Callable[[str], bool], ticks: tuple[str, ...] = ()) -> dict[str, Series]:
        return {p: knob_series(decisions, p, end, ticks) for p in parameters if predicate(p)}

    clipping = "automations/adaptive_gradient_clipping/"
    panels = [
        Panel(
            "learning rate (right: automation multiplier)",
            lines={"lr": run.scalars.get("lr", [])},
            twin=knobs(lambda p: p == "lr_multiplier"),
            decides=lambda p: p == "lr_multiplier",
            log=True,
        ),
        Panel(
            "gradient clipping threshold (right: clip rate)",
            lines={
                **knobs(lambda p: p.startswith("clip_threshold")),
                **{
                    f"threshold {k.split('/')[0]}": v
                    for k, v in run.matching(clipping).items()
                    if k.endswith("/threshold") and not knobs(lambda p: p.startswith("clip_thr"))
                },
            },
            twin={
                f"clip rate {k.split('/')[0]}": v
                for k, v in run.matching(clipping).items()
                if k.endswith("/clip_rate")
            },
            decides=lambda p: p.startswith("clip_threshold"),
            log=True,
        ),
        Panel(
            "batch size and accumulation",
            lines=knobs(lambda p: p in ("batch_size", "accum_iter")),
            decides=lambda p: p in ("batch_size", "accum_iter"),
        ),
        Panel(
            "precision",
            lines=knobs(lambda p: p == "precision", PRECISION_LADDER),
            decides=lambda p: p == "precision",
            ticks=PRECISION_LADDER,
        ),
        Panel(
            "validation interval",
            lines=knobs(lambda p: p == "val_interval"),
            decides=lambda p: p == "val_interval",
        ),
        Panel(
            "augmentation probability (MoA)",
            lines=knobs(lambda p: p == "aug_prob")
            or {"aug_prob": run.scalars.get("automations/augmentation_scheduling/aug_prob", [])},
            decides=lambda p: p == "aug_prob",
        ),
        Panel(
            "weight decay",
            lines=knobs(lambda p: p == "weight_decay"),
            decides=lambda p: p == "weight_decay",
        ),
        Panel(
            "loss weights",
            lines=run.matching("automations/dynamic_loss_scheduling/loss_weights/"),
            decides=lambda p: p.startswith("loss_weights"),
        ),
        Panel("training losses", lines=run.matching("losses/"), log=True),
    ]
    panels += [
        Panel(f"validation {tag}", lines={tag: v}) for tag, v in run.matching("metrics/").items()
    ]
    return [panel for panel in panels if not panel.empty]


def _hover_text(decision: dict[str, Any]) -> str:
    return (
        f"iteration {decision['iteration']:,}: [{decision['automation']}] "
        f"{decision['parameter']}: {decision['old']} -> {decision['new']} ({decision['reason']})"
    )


def render(run: RunRecord, png: Path, page: Path) -> tuple[Path, Path]:
    """Write the PNG and the HTML page; returns their paths."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("the report needs matplotlib: pip install 'traiNNer-auto[bench]'") from None
    panels = build_panels(run)
    automations = sorted({d["automation"] for d in run.decisions})
    rows = len(panels) + (1 if automations else 0)
    if rows == 0:
        raise UserError(f"{run.name}: the run has recorded nothing to plot yet")
    height = [2.0] * len(panels) + ([0.4 + 0.28 * len(automations)] if automations else [])
    figure, axes = plt.subplots(
        rows,
        1,
        figsize=(11, sum(height) + 0.8),
        dpi=DPI,
        sharex=True,
        gridspec_kw={"height_ratios": height},
        squeeze=False,
    )
    axes_list = list(axes[:, 0])
    markers: list[tuple[Any, float, float, str]] = []  # axis, x, y, hover text
    for axis, panel in zip(axes_list, panels, strict=False):
        for colour, (label, values) in zip(COLOURS, panel.lines.items(), strict=False):
            if values:
                xs, ys = zip(*values, strict=True)
                axis.step(xs, ys, where="post", linewidth=1.1, color=colour, label=label)
        if panel.log and all(y > 0 for v in panel.lines.values() for _, y in v):
            axis.set_yscale("log")
        if panel.ticks:
            axis.set_yticks(range(len(panel.ticks)), panel.ticks)
        twin = axis.twinx() if panel.twin else None
        for label, values in panel.twin.items():
            if twin is not None and values:
                xs, ys = zip(*values, strict=True)
                twin.step(xs, ys, where="post", linewidth=0.9, color="tab:red", alpha=0.7)
                twin.set_ylabel(label, fontsize=7, color="tab:red")
        for decision in run.decisions:
            if not panel.decides(decision["parameter"]):
                continue
            # A twin-axis knob (the LR multiplier) is marked on its own axis.
            target = twin if twin is not None and decision["parameter"] in panel.twin else axis
            value = _number(decision["new"], panel.ticks)
            if value is None or (panel.log and target is axis and value <= 0):
                low, high = target.get_ylim()
                value = math.sqrt(low * high) if target.get_yscale() == "log" else (low + high) / 2
            target.plot(decision["iteration"], value, "v", color="tab:red", markersize=6)
            markers.append((target, float(decision["iteration"]), value, _hover_text(decision)))
        axis.set_title(panel.title, fontsize=9, loc="left")
        axis.grid(alpha=0.25)
        if len(panel.lines) > 1:
            axis.legend(fontsize=7, loc="best")
    if automations:
        strip = axes_list[-1]
        for decision in run.decisions:
            y = float(automations.index(decision["automation"]))
            strip.plot(decision["iteration"], y, "|", color="tab:red", markersize=10)
            markers.append((strip, float(decision["iteration"]), y, _hover_text(decision)))
        strip.set_yticks(range(len(automations)), automations, fontsize=7)
        strip.set_ylim(-0.7, len(automations) - 0.3)
        strip.set_title(
            "every decision (hover in report.html for the reason)", fontsize=9, loc="left"
        )
    axes_list[-1].set_xlabel("iteration")
    figure.suptitle(f"{run.name}: what the automations did", fontsize=11)
    figure.tight_layout(rect=(0, 0, 1, 0.985))
    png.parent.mkdir(parents=True, exist_ok=True)
    figure.canvas.draw()
    width_px, height_px = figure.canvas.get_width_height()
    areas = []
    for axis, x, y, text in markers:
        px, py = axis.transData.transform((x, y))
        areas.append(
            f'<area shape="circle" coords="{px:.0f},{height_px - py:.0f},7" '
            f'title="{html.escape(text)}" alt="">'
        )
    figure.savefig(png, dpi=DPI)
    plt.close(figure)
    page.write_text(_page(run, png, areas, width_px, height_px), encoding="utf-8")
    return png, page


def _page(run: RunRecord, png: Path, areas: list[str], width: int, height: int) -> str:
    image = base64.b64encode(png.read_bytes()).decode("ascii")
    rows = "\n".join(
        f"<tr><td>{d['iteration']:,}</td><td>{html.escape(str(d['automation']))}</td>"
        f"<td>{html.escape(str(d['parameter']))}</td><td>{html.escape(str(d['old']))}</td>"
        f"<td>{html.escape(str(d['new']))}</td><td>{html.escape(str(d['reason']))}</td></tr>"
        for d in run.decisions
    )
    sources = "".join(f"<li><code>{html.escape(s)}</code></li>" for s in run.sources)
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(run.name)}: automations</title>
<style>body{{font-family:sans-serif;margin:1.5em}}table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:left}}</style></head><body>
<h1>{html.escape(run.name)}: what the automations did</h1>
<p>Hover a red marker for the decision and its reason.</p>
<img src="data:image/png;base64,{image}" width="{width}" height="{height}" usemap="#decisions">
<map name="decisions">
{chr(10).join(areas)}
</map>
<h2>Decisions ({len(run.decisions)})</h2>
<table><tr><th>iteration</th><th>automation</th><th>parameter</th><th>old</th><th>new</th>
<th>reason</th></tr>
{rows}
</table>
<p>Read from:</p><ul>{sources}</ul>
</body></html>
"""
