# digi2real: privacy-preserving synthetic face-recognition training sets by the Digi2Real method.
# `snakemake --profile slurm --configfile my.yaml` runs a lab's cluster run (my.yaml: a copy of
# config.yaml); `snakemake --cores 2 --configfile demo.yaml` the embedded demo.
from snakemake.utils import min_version

min_version("8.0")


configfile: "config.yaml"


include: "workflow/rules/common.smk"


# The Apptainer image of every job under --sdm apptainer (none where config.container is null),
# set before the rules that it applies to.
container: config["container"]


wildcard_constraints:
    dataset="digiface|ffhq|gallery",
    space=EMBEDDING_SPACES,
    shard=r"\d+",
    # A sub-run's prefix under the results (workflow/rules/train.smk): "" is the run itself.
    run=r"|baseline/digiface/|mixin/|checkpoints/[A-Za-z0-9_.-]+/",


include: "workflow/rules/index.smk"
include: "workflow/rules/embed.smk"
include: "workflow/rules/delta.smk"
include: "workflow/rules/plan.smk"
include: "workflow/rules/generate.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/export.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/train.smk"


# sweep.settings: the variants, each a sub-run under results/sweep/<variant>/.
if SWEEP.variants:

    include: "workflow/rules/sweep.smk"


rule all:
    default_target: True
    input:
        results("manifest.parquet"),
        rules.report.output,
        rules.card.output,
        # With train.enabled: the recognizers trained, benchmarked and reported on.
        rules.report_training.output if config["train"]["enabled"] else [],
        expand(results("export/{format}"), format=config["export"]["formats"]),
        # With sweep.settings: the variants compared.
        rules.report_sweep.output if SWEEP.variants else [],
