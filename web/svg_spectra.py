"""Server-side SVG line charts of singular-value spectra per layer (no JS, nothing fetched).

One chart per module kind (``self_attn.q_proj``...): x is the layer, y the singular value, one
line per index (sigma_1 darkest). Every piece of text goes through ``escape``; only presentation
attributes are used, so the page's CSP (no inline styles) does not blank the plot.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from markupsafe import Markup, escape

from hub.services.spectra import ModuleSpectrum

WIDTH, HEIGHT = 680, 250
LEFT, RIGHT, TOP, BOTTOM = 58, 96, 14, 40
MAX_LINES = 8
Scale = Callable[[float], float]
PALETTE = (
    "#08306b",
    "#2171b5",
    "#6baed6",
    "#c6dbef",
    "#a63603",
    "#fd8d3c",
    "#238b45",
    "#a1d99b",
)


def _nice_step(span: float, ticks: int) -> float:
    raw = span / max(ticks, 1)
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    return next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)


def _x_positions(modules: Sequence[ModuleSpectrum]) -> list[float]:
    """Layer numbers when the names carry them, else the module's position."""
    layers = [m.layer for m in modules]
    if all(layer is not None for layer in layers):
        return [float(layer) for layer in layers if layer is not None]
    return [float(i) for i in range(len(modules))]


def spectra_chart(kind: str, modules: Sequence[ModuleSpectrum], chart_id: str) -> Markup:
    xs = _x_positions(modules)
    x_lo, x_hi = min(xs), max(xs)
    x_span = (x_hi - x_lo) or 1.0
    y_hi = max((m.singular_values[0] for m in modules if m.singular_values), default=0.0) or 1.0
    y_step = _nice_step(y_hi, 4)
    y_top = y_step * math.ceil(y_hi / y_step)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + (x - x_lo) / x_span * plot_w

    def py(y: float) -> float:
        return TOP + plot_h - y / y_top * plot_h

    n_lines = min(MAX_LINES, max(m.rank for m in modules))
    title = f"Singular values of {kind} per layer"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-labelledby="{escape(chart_id)}-t" '
        f'data-kind="{escape(kind)}" data-lines="{n_lines}">',
        f'<title id="{escape(chart_id)}-t">{escape(title)}</title>',
        *_axes(x_lo, x_hi, y_top, y_step, px, py),
    ]
    for i in range(n_lines):
        points = [
            (px(x), py(m.singular_values[i]), m)
            for x, m in zip(xs, modules, strict=True)
            if i < len(m.singular_values)
        ]
        colour = PALETTE[i % len(PALETTE)]
        path = " ".join(f"{a:.1f},{b:.1f}" for a, b, _ in points)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
        for a, b, m in points:
            tip = f"{m.name}: σ{i + 1} = {m.singular_values[i]:.4g}"
            parts.append(
                f'<circle cx="{a:.1f}" cy="{b:.1f}" r="2.2" fill="{colour}">'
                f"<title>{escape(tip)}</title></circle>"
            )
        ly = TOP + 12 + 16 * i
        parts.append(
            f'<line x1="{WIDTH - RIGHT + 12}" y1="{ly - 4}" x2="{WIDTH - RIGHT + 30}" '
            f'y2="{ly - 4}" stroke="{colour}" stroke-width="2"/>'
            f'<text x="{WIDTH - RIGHT + 36}" y="{ly}" font-size="11">σ{i + 1}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def _axes(
    x_lo: float, x_hi: float, y_top: float, y_step: float, px: Scale, py: Scale
) -> list[str]:
    bottom, left = py(0.0), px(x_lo)
    out = [
        f'<line x1="{left:.1f}" y1="{bottom:.1f}" x2="{px(x_hi):.1f}" y2="{bottom:.1f}" '
        'stroke="#555"/>',
        f'<line x1="{left:.1f}" y1="{TOP}" x2="{left:.1f}" y2="{bottom:.1f}" stroke="#555"/>',
    ]
    y = 0.0
    while y <= y_top + 1e-12:
        out.append(
            f'<line x1="{left - 4:.1f}" y1="{py(y):.1f}" x2="{px(x_hi):.1f}" y2="{py(y):.1f}" '
            f'stroke="#e3e3e3"/><text x="{left - 7:.1f}" y="{py(y) + 4:.1f}" font-size="11" '
            f'text-anchor="end">{y:.3g}</text>'
        )
        y += y_step
    x_step = max(1.0, _nice_step(x_hi - x_lo, 8)) if x_hi > x_lo else 1.0
    x = x_lo
    while x <= x_hi + 1e-9:
        out.append(
            f'<line x1="{px(x):.1f}" y1="{bottom:.1f}" x2="{px(x):.1f}" y2="{bottom + 4:.1f}" '
            f'stroke="#555"/><text x="{px(x):.1f}" y="{bottom + 16:.1f}" font-size="11" '
            f'text-anchor="middle">{x:.0f}</text>'
        )
        x += x_step
    out.append(
        f'<text x="{LEFT + (WIDTH - LEFT - RIGHT) / 2:.1f}" y="{HEIGHT - 6}" font-size="11" '
        'text-anchor="middle">layer</text>'
    )
    return out
