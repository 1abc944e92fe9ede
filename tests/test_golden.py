"""`classify` on the shipped examples with the shipped model gives exactly the stored results, so a
refactoring that changes what users get fails here. After a deliberate change (a retrained model),
write the new results with: .venv/bin/python tests/test_golden.py --write"""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden" / "classify-examples.json"

pytestmark = pytest.mark.slow


def current(proposer: str) -> dict:
    from defectkit.pipeline import DefectClassifier
    from defectkit.threads import use_one_thread

    use_one_thread()
    classifier = DefectClassifier.load(ROOT / "models" / "magnetic-tile", proposer)
    paths = sorted((ROOT / "examples" / "magnetic-tile").rglob("*.jpg"))
    out = {}
    for result in classifier.classify_batch(paths):
        out[str(Path(result.image).relative_to(ROOT))] = [
            {"polygon": d.polygon, "bbox": d.bbox, "area": d.area, "edges": d.edges, "category": d.category,
             "subtype": d.subtype, "confidence": round(d.confidence, 4)}
            for d in result.defects
        ]
    return json.loads(json.dumps(out))


@pytest.mark.parametrize("proposer", ["auto", "classical"])
def test_classify_on_the_examples_gives_the_stored_results(proposer):
    expected = json.loads(GOLDEN.read_text())[proposer]
    assert current(proposer) == expected


if __name__ == "__main__" and "--write" in sys.argv:
    GOLDEN.write_text(json.dumps({p: current(p) for p in ("auto", "classical")}, indent=1) + "\n")
    print(f"wrote {GOLDEN}")
