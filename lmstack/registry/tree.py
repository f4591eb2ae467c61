"""A model's family tree: the pulled base models it descends from and everything made from them
(fine-tunes, merges, quantizations, exports), drawn in the terminal or as an image.

The family is found by walking the lineage up to the roots (artifacts without parents), then
down through their children. An artifact with several parents (a merge) is drawn under the
first and referenced under the others.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from pathlib import Path

from lmstack.home import atomic_path
from lmstack.registry.db import Artifact, children, get, lineage, scores


@dataclass
class Family:
    focus: str  # the artifact asked about
    roots: list[str]
    nodes: dict[str, Artifact]
    children: dict[str, list[str]]
    score_counts: dict[str, int]

    def depth(self) -> dict[str, int]:
        """Longest distance from a root: the row a node is drawn on."""
        depth = {root: 0 for root in self.roots}
        queue = deque(self.roots)
        while queue:
            node = queue.popleft()
            for child in self.children[node]:
                if depth.get(child, -1) < depth[node] + 1 and depth[node] + 1 <= len(self.nodes):
                    depth[child] = depth[node] + 1
                    queue.append(child)
        return depth


def family(artifact_id: str) -> Family:
    focus = get(artifact_id)
    ancestors = lineage(artifact_id)
    roots = [a.id for a in [focus, *ancestors] if not a.parents]
    nodes: dict[str, Artifact] = {}
    kids: dict[str, list[str]] = {}
    queue = deque(roots)
    while queue:
        node = queue.popleft()
        if node in nodes:
            continue
        nodes[node] = get(node)
        kids[node] = [child.id for child in children(node)]
        queue.extend(kids[node])
    return Family(artifact_id, roots, nodes, kids, {node: len(scores(node)) for node in nodes})


def _label(artifact: Artifact, score_count: int) -> str:
    scored = f", {score_count} scores" if score_count else ""
    return f"{artifact.id} {artifact.name} ({artifact.kind}, {artifact.operation}{scored})"


def render_text(tree: Family):
    """A rich Tree (several roots hang under one title)."""
    from rich.markup import escape
    from rich.tree import Tree

    top = Tree(f"family of {tree.focus}", guide_style="dim")
    drawn: set[str] = set()

    def add(parent, node: str) -> None:
        label = escape(_label(tree.nodes[node], tree.score_counts[node]))
        if node in drawn:
            parent.add(f"[dim]{escape(tree.nodes[node].id)} (see above)[/dim]")
            return
        drawn.add(node)
        branch = parent.add(f"[bold yellow]{label}[/bold yellow]" if node == tree.focus else label)
        for child in tree.children[node]:
            add(branch, child)

    for root in tree.roots:
        add(top, root)
    return top


def render_png(tree: Family, path: str | Path) -> Path:
    """The tree as an image: one row per generation, arrows from parents to children."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    depth = tree.depth()
    rows: dict[int, list[str]] = {}
    for node in tree.nodes:
        rows.setdefault(depth.get(node, 0), []).append(node)
    width = max(len(r) for r in rows.values())
    position = {node: ((i + 0.5) / len(row) * width, -level) for level, row in rows.items()
                for i, node in enumerate(row)}
    fig, ax = plt.subplots(figsize=(max(6, 3.2 * width), max(2.5, 1.6 * len(rows))))
    for parent, kids in tree.children.items():
        for child in kids:
            ax.annotate("", xy=position[child], xytext=position[parent],
                        arrowprops={"arrowstyle": "->", "color": "#888", "shrinkA": 18, "shrinkB": 18})
    for node, (x, y) in position.items():
        artifact = tree.nodes[node]
        colour = "#ffe08a" if node == tree.focus else "#e8eef7"
        ax.text(x, y, f"{artifact.name}\n{artifact.id} · {artifact.operation}", ha="center", va="center", fontsize=8,
                bbox={"boxstyle": "round", "facecolor": colour, "edgecolor": "#555"})
    ax.set_xlim(-0.2, width + 0.2)
    ax.set_ylim(-len(rows) + 0.4, 0.6)
    ax.axis("off")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return Path(path)
