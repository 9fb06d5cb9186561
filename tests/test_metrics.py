from __future__ import annotations

import copy
import json
import math
import random

import pytest

from invoice_vlm.metrics import (
    bleu,
    character_error_rate,
    field_accuracy,
    field_f1,
    normalize_value,
    ted_accuracy,
    ter,
    validity_rates,
)
from invoice_vlm.metrics.donut import Node, normalize, to_tree, tree_edit_distance
from invoice_vlm.metrics.fields import assignment, levenshtein

from .test_parsing import PALLET

sacrebleu = pytest.importorskip("sacrebleu")


# --- BLEU / TER --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pred", "ref", "expected"),
    [
        (
            "the cat sat on the mat",
            "the cat is on the mat",
            {
                "bleu": 0.0,
                "precisions": [5 / 6, 3 / 5, 1 / 4, 0.0],
                "brevity_penalty": 1.0,
                "length_ratio": 1.0,
                "translation_length": 6,
                "reference_length": 6,
            },
        ),
        (
            "a b c d e",
            "a b c d e f",
            {
                "bleu": math.exp(1 - 6 / 5),
                "precisions": [1.0, 1.0, 1.0, 1.0],
                "brevity_penalty": math.exp(1 - 6 / 5),
                "length_ratio": 5 / 6,
                "translation_length": 5,
                "reference_length": 6,
            },
        ),
    ],
)
def test_bleu_hand_checked(pred, ref, expected):
    got = bleu([pred], [ref])
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value), key


def test_bleu_brevity_uses_shortest_reference_like_evaluate():
    # sacrebleu alone would take the closest reference length (8); evaluate's bleu takes the shortest (3).
    got = bleu(["a b c d e f g"], [["a b c", "a b c d e f g h"]])
    assert (
        got["reference_length"] == 3 and got["brevity_penalty"] == 1.0 and got["bleu"] == pytest.approx(1.0)
    )


def test_bleu_agrees_with_sacrebleu_on_single_references():
    rng = random.Random(0)
    words = "route shipment pallet 12 34 P2481 : , { } cases layers".split()
    preds = [" ".join(rng.choices(words, k=rng.randint(8, 20))) for _ in range(20)]
    refs = [" ".join(rng.choices(words, k=rng.randint(8, 20))) for _ in range(20)]
    ours = bleu(preds, refs)
    direct = sacrebleu.corpus_bleu(preds, [refs], tokenize="13a", smooth_method="none")
    assert ours["bleu"] == pytest.approx(direct.score / 100)
    assert ours["precisions"] == pytest.approx([p / 100 for p in direct.precisions])
    assert ours["translation_length"] == direct.sys_len and ours["reference_length"] == direct.ref_len


def test_ter_hand_checked_and_as_sacrebleu():
    assert ter(["a b c d"], ["a b x d"]) == {"score": 25.0, "num_edits": 1, "ref_length": 4.0}
    assert ter(["A B"], ["a b"])["score"] == 0.0  # case-insensitive by default, like evaluate's ter
    preds, refs = ["the cat sat on the mat", "a b c"], ["the cat is on the mat", "a c b d"]
    assert ter(preds, refs)["score"] == pytest.approx(sacrebleu.corpus_ter(preds, [refs]).score)


@pytest.mark.parametrize(
    ("preds", "refs", "match"),
    [
        (["a"], ["a", "b"], "must pair up"),
        ([], [], "No predictions"),
        ("abc", ["abc"], "lists of strings"),
        (["a"], [[]], "non-empty list"),
    ],
)
def test_text_metrics_check_inputs(preds, refs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        bleu(preds, refs)


# --- field accuracy -----------------------------------------------------------------------------------------------


def test_one_wrong_digit_is_caught_while_bleu_stays_high():
    docs = [copy.deepcopy(PALLET) for _ in range(4)]
    for i, d in enumerate(docs):
        d["pallet_number"] = str(i + 1)
    preds = copy.deepcopy(docs)
    preds[2]["shipment_id"] = "P24812736098"  # one digit
    result = field_accuracy(preds, docs, schema="pallet_label")
    assert result["per_field"]["shipment_id"] == 0.75
    assert all(v == 1.0 for k, v in result["per_field"].items() if k != "shipment_id")
    assert result["document_accuracy"] == 0.75
    assert field_accuracy(preds[2:3], docs[2:3])["document_accuracy"] == 0
    assert result["errors"] == [
        {
            "document": 2,
            "field": "shipment_id",
            "kind": "wrong",
            "expected": "P24812736099",
            "got": "P24812736098",
        }
    ]
    text_bleu = bleu([json.dumps(p) for p in preds], [json.dumps(d) for d in docs])["bleu"]
    assert text_bleu > 0.9


def test_list_items_are_matched_by_assignment_not_position():
    pred = copy.deepcopy(PALLET)
    pred["products"] = list(reversed(pred["products"]))
    assert field_accuracy([pred], [PALLET])["field_accuracy"] == 1.0
    missing_first = copy.deepcopy(PALLET)
    missing_first["products"] = missing_first["products"][1:]
    result = field_accuracy([missing_first], [PALLET])
    assert result["missing"] == 4 and result["wrong"] == 0
    assert result["per_field"]["products.cases"] == 0.5
    assert {e["field"] for e in result["errors"]} == {
        f"products[0].{k}" for k in ("description", "cases", "sales_units", "layers")
    }


def test_invented_fields_and_items_count_as_errors():
    pred = copy.deepcopy(PALLET)
    pred["color"] = "red"
    pred["products"].append({"description": "X", "cases": "1", "sales_units": "1", "layers": "1"})
    result = field_accuracy([pred], [PALLET])
    assert result["invented"] == 5 and result["document_accuracy"] == 0
    total_ref_leaves = 14 + 8
    assert result["field_accuracy"] == pytest.approx(total_ref_leaves / (total_ref_leaves + 5))
    assert {"document": 0, "field": "color", "kind": "invented", "expected": None, "got": "red"} in result[
        "errors"
    ]


def test_unparsable_prediction_counts_every_field_missing():
    result = field_accuracy([None, "not json"], [PALLET, PALLET])
    assert result["field_accuracy"] == 0.0 and result["missing"] == 2 * 22


def test_normalisation_whitespace_and_numbers():
    assert normalize_value("  Mary   Smith ") == "Mary Smith"
    assert normalize_value("1,012.50", numeric=True) == normalize_value(1012.5) == 1012.5
    assert normalize_value("P2481") != normalize_value("p2481")
    inv_ref = {"subtotal": 1012.5, "tax": 0.0, "total": 1012.5, "currency": "EUR"}
    inv_pred = {"subtotal": "1,012.50", "tax": 0, "total": "1012.5", "currency": " EUR"}
    assert field_accuracy([inv_pred], [inv_ref], schema="invoice")["field_accuracy"] == 1.0
    # Without a schema a string is not a number.
    assert field_accuracy([inv_pred], [inv_ref])["per_field"]["subtotal"] == 0.0
    # None, missing and "" are the same "no value".
    assert field_accuracy([{"a": "x", "b": ""}], [{"a": "x", "b": None, "c": None}])["field_accuracy"] == 1.0


def test_character_error_rate_and_validity():
    assert character_error_rate([{"id": "P1234"}], [{"id": "P1284"}]) == pytest.approx(0.2)
    assert character_error_rate([{"id": "P1284"}], [{"id": "P1284"}]) == 0.0
    assert field_accuracy([{"id": "P1234"}], [{"id": "P1284"}])["character_error_rate"] == pytest.approx(0.2)
    texts = [json.dumps(PALLET), '{"route": 1}', "no json", "```json\n" + json.dumps(PALLET) + "\n```"]
    assert validity_rates(texts, "pallet_label") == {"json_valid_rate": 0.75, "schema_valid_rate": 0.5}


def test_levenshtein_and_assignment():
    assert (
        levenshtein("kitten", "sitting") == 3
        and levenshtein("", "abc") == 3
        and levenshtein("abc", "abc") == 0
    )
    optimize = pytest.importorskip("scipy.optimize")
    rng = random.Random(1)
    for _ in range(30):
        rows, cols = rng.randint(1, 6), rng.randint(1, 6)
        score = [[rng.randint(0, 9) for _ in range(cols)] for _ in range(rows)]
        ours = assignment(score)
        r, c = optimize.linear_sum_assignment(score, maximize=True)
        assert sum(score[i][j] for i, j in ours) == sum(score[i][j] for i, j in zip(r, c, strict=True))
        assert len(ours) == min(rows, cols)


# --- Donut metrics -------------------------------------------------------------------------------------------------

MENU = {"menu": [{"name": "cake", "count": "2"}, {"name": "juice", "count": "1"}]}


@pytest.mark.parametrize(
    ("pred", "ref", "expected"),
    [
        ({"a": "xy"}, {"a": "xz"}, 1 - 1 / 3),  # one substitution; building the ref costs 1 (key) + 2 (leaf)
        ({}, {"a": "xz"}, 0.0),
        (MENU, MENU, 1.0),
        ({"menu": [{"count": "2", "name": "cake"}]}, MENU, 1 - 9 / 18),  # the second item (1+1+5+1+1) of 18
        ({"menu": [{"name": "cake", "count": "2"}, {"name": "juice", "count": "7"}]}, MENU, 1 - 1 / 18),
        ({"x": "abcdefghijklmnop"}, {"a": "b"}, 0.0),  # clipped at 0
    ],
)
def test_ted_accuracy_hand_worked(pred, ref, expected):
    assert ted_accuracy([pred], [ref])["ted_accuracy"] == pytest.approx(expected)


def test_donut_normalisation():
    assert normalize({"bb": 1, "a": [" x ", 2, None, True, ""], "c": {}, "d": ""}) == {
        "a": ["x", "2"],
        "bb": ["1"],
    }
    assert list(normalize({"count": "1", "name": "x"})) == ["name", "count"]  # by (length, key)


def test_field_f1_hand_worked():
    result = field_f1([{"menu": [{"name": "cake", "count": "2"}]}], [MENU])
    assert result["true_positives"] == 2 and result["false_negatives"] == 2 and result["false_positives"] == 0
    assert result["f1"] == pytest.approx(2 / 3)
    assert field_f1([None], [MENU])["f1"] == 0.0


def _random_tree(rng, depth=0):
    if depth > 2 or rng.random() < 0.3:
        return Node("<leaf>" + "".join(rng.choices("abc", k=rng.randint(1, 4))))
    return Node(
        rng.choice(["k1", "k2", "<subtree>"]),
        [_random_tree(rng, depth + 1) for _ in range(rng.randint(1, 3))],
    )


def test_tree_edit_distance_agrees_with_zss():
    zss = pytest.importorskip("zss")
    from invoice_vlm.metrics.donut import _insert_remove_cost, _update_cost

    def to_zss(node):
        z = zss.Node(node.label)
        for child in node.children:
            z.addkid(to_zss(child))
        return z

    rng = random.Random(7)
    for _ in range(40):
        a, b = _random_tree(rng), _random_tree(rng)
        expected = zss.distance(
            to_zss(a),
            to_zss(b),
            get_children=zss.Node.get_children,
            insert_cost=lambda n: _insert_remove_cost(Node(n.label)),
            remove_cost=lambda n: _insert_remove_cost(Node(n.label)),
            update_cost=lambda x, y: _update_cost(Node(x.label), Node(y.label)),
        )
        assert tree_edit_distance(a, b) == expected
    assert tree_edit_distance(to_tree(normalize(MENU)), to_tree(normalize(MENU))) == 0
