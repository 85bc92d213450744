"""The lineage graph around one version: ancestors (up) and descendants (down), bounded.

Parents come from each version's lineage edges (which keep the name and version of a parent
even after it is deleted: such a node is shown as gone, and never looked up by name, which may
have been registered again since); children from the reverse query in
``storage.catalog.lineage``. Breadth-first, so a version reachable at two distances sits at the
nearer one, and capped in depth and node count so a hub adapter with thousands of derivatives
still renders.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from hub.core.errors import NotFoundError
from hub.core.models import ParentRef
from hub.core.names import AdapterRef
from hub.services.registry import RegistryService
from storage.catalog.lineage import children_of


@dataclass(frozen=True)
class LineageNode:
    name: str
    version: int
    depth: int  # < 0: ancestor, 0: the version itself, > 0: descendant
    exists: bool = True
    source: str | None = None

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def key(self) -> str:
        return node_key(self.name, self.version, exists=self.exists)


def node_key(name: str, version: int, *, exists: bool) -> str:
    """Unique in a graph. A deleted parent's name@version may be a live adapter's in the same
    graph, e.g. a member restored by reverting this very merge under its old name."""
    return f"{name}@{version}" if exists else f"{name}@{version} (deleted)"


@dataclass(frozen=True)
class LineageLink:
    parent: str  # node keys
    child: str
    relation: str
    weight: float | None = None


@dataclass
class LineageGraph:
    root: str
    nodes: dict[str, LineageNode] = field(default_factory=dict)
    links: list[LineageLink] = field(default_factory=list)
    truncated: bool = False

    def rows(self) -> list[list[LineageNode]]:
        """Nodes grouped by depth, oldest generation first."""
        depths = sorted({n.depth for n in self.nodes.values()})
        return [[n for n in self.nodes.values() if n.depth == d] for d in depths]

    def parents_of(self, key: str) -> list[tuple[LineageNode, LineageLink]]:
        return [(self.nodes[e.parent], e) for e in self.links if e.child == key]

    def children_of(self, key: str) -> list[tuple[LineageNode, LineageLink]]:
        return [(self.nodes[e.child], e) for e in self.links if e.parent == key]


def lineage_graph(
    registry: RegistryService,
    ref: AdapterRef,
    *,
    up: int = 3,
    down: int = 2,
    max_nodes: int = 80,
) -> LineageGraph:
    root = registry.show(ref)
    graph = LineageGraph(root=f"{root.name}@{root.version}")
    graph.nodes[graph.root] = LineageNode(root.name, root.version, 0, True, root.source)
    _walk(graph, registry, direction=-1, limit=up, max_nodes=max_nodes)
    _walk(graph, registry, direction=+1, limit=down, max_nodes=max_nodes)
    return graph


def _walk(
    graph: LineageGraph, registry: RegistryService, *, direction: int, limit: int, max_nodes: int
) -> None:
    queue = deque([graph.nodes[graph.root]])
    while queue:
        node = queue.popleft()
        if abs(node.depth) >= limit or not node.exists:
            continue
        for link in _neighbours(registry, node, direction):
            other = node_key(link.name, link.version, exists=not link.deleted)
            if other not in graph.nodes:
                if len(graph.nodes) >= max_nodes:
                    graph.truncated = True
                    return
                new = _node(registry, link, node.depth + direction)
                other = new.key  # differs only if deleted since the edge was read
                if other not in graph.nodes:
                    graph.nodes[other] = new
                    queue.append(new)
            edge = (node.key, other) if direction > 0 else (other, node.key)
            graph.links.append(LineageLink(*edge, link.relation, link.weight))


def _neighbours(registry: RegistryService, node: LineageNode, direction: int) -> list[ParentRef]:
    if direction < 0:
        return registry.show(AdapterRef(node.name, node.version)).lineage.parents
    version_id = registry.catalog.version_id(node.name, node.version)
    return children_of(registry.catalog, version_id)


def _node(registry: RegistryService, link: ParentRef, depth: int) -> LineageNode:
    if link.deleted:  # never look it up by name: a new adapter may hold that name@version now
        return LineageNode(link.name, link.version, depth, exists=False)
    try:
        item = registry.catalog.get_item(link.name, link.version)
    except NotFoundError:  # deleted since the edge was read
        return LineageNode(link.name, link.version, depth, exists=False)
    return LineageNode(item.name, item.version, depth, True, item.source)
