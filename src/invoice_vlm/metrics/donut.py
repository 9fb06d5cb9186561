"""Donut's document-parsing metrics: normalized tree edit distance (nTED) accuracy and micro field F1.

These follow ``JSONParseEvaluator`` of Donut (``donut/util.py``) exactly, so numbers are comparable with published
Donut-style results (CORD, Ticket):

- Normalisation: keys sorted by (length, name); scalars become stripped strings; empty values, and in lists of
  scalars anything not a string or number, are dropped; a scalar under a key becomes a one-item list.
- Tree: ``<root>`` with one node per key, ``<subtree>`` per object in a list, ``<leaf>value`` per value.
- Costs: inserting or removing a leaf costs its value's length, any other node 1; relabelling two leaves costs the
  character edit distance of their values, a leaf and an inner node ``1 + len(value)``, two inner nodes 0 or 1.
- ``ted_accuracy`` per document is ``max(0, 1 - TED(pred, ref) / TED(empty, ref))``, averaged over documents.
- ``field_f1`` flattens both sides to (path, value) pairs and counts true positives, false positives and false
  negatives over the whole corpus: ``tp / (tp + (fp + fn) / 2)``.

The tree edit distance is Zhang and Shasha's algorithm, written here so the metrics stay pure Python.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from invoice_vlm._text import levenshtein
from invoice_vlm.metrics.fields import pair_documents

__all__ = ["Node", "field_f1", "flatten", "normalize", "ted_accuracy", "to_tree", "tree_edit_distance"]

LEAF = "<leaf>"


@dataclass
class Node:
    """A labelled ordered tree node."""

    label: str
    children: list[Node] = field(default_factory=list)


def normalize(data: Any) -> Any:
    """Donut's ``normalize_dict``."""
    if not data:
        return {}
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key in sorted(data, key=lambda k: (len(k), k)):
            value = normalize(data[key])
            if value:
                out[key] = value if isinstance(value, list) else [value]
        return out
    if isinstance(data, list):
        if all(isinstance(item, dict) for item in data):
            return [n for n in (normalize(item) for item in data) if n]
        return [str(item).strip() for item in data if type(item) in (str, int, float) and str(item).strip()]
    return [str(data).strip()]


def flatten(data: Any) -> list[tuple[str, Any]]:
    """Donut's ``flatten``: (dotted key, value) pairs, list items under their parent's key."""
    out: list[tuple[str, Any]] = []

    def walk(value: Any, key: str) -> None:
        if type(value) is dict:
            for child_key, child in value.items():
                walk(child, f"{key}.{child_key}" if key else child_key)
        elif type(value) is list:
            for item in value:
                walk(item, key)
        else:
            out.append((key, value))

    walk(data, "")
    return out


def to_tree(data: Any, name: str = "<root>") -> Node:
    """Donut's ``construct_tree_from_dict`` (on normalized data)."""
    node = Node(name)
    if isinstance(data, dict):
        node.children = [to_tree(value, key) for key, value in data.items()]
    elif isinstance(data, list):
        if all(isinstance(item, dict) for item in data):
            node.children = [to_tree(item, "<subtree>") for item in data]
        else:
            node.children = [Node(f"{LEAF}{item}") for item in data]
    else:
        raise TypeError(f"cannot build a tree from {data!r} under {name!r}")
    return node


def _insert_remove_cost(node: Node) -> int:
    return len(node.label.replace(LEAF, "")) if LEAF in node.label else 1


def _update_cost(a: Node, b: Node) -> int:
    a_leaf, b_leaf = LEAF in a.label, LEAF in b.label
    if a_leaf and b_leaf:
        return levenshtein(a.label.replace(LEAF, ""), b.label.replace(LEAF, ""))
    if b_leaf:
        return 1 + len(b.label.replace(LEAF, ""))
    if a_leaf:
        return 1 + len(a.label.replace(LEAF, ""))
    return int(a.label != b.label)


def _postorder(root: Node) -> tuple[list[Node], list[int], list[int]]:
    """Nodes in post-order, each node's leftmost leaf descendant index, and the keyroots."""
    nodes: list[Node] = []
    leftmost: list[int] = []

    def walk(node: Node) -> int:
        first = -1
        for child in node.children:
            lm = walk(child)
            if first < 0:
                first = lm
        nodes.append(node)
        index = len(nodes) - 1
        leftmost.append(first if first >= 0 else index)
        return leftmost[index]

    walk(root)
    seen: dict[int, int] = {}
    for i, lm in enumerate(leftmost):
        seen[lm] = i  # the highest node with that leftmost leaf
    return nodes, leftmost, sorted(seen.values())


def tree_edit_distance(a: Node, b: Node) -> float:
    """Zhang-Shasha ordered tree edit distance with Donut's insert, remove and update costs."""
    an, al, akeys = _postorder(a)
    bn, bl, bkeys = _postorder(b)
    treedist = [[0.0] * len(bn) for _ in range(len(an))]
    for i in akeys:
        for j in bkeys:
            ioff, joff = al[i] - 1, bl[j] - 1
            m, n = i - ioff, j - joff
            fd = [[0.0] * (n + 1) for _ in range(m + 1)]
            for x in range(1, m + 1):
                fd[x][0] = fd[x - 1][0] + _insert_remove_cost(an[x + ioff])
            for y in range(1, n + 1):
                fd[0][y] = fd[0][y - 1] + _insert_remove_cost(bn[y + joff])
            for x in range(1, m + 1):
                for y in range(1, n + 1):
                    ax, by = x + ioff, y + joff
                    remove = fd[x - 1][y] + _insert_remove_cost(an[ax])
                    insert = fd[x][y - 1] + _insert_remove_cost(bn[by])
                    if al[ax] == al[i] and bl[by] == bl[j]:
                        fd[x][y] = min(remove, insert, fd[x - 1][y - 1] + _update_cost(an[ax], bn[by]))
                        treedist[ax][by] = fd[x][y]
                    else:
                        p, q = al[ax] - 1 - ioff, bl[by] - 1 - joff
                        fd[x][y] = min(remove, insert, fd[p][q] + treedist[ax][by])
    return treedist[-1][-1]


def _document_accuracy(pred: Any, ref: Any) -> float:
    pred_tree, ref_tree = to_tree(normalize(pred)), to_tree(normalize(ref))
    worst = tree_edit_distance(to_tree(normalize({})), ref_tree)
    if worst == 0:
        return 1.0 if tree_edit_distance(pred_tree, ref_tree) == 0 else 0.0
    return max(0.0, 1.0 - tree_edit_distance(pred_tree, ref_tree) / worst)


def ted_accuracy(predictions: Sequence[Any], references: Sequence[Any]) -> dict[str, Any]:
    """Donut's nTED-based accuracy, per document and averaged.

    Args:
        predictions: dicts, pydantic models, JSON strings, or ``None`` for outputs that did not parse.
        references: the true documents.

    Returns:
        ``{"ted_accuracy": mean, "per_document": [...]}``.

    Examples:
        >>> round(ted_accuracy([{"a": "xy"}], [{"a": "xz"}])["ted_accuracy"], 4)  # 1 - 1 edit / 3 to build the ref
        0.6667
    """
    scores = [_document_accuracy(pred or {}, ref) for pred, ref in pair_documents(predictions, references)]
    return {"ted_accuracy": sum(scores) / len(scores), "per_document": scores}


def field_f1(predictions: Sequence[Any], references: Sequence[Any]) -> dict[str, Any]:
    """Donut's micro field F1 over (path, value) pairs of the whole corpus.

    Returns:
        ``{"f1", "precision", "recall", "true_positives", "false_positives", "false_negatives"}``; ``f1`` is the
        number Donut reports.

    Examples:
        >>> field_f1([{"a": "1", "b": "2"}], [{"a": "1", "b": "3"}])["f1"]
        0.5
    """
    tp = fp = fn = 0
    for pred, ref in pair_documents(predictions, references):
        pred_fields, ref_fields = flatten(normalize(pred or {})), flatten(normalize(ref))
        for item in pred_fields:
            if item in ref_fields:
                tp += 1
                ref_fields.remove(item)
            else:
                fp += 1
        fn += len(ref_fields)
    denominator = tp + (fp + fn) / 2
    return {
        "f1": tp / denominator if denominator else 0.0,
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "recall": tp / (tp + fn) if tp + fn else 0.0,
        "true_positives": tp,
        "false_positives": fp,
        "false_negatives": fn,
    }
