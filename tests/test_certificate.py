"""The certificate's verdicts: each headline measure placed among the published figures."""

import pytest

from digi2real import certificate
from digi2real.certificate import EER, FDR, NEAREST_REAL_P99, headline, verdict

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "value, expected",
    [
        (0.5, "as good as Digi2Real-20K (1.07) or better"),
        (1.07, "as good as Digi2Real-20K (1.07) or better"),
        (2.0, "between Digi2Real-20K (1.07) and DigiFace-1M (3.92)"),
        (5.0, "between DigiFace-1M (3.92) and DCFace (5.97)"),
        (43.2, "worse than every published figure (DCFace: 5.97)"),
        (None, "not computed"),
    ],
)
def test_a_lower_is_better_measure_falls_between_its_anchors(value, expected):
    assert verdict(EER, value) == expected


def test_a_higher_is_better_measure_reads_the_other_way():
    assert verdict(FDR, 20.0) == "as good as Digi2Real-20K (15.04) or better"
    assert verdict(FDR, 10.0) == "between Digi2Real-20K (15.04) and DigiFace-1M (6.7)"
    assert verdict(FDR, 0.005) == "worse than every published figure (DCFace: 4.28)"


def test_near_real_faces_say_what_the_weakest_anchor_was():
    assert verdict(NEAREST_REAL_P99, 0.40).startswith("as good as Digi2Real-20K (0.461)")
    assert verdict(NEAREST_REAL_P99, 0.88) == (
        "as close to real faces as a release that leaked identities, or closer "
        "(Vec2Face's first release: 0.808)"
    )


def test_the_headline_reads_evaluation_json():
    evaluation = {
        "status": certificate.COMPUTED,
        "recognizer": {"note": "n"},
        "generated": {
            "consistency": {"share_at": {"0.3": 0.95}},
            "verification": {"eer": 0.02, "fdr": 8.0, "fnmr_at_fmr": {"0.001": 0.1}},
            "leakage": {"images": {"p99": 0.3, "max": 0.5}},
        },
    }
    figures = headline(evaluation)
    assert figures["verification EER (%)"] == pytest.approx(2.0)
    assert figures["verdicts"] == {
        "consistency at 0.3": "between DigiFace-1M (0.9973) and DCFace (0.9035)",
        "verification EER (%)": "between Digi2Real-20K (1.07) and DigiFace-1M (3.92)",
        "Fisher discriminant ratio": "between Digi2Real-20K (15.04) and DigiFace-1M (6.7)",
        "nearest real face, p99": "as good as Digi2Real-20K (0.461) or better",
    }
    empty = headline({"status": certificate.NOT_COMPUTED})
    assert set(empty["verdicts"].values()) == {"not computed"}
