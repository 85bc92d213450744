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


def _log_range(modules: Sequence[ModuleSpectrum], n_lines: int) -> tuple[float, float]:
    """Decades that hold every drawn value (down to 1e-4 of the largest: below that a
    singular value is numerically zero for the plot)."""
    drawn = [v for m in modules for v in m.singular_values[:n_lines] if v > 0]
    hi = max(drawn, default=1.0)
    lo = max(min(drawn, default=hi), hi * 1e-4)
    top, bottom = math.ceil(math.log10(hi)), math.floor(math.log10(lo))
    return float(bottom), float(max(top, bottom + 1))


def spectra_chart(kind: str, modules: Sequence[ModuleSpectrum], chart_id: str) -> Markup:
    """Log-scale y: a LoRA spectrum spans orders of magnitude and its tail is the story."""
    xs = _x_positions(modules)
    x_lo, x_hi = min(xs), max(xs)
    x_span = (x_hi - x_lo) or 1.0
    n_lines = min(MAX_LINES, max(m.rank for m in modules))
    d_lo, d_hi = _log_range(modules, n_lines)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + (x - x_lo) / x_span * plot_w

    def py(y: float) -> float:
        decade = math.log10(y) if y > 0 else d_lo
        return TOP + plot_h - (max(decade, d_lo) - d_lo) / (d_hi - d_lo) * plot_h

    title = f"Singular values of {kind} per layer (log scale)"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-labelledby="{escape(chart_id)}-t" '
        f'data-kind="{escape(kind)}" data-lines="{n_lines}">',
        f'<title id="{escape(chart_id)}-t">{escape(title)}</title>',
        *_axes(x_lo, x_hi, d_lo, d_hi, px, py),
    ]
    for i in range(n_lines):
        parts += _series(i, xs, modules, px, py)
    parts.append("</svg>")
    return Markup("".join(parts))


def _series(
    i: int, xs: list[float], modules: Sequence[ModuleSpectrum], px: Scale, py: Scale
) -> list[str]:
    """The line of sigma_(i+1) across layers, its points (with tooltips) and its legend entry."""
    points = [
        (px(x), py(m.singular_values[i]), m)
        for x, m in zip(xs, modules, strict=True)
        if i < len(m.singular_values)
    ]
    colour = PALETTE[i % len(PALETTE)]
    path = " ".join(f"{a:.1f},{b:.1f}" for a, b, _ in points)
    out = [f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.5"/>']
    for a, b, m in points:
        tip = f"{m.name}: σ{i + 1} = {m.singular_values[i]:.4g}"
        out.append(
            f'<circle cx="{a:.1f}" cy="{b:.1f}" r="2.2" fill="{colour}">'
            f"<title>{escape(tip)}</title></circle>"
        )
    ly = TOP + 12 + 16 * i
    out.append(
        f'<line x1="{WIDTH - RIGHT + 12}" y1="{ly - 4}" x2="{WIDTH - RIGHT + 30}" '
        f'y2="{ly - 4}" stroke="{colour}" stroke-width="2"/>'
        f'<text x="{WIDTH - RIGHT + 36}" y="{ly}" font-size="11">σ{i + 1}</text>'
    )
    return out


def _axes(x_lo: float, x_hi: float, d_lo: float, d_hi: float, px: Scale, py: Scale) -> list[str]:
    bottom, left = py(10**d_lo), px(x_lo)
    out = [
        f'<line x1="{left:.1f}" y1="{bottom:.1f}" x2="{px(x_hi):.1f}" y2="{bottom:.1f}" '
        'stroke="#555"/>',
        f'<line x1="{left:.1f}" y1="{TOP}" x2="{left:.1f}" y2="{bottom:.1f}" stroke="#555"/>',
    ]
    few = d_hi - d_lo <= 2  # with one or two decades, 2x and 5x ticks help reading values
    for decade in range(int(d_lo), int(d_hi) + 1):
        for mult in (1, 2, 5) if few else (1,):
            y = mult * 10.0**decade
            if y > 10**d_hi * 1.0001:
                break
            out.append(
                f'<line x1="{left - 4:.1f}" y1="{py(y):.1f}" x2="{px(x_hi):.1f}" '
                f'y2="{py(y):.1f}" stroke="#e3e3e3"/><text x="{left - 7:.1f}" '
                f'y="{py(y) + 4:.1f}" font-size="11" text-anchor="end">{y:g}</text>'
            )
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
