"""Server-side SVG of a lineage graph: one row per generation (ancestors above, descendants
below), a box per version linking to its page, an arrow per edge labelled with its relation.

Rows wider than ``MAX_PER_ROW`` (a concatenation of 49 adapters has 49 parents) are cut and
end in a "+N more" box; the page lists every node in full under the drawing.
"""

from __future__ import annotations

from markupsafe import Markup, escape

from hub.services.lineage import LineageGraph, LineageNode
from web.render import adapter_url

BOX_W, BOX_H, GAP_X, GAP_Y, PAD = 176, 44, 22, 58, 12
MAX_PER_ROW = 10
MAX_EDGE_LABELS = 12
NAME_CHARS = 22


def _short(text: str, n: int = NAME_CHARS) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _layout(graph: LineageGraph) -> tuple[dict[str, tuple[float, float]], list[tuple[int, int]]]:
    """Top-left corner of each drawn node; (row index, hidden count) for cut rows."""
    rows = graph.rows()
    widest = min(MAX_PER_ROW + 1, max(len(r) for r in rows))
    width = PAD * 2 + widest * BOX_W + (widest - 1) * GAP_X
    pos: dict[str, tuple[float, float]] = {}
    cut: list[tuple[int, int]] = []
    for r, row in enumerate(rows):
        shown = row[:MAX_PER_ROW]
        slots = len(shown) + (1 if len(row) > len(shown) else 0)
        row_w = slots * BOX_W + (slots - 1) * GAP_X
        x0 = (width - row_w) / 2
        y = PAD + r * (BOX_H + GAP_Y)
        for i, node in enumerate(shown):
            pos[node.key] = (x0 + i * (BOX_W + GAP_X), y)
        if len(row) > len(shown):
            cut.append((r, len(row) - len(shown)))
    return pos, cut


def _node_svg(node: LineageNode, x: float, y: float, is_root: bool) -> str:
    fill = "#fff3c4" if is_root else ("#f2f2f2" if not node.exists else "#eef5fc")
    dash = ' stroke-dasharray="4 3"' if not node.exists else ""
    sub = f"v{node.version} · {node.source or 'deleted'}"
    inner = (
        f'<rect x="{x:.0f}" y="{y:.0f}" width="{BOX_W}" height="{BOX_H}" rx="6" fill="{fill}" '
        f'stroke="{"#b8860b" if is_root else "#5b7fa6"}" stroke-width="{2 if is_root else 1}"'
        f"{dash}/>"
        f"<title>{escape(node.key)}</title>"
        f'<text x="{x + BOX_W / 2:.0f}" y="{y + 18:.0f}" font-size="12" text-anchor="middle" '
        f'font-weight="bold">{escape(_short(node.name))}</text>'
        f'<text x="{x + BOX_W / 2:.0f}" y="{y + 34:.0f}" font-size="11" text-anchor="middle" '
        f'fill="#444">{escape(_short(sub, 28))}</text>'
    )
    if not node.exists or is_root:
        return f'<g class="lineage-node" data-ref="{escape(node.key)}">{inner}</g>'
    href = escape(adapter_url(node.name, node.version))
    return f'<a class="lineage-node" data-ref="{escape(node.key)}" href="{href}">{inner}</a>'


def lineage_svg(graph: LineageGraph) -> Markup:
    pos, cut = _layout(graph)
    rows = graph.rows()
    width = max(x for x, _ in pos.values()) + BOX_W + PAD
    width = max(width, PAD * 2 + BOX_W * (1 + bool(cut)) + GAP_X)
    height = PAD * 2 + len(rows) * BOX_H + (len(rows) - 1) * GAP_Y
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="lineage" viewBox="0 0 {width:.0f} '
        f'{height}" width="{width:.0f}" height="{height}" role="img" aria-label="lineage graph">',
        '<defs><marker id="lineage-arrow" viewBox="0 0 10 10" refX="10" refY="5" '
        'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
        '<path d="M0,0 L10,5 L0,10 z" fill="#5b7fa6"/></marker></defs>',
    ]
    drawn = [e for e in graph.links if e.parent in pos and e.child in pos]
    for edge in drawn:
        (px, py), (cx, cy) = pos[edge.parent], pos[edge.child]
        x1, y1, x2, y2 = px + BOX_W / 2, py + BOX_H, cx + BOX_W / 2, cy
        parts.append(
            f'<line x1="{x1:.0f}" y1="{y1:.0f}" x2="{x2:.0f}" y2="{y2 - 2:.0f}" stroke="#5b7fa6" '
            'stroke-width="1.2" marker-end="url(#lineage-arrow)"/>'
        )
        if len(drawn) <= MAX_EDGE_LABELS:
            label = edge.relation + (f" ×{edge.weight:g}" if edge.weight is not None else "")
            parts.append(
                f'<text x="{(x1 + x2) / 2 + 4:.0f}" y="{(y1 + y2) / 2 + 4:.0f}" font-size="10" '
                f'fill="#333">{escape(_short(label, 24))}</text>'
            )
    for node in graph.nodes.values():
        if node.key in pos:
            x, y = pos[node.key]
            parts.append(_node_svg(node, x, y, node.key == graph.root))
    for r, hidden in cut:
        x = max(x for k, (x, y) in pos.items() if graph.nodes[k] in rows[r]) + BOX_W + GAP_X
        y = PAD + r * (BOX_H + GAP_Y)
        parts.append(
            f'<text x="{x + BOX_W / 2:.0f}" y="{y + BOX_H / 2 + 4:.0f}" font-size="12" '
            f'text-anchor="middle" fill="#444">+{hidden} more (listed below)</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))
