"""The certificate's headline: each measure of evaluation.json beside the published figures of
other synthetic face datasets, with a verdict a reader cannot mistake.

The published figures (METHOD.md, "Judging a synthetic FR dataset without training on it"):
verification EER and the Fisher discriminant ratio of an ArcFace R100 trained on MS1MV3 (the
Beyond-Real-Faces study), the nearest real face's cosine against CASIA-WebFace (the same study),
identity consistency at 0.3 (the DCFace paper). They were measured with other recognizers and
other real faces than a run's own: they anchor the scale, they are not a pass mark.
"""

from __future__ import annotations

from dataclasses import dataclass

# What evaluation.json's `status` says.
COMPUTED = "computed"
NOT_COMPUTED = "not computed: no passed images (see the yield)"


@dataclass(frozen=True)
class Anchor:
    dataset: str
    value: float


@dataclass(frozen=True)
class Measure:
    """A headline measure: how to read it, and the published figures it is judged against,
    best first; `worst` is what the weakest anchor's band means."""

    name: str
    higher_is_better: bool
    anchors: tuple[Anchor, ...]
    worst: str = "worse than every published figure"
    note: str = ""


CONSISTENCY = Measure(
    "consistency at 0.3",
    True,
    (Anchor("DigiFace-1M", 0.9973), Anchor("DCFace", 0.9035)),
    note="share of images within cosine 0.3 of their identity's centre (DCFace's measure); "
    "Digi2Real-20K's is not published",
)
EER = Measure(
    "verification EER (%)",
    False,
    (Anchor("Digi2Real-20K", 1.07), Anchor("DigiFace-1M", 3.92), Anchor("DCFace", 5.97)),
    note="equal error rate of genuine against impostor pairs of the dataset itself",
)
FDR = Measure(
    "Fisher discriminant ratio",
    True,
    (Anchor("Digi2Real-20K", 15.04), Anchor("DigiFace-1M", 6.70), Anchor("DCFace", 4.28)),
    note="(genuine mean - impostor mean)^2 / (genuine variance + impostor variance)",
)
NEAREST_REAL_P99 = Measure(
    "nearest real face, p99",
    False,
    (Anchor("Digi2Real-20K", 0.461), Anchor("Vec2Face's first release", 0.808)),
    worst="as close to real faces as a release that leaked identities, or closer",
    note="99th percentile of each image's cosine to its nearest real face (privacy: lower is "
    "better); the published figures searched CASIA-WebFace, a run searches FFHQ and its "
    "gallery",
)
HEADLINE = (CONSISTENCY, EER, FDR, NEAREST_REAL_P99)


def verdict(measure: Measure, value: float | None) -> str:
    """Where `value` falls among the measure's published figures."""
    if value is None:
        return "not computed"
    anchors = measure.anchors

    def at_least_as_good(anchor: Anchor) -> bool:
        return value >= anchor.value if measure.higher_is_better else value <= anchor.value

    if at_least_as_good(anchors[0]):
        return f"as good as {anchors[0].dataset} ({anchors[0].value:g}) or better"
    for better, worse in zip(anchors, anchors[1:], strict=False):
        if at_least_as_good(worse):
            return (
                f"between {better.dataset} ({better.value:g}) and {worse.dataset} ({worse.value:g})"
            )
    last = anchors[-1]
    return f"{measure.worst} ({last.dataset}: {last.value:g})"


def published(measure: Measure) -> str:
    return ", ".join(f"{anchor.dataset} {anchor.value:g}" for anchor in measure.anchors)


def headline(evaluation: dict) -> dict:
    """The evaluation's headline figures (null where the dataset has too little to measure),
    and for the four measures with published anchors, each one's verdict."""
    generated = evaluation.get("generated") or {}
    verify = generated.get("verification") or {}
    leakage = generated.get("leakage") or {}
    sources = evaluation.get("sources") or {}
    uniqueness = generated.get("uniqueness") or {}
    eer = verify.get("eer")
    figures = {
        CONSISTENCY.name: (generated.get("consistency") or {}).get("share_at", {}).get("0.3"),
        EER.name: None if eer is None else 100 * eer,
        "FNMR at FMR 1e-3": (verify.get("fnmr_at_fmr") or {}).get("0.001"),
        FDR.name: verify.get("fdr"),
        "genuine mean cosine": verify.get("genuine_mean"),
        "impostor mean cosine": verify.get("impostor_mean"),
        "uniqueness U_class at 0.3": uniqueness.get("0.3", {}).get("u_class"),
        NEAREST_REAL_P99.name: (leakage.get("images") or {}).get("p99"),
        "nearest real face, max": (leakage.get("images") or {}).get("max"),
        "identities flagged as leaks": (leakage.get("identities") or {}).get("flagged"),
        **benchmark_figures(evaluation),
        "identities flagged as collisions": uniqueness.get("flagged_identities"),
        "DigiFace sources flagged as leaks": (sources.get("leakage") or {}).get("flagged"),
        "DigiFace source pairs flagged as collisions": (sources.get("uniqueness") or {}).get(
            "flagged_pairs"
        ),
    }
    return {
        "status": evaluation.get("status"),
        "recognizer": (evaluation.get("recognizer") or {}).get("note"),
        **figures,
        "verdicts": {measure.name: verdict(measure, figures[measure.name]) for measure in HEADLINE},
    }


def benchmark_figures(evaluation: dict) -> dict:
    """The leakage search in the benchmark faces, apart from the real faces': a training
    identity this close to a face a recognizer is tested on inflates its benchmark figures.
    Nothing when the evaluation had no benchmarks, so a run without them reads as before."""
    if "benchmarks" not in evaluation:
        return {}
    generated = evaluation.get("generated") or {}
    found = (generated.get("benchmark_leakage") or {}).get("identities") or {}
    sources = (evaluation.get("sources") or {}).get("benchmark_leakage") or {}
    return {
        "benchmark faces searched": sum(evaluation["benchmarks"].values()),
        "identities flagged as benchmark leaks": found.get("flagged"),
        "nearest benchmark face of an identity, p99": found.get("p99"),
        "nearest benchmark face of an identity, max": found.get("max"),
        "DigiFace sources flagged as benchmark leaks": sources.get("flagged"),
    }


# Published figures of the other measures, shown beside ours but not judged.
OTHER_REFERENCES = {
    "genuine mean cosine": "Digi2Real-20K 0.644",
    "impostor mean cosine": "Digi2Real-20K 0.024",
    "nearest real face, max": "Digi2Real-20K 0.565; Vec2Face's first release 0.909",
}


def reference(name: str) -> str:
    """The published figures of the measure called `name`, as the report shows them."""
    for measure in HEADLINE:
        if measure.name == name:
            return published(measure)
    return OTHER_REFERENCES.get(name, "")
