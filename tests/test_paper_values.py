"""The paper values in the chapter modules (stir_lib.chapters.<chapter>) are those of PAPER_TARGETS.md, cell by cell.

The project keeps a copy of PAPER_TARGETS.md as book/paper_targets.md (a fresh clone has
no ../shared); where the shared original is present, the copy must equal it. Tables are
parsed from the markdown; the numbers given in running text (AlexNet's bounds, the
ResNet-50 accuracies, the best-transfer table, S6) are matched by regular expressions.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from stir_lib.chapters import blind_spots as Z, lipschitz as L, stir as C, transfer as T

ROOT = Path(__file__).resolve().parents[1]
COPY = ROOT / "book" / "paper_targets.md"
SHARED = ROOT.parent / "shared" / "PAPER_TARGETS.md"


def number(cell: str) -> float:
    """'87.1%*' -> 87.1, '0.605 +- 0.013' -> 0.605, '26.2% (v)' -> 26.2."""
    m = re.search(r"-?\d+(?:\.\d+)?", cell)
    assert m, f"no number in cell {cell!r}"
    return float(m.group())


def tables(text: str) -> list[list[list[str]]]:
    """Every markdown table as a list of rows of cells (header first, separator dropped)."""
    out, current = [], []
    for line in text.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(set(c) <= set("-: ") for c in cells):
                current.append(cells)
        elif current:
            out.append(current)
            current = []
    if current:
        out.append(current)
    return out


@pytest.fixture(scope="module")
def text():
    return COPY.read_text()


@pytest.fixture(scope="module")
def parsed(text):
    found = tables(text)
    assert len(found) == 7, f"expected the 7 tables of PAPER_TARGETS.md, found {len(found)}"
    return found


def test_copy_matches_shared_original():
    if not SHARED.exists():
        pytest.skip("no ../shared/PAPER_TARGETS.md next to this checkout")
    assert COPY.read_text() == SHARED.read_text(), \
        "book/paper_targets.md differs from ../shared/PAPER_TARGETS.md: copy it again"


def grid(rows: list[list[str]]) -> np.ndarray:
    return np.array([[number(c) for c in r[1:]] for r in rows[1:]])


def test_table1(parsed):
    t = parsed[0]
    assert [r[0] for r in t[1:]] == list(Z.SZEGEDY_T1.index)
    np.testing.assert_allclose(grid(t), Z.SZEGEDY_T1.to_numpy())


def test_table2(parsed):
    t = parsed[1]
    assert [r[0] for r in t[1:]] == list(Z.SZEGEDY_T2.index)
    np.testing.assert_allclose(grid(t), Z.SZEGEDY_T2.to_numpy())


def test_table3(parsed):
    np.testing.assert_allclose(grid(parsed[2]), Z.SZEGEDY_T3.to_numpy())


def test_table4(parsed):
    t = parsed[3]
    np.testing.assert_allclose(grid(t), Z.SZEGEDY_T4.to_numpy())
    assert len(t) - 1 == len(Z.SZEGEDY_T4)


def test_nanda_pair_table(parsed):
    t = parsed[4]
    for row, kind in zip(t[1:], ("vanilla", "adversarial")):
        means = [number(c) for c in row[1:]]
        stds = [number(c.split("+-")[1]) for c in row[1:]]
        ours = C.NANDA_N1[kind]
        assert [ours[k][0] for k in ("STIR(m1|m2)", "STIR(m2|m1)", "CKA")] == means
        assert [ours[k][1] for k in ("STIR(m1|m2)", "STIR(m2|m1)", "CKA")] == stds


@pytest.mark.parametrize("index, frame", [(5, C.NANDA_STIR), (6, C.NANDA_CKA)])
def test_nanda_matrices(parsed, index, frame):
    t = parsed[index]
    assert t[0][1:] == list(frame.columns)
    assert [r[0] for r in t[1:]] == list(frame.index)
    np.testing.assert_allclose(grid(t), frame.to_numpy())


def test_alexnet_bounds(text):
    m = re.search(r"AlexNet's bounds\s*\(v\):\s*(.*?)\(layer shapes", text, re.S)
    values = [float(v) for v in re.findall(r"(?:Conv\d|FC\d) (\d+(?:\.\d+)?)", m.group(1))]
    assert values == list(L.SZEGEDY_T5["upper bound"])


def test_resnet50_top1(text):
    m = re.search(r"top-1 falls from (.*?)\.\n", text, re.S)
    pairs = re.findall(r"(\d+\.\d+) \((?:eps )?(\d+(?:\.\d+)?)\)", m.group(1))
    assert {float(e): float(v) for v, e in pairs} == dict(T.SALMAN_TOP1)


def test_r1_headline(text):
    num = r"(\d+(?:\.\d+)?)"
    m = re.search(rf"CIFAR-10: {num} \(eps 0\) vs {num} / {num} \(eps 3\); "
                  rf"CIFAR-100: {num} vs {num}", text)
    a, b, c, d, e = map(float, m.groups())
    assert T.SALMAN_R1["cifar10"]["eps0"] == a and T.SALMAN_R1["cifar10"]["robust"] == (b, c)
    assert T.SALMAN_R1["cifar100"]["eps0"] == d and T.SALMAN_R1["cifar100"]["robust"] == (e,)


def test_best_transfer_table(text):
    names = {"CIFAR-10": "cifar10", "CIFAR-100": "cifar100", "Caltech-101": "caltech101",
             "Caltech-256": "caltech256", "Aircraft": "aircraft", "Birdsnap": "birdsnap",
             "Cars": "stanford_cars", "DTD": "dtd", "Flowers": "flowers", "Food": "food",
             "Pets": "pets", "SUN397": "sun397"}
    num = r"(\d+(?:\.\d+)?)"
    rows = re.findall(rf"([A-Z][A-Za-z0-9-]+)\s+{num}\s+\({num}\)\s*/\s*{num}\s+\({num}\)", text)
    seen = {}
    for name, full, fe, fixed, xe in rows:
        seen[names[name]] = [float(full), float(fe), float(fixed), float(xe)]
    assert set(seen) == set(T.SALMAN_BEST.index)
    for task, values in seen.items():
        assert list(T.SALMAN_BEST.loc[task]) == values, task


def test_s6_text(text):
    m = re.search(r"test error below ([\d.]+) % \(([\d.]+) % with weight decay alone, about "
                  r"([\d.]+) % with dropout\)", text)
    below, wd, dropout = map(float, m.groups())
    assert Z.SZEGEDY_S6 == {"weight decay": wd, "dropout": dropout, "adversarial (below)": below}


def test_aggregates_are_computed_from_the_tables():
    # the median off-diagonal of Table 2 is 21.9 %, not the 21.1 % once typed in the book
    assert np.median(Z.t2_off_diagonal()) == pytest.approx(21.9)
    assert Z.t4_disjoint().tolist() == [43, 22, 27, 50]
    assert Z.noise_error_increase() == pytest.approx(0.7)
    eff = C.nanda_n1_effects()
    assert eff["cka_minus_stir"] == pytest.approx(0.967 - 0.5835)
    assert eff["at_minus_vanilla"] == pytest.approx(0.9365 - 0.5835)
    blocks = C.nanda_blocks()
    assert len(blocks["AT"]) == 12 and len(blocks["V"]) == 12  # 4 architectures: 12 cross cells
