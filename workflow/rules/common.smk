# The resolved config, shard lists, path helpers and per-rule settings. All logic lives in the
# digi2real package; each rule calls the stage module of its own name, digi2real/stages/<rule>.py.
# The package imported here is this checkout's whatever Python runs Snakemake: Snakemake puts
# the Snakefile's folder first on sys.path before it reads the Snakefile.
import json
import os
import re
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake_interface_executor_plugins.settings import SharedFSUsage

from digi2real import layout, models
from digi2real import sweep as sweeps
from digi2real.atomic import write_text_if_changed
from digi2real.preflight import built_by_the_demo, preflight
from digi2real.config import config_slice, read_config_file, resolve_config, stage_keys
from digi2real.errors import Digi2RealError
from digi2real.stages import stage

# Validated and completed once, here, by the schema the CLI uses too (digi2real/config.py):
# every rule sees the values `digi2real config` prints. Each file alone first, so that an error
# names the file it is in; then the files merged as Snakemake merged them.
CONFIG_FILES = list(dict.fromkeys(str(path) for path in workflow.configfiles))
try:
    for path in CONFIG_FILES:
        resolve_config(read_config_file(path), path)
    RESOLVED = resolve_config(config, " over ".join(reversed(CONFIG_FILES)) or "config")
except Digi2RealError as error:
    raise WorkflowError(str(error)) from None
config.clear()
config.update(RESOLVED)

RESULTS = config["results"]

# A generation shard's images (shards/<n>/images.zip) and its embeddings (embeddings.h5) are
# read by later jobs but are not declared outputs of `generate`: Snakemake deletes a job's
# outputs before it runs it again, and a rerun reuses the images whose key still matches. So
# every job must see the results folder as it is, on a file system shared by all of them:
# what would copy only declared files (a storage provider, --shared-fs-usage without
# input-output) or fake them (--touch) is refused here, in one line.
SHARED_FILE_SYSTEM = (
    "digi2real needs its results folder on a file system every job shares (a generation "
    "shard's images.zip is read by later jobs without being a declared output, so that a "
    "rerun can reuse its images)"
)
if workflow.is_main_process:
    STORAGE = workflow.storage_settings
    if STORAGE.default_storage_provider is not None:
        raise WorkflowError(
            f"{SHARED_FILE_SYSTEM}: --default-storage-provider "
            f"{STORAGE.default_storage_provider} is not supported"
        )
    UNSHARED = {SharedFSUsage.PERSISTENCE, SharedFSUsage.INPUT_OUTPUT} - set(
        STORAGE.shared_fs_usage
    )
    if UNSHARED:
        raise WorkflowError(
            f"{SHARED_FILE_SYSTEM}: --shared-fs-usage must include "
            f"{' and '.join(sorted(usage.item_to_choice() for usage in UNSHARED))}"
        )


# profiles/slurm's placeholders, left in a lab's copy: refused here, not by sbatch for each job.
PLACEHOLDERS = {
    "YOUR_ACCOUNT": "your account (sacctmgr show assoc user=$USER)",
    "YOUR_PARTITION": "a partition (sinfo -s)",
}
if workflow.is_main_process:
    for resource in dict(workflow.resource_settings.default_resources or {}).values():
        raw = str(getattr(resource, "raw", ""))
        if raw in PLACEHOLDERS:
            raise WorkflowError(
                f"the profile's default-resources still say {resource.name}: {raw}; replace it "
                f"with {PLACEHOLDERS[raw]} (README, A first cluster run, step 3)"
            )


onstart:
    if workflow.touch:
        raise WorkflowError(
            f"{SHARED_FILE_SYSTEM}: --touch would mark generation shards done whose images "
            "do not exist; it is not supported"
        )


# The modules each rule family (cpu, gpu) loads under --sdm env-modules. Every rule names its
# conda environment and its modules itself: a Snakefile's global `conda:` sets up Snakemake's
# own environment, not a default for the jobs, and there is no global `envmodules:`. The
# container is global (Snakefile).
ENVMODULES = config["envmodules"]


# Jobs run `python -m digi2real` from this checkout: with the Python that runs Snakemake (its
# venv), or under --sdm conda/apptainer with the Python of the job's environment.
# Braces doubled twice: once for this f-string, once for Snakemake's formatting of the prefix.
PACKAGE_PATH = (
    f"export PYTHONPATH={workflow.basedir}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; "
)
if workflow.deployment_settings.deployment_method:
    shell.prefix(f"set -euo pipefail; {PACKAGE_PATH}")
else:
    shell.prefix(
        f"set -euo pipefail; export PATH={os.path.dirname(sys.executable)}:$PATH; {PACKAGE_PATH}"
    )


def results(path):
    return f"{RESULTS}/{path}"


def job_log(rule, wildcards="", run=""):
    """The log of a job of `rule`: results/logs/<rule>.log, or results/logs/<rule>/<wildcards>.log
    for a rule with wildcards (`wildcards` their pattern, e.g. "{dataset}/{shard}"); a sub-run's
    (`run`, the pattern of its prefix, e.g. "{run}") under its own folder."""
    return results(
        f"{run}logs/{rule}/{wildcards}.log" if wildcards else f"{run}logs/{rule}.log"
    )


def job_benchmark(rule, wildcards="", run=""):
    """The benchmark file of a job of `rule`, under results/benchmarks/ as job_log's log under
    results/logs/: the card sums these by rule (its first path part)."""
    return results(
        f"{run}benchmarks/{rule}/{wildcards}.tsv"
        if wildcards
        else f"{run}benchmarks/{rule}.tsv"
    )


# Each input folder is listed once per run, in the main process: the preflight (a missing path
# is said here, in the dry run, not in a job on the cluster) and the shard counts share that
# listing; it is written to <results>/inputs/ for the index jobs, and the counts go to every
# job in the environment. A job's own parse of this file lists nothing (digi2real/layout.py).
try:
    if workflow.is_main_process:
        INPUT_FOLDERS = layout.InputFolders(config)
        for line in preflight(config, INPUT_FOLDERS):
            print(line, file=sys.stderr)
        INPUT_COUNTS = layout.input_counts(config, INPUT_FOLDERS)
        for dataset, text in INPUT_FOLDERS.listed().items():
            write_text_if_changed(layout.listing_path(RESULTS, dataset), text)
        layout.hand_counts_to_jobs(config, INPUT_COUNTS)
    else:
        INPUT_COUNTS = layout.handed_counts(config) or layout.input_counts(
            config, layout.InputFolders.from_listings(config, RESULTS)
        )
except (Digi2RealError, OSError) as error:
    raise WorkflowError(str(error)) from None
EMBED_SHARD_SIZE = {
    "digiface": config["digiface"]["identities_per_embed_shard"],
    "ffhq": config["ffhq"]["images_per_embed_shard"],
    "gallery": config["gallery"]["images_per_embed_shard"],
}
EMBED_SHARDS = {
    dataset: range(layout.n_shards(INPUT_COUNTS[dataset], EMBED_SHARD_SIZE[dataset]))
    for dataset in EMBED_SHARD_SIZE
}
GENERATION_SHARDS = range(
    layout.n_shards(INPUT_COUNTS["digiface"], config["plan"]["identities_per_shard"])
)


def root_listing(dataset):
    """The listing of `<dataset>.root` the main process wrote, as an input of its index rule
    (a root the demo builds is listed by its index job); a new or removed image reruns it.
    """
    root = config[dataset]["root"]
    if root is None or built_by_the_demo(config, Path(root).expanduser()):
        return []
    return str(layout.listing_path(RESULTS, dataset))


def settings_json(rule, settings=None, **wildcards):
    """The slice of the config (`settings`: a sweep variant's, by default the run's) that the
    stage of `rule` reads (its CONFIG_KEYS), as JSON. It is passed to the CLI, and as a params
    entry it makes a change to those keys rerun the rule and what depends on it, nothing
    else."""
    keys = stage_keys(stage(rule).CONFIG_KEYS, **wildcards)
    return json.dumps(config_slice(settings or config, keys), sort_keys=True)


# The folder of each embedding space under the results, the wildcard `space` of embed and
# merge_embeddings: embeddings/ (the generator's ArcFace), evaluation/embeddings/.
EMBEDDING_SPACES = "|".join(stage("embed").SPACES)
# The space `evaluate` compares in: evaluation.recognizer's when it is set, else the
# generator's ArcFace's.
COMPARED_SPACE = (
    "evaluation/embeddings" if config["evaluation"]["recognizer"] else "embeddings"
)
# Whether the certificate also searches the benchmark faces (embed_benchmarks): when a
# recognizer is trained and tested on them.
BENCHMARK_FACES_SEARCHED = bool(
    config["train"]["enabled"] and config["benchmark"]["bins"]
)


# The recognizer (its config key) of the space evaluate compares in.
COMPARED_RECOGNIZER = stage("embed").SPACES[COMPARED_SPACE]

# export.mixin: the real identities' sample under the results (rule sample_mixin).
MIXIN = config["export"]["mixin"]
MIXIN_SAMPLE = "mixin/sample"


def mixin_source(wildcards):
    """What the mix-in is drawn from, as the draw's input: a RecordIO's files (a new file
    redraws), or the demo's sign that it built the folder; a folder of identity folders is
    listed by the job (a change to export.mixin redraws)."""
    if MIXIN is None:
        return []
    root = Path(MIXIN["source"]).expanduser()
    if built_by_the_demo(config, root):
        return demo_assets(wildcards)
    if (root / "train.rec").is_file():
        return [str(root / "train.rec"), str(root / "train.idx")]
    return []


def mixin_sample(wildcards):
    """The mix-in's sample, an input of every export and page that counts it."""
    return [results(MIXIN_SAMPLE)] if MIXIN else []


def mixin_option(wildcards, input):
    """--mixin, and --mixin-leaks where the rule reads them."""
    option = f"--mixin {input.mixin}" if input.mixin else ""
    if input.get("mixin_leaks"):
        option += f" --mixin-leaks {input.mixin_leaks}"
    return option


def mixin_leak_list(wildcards):
    """The mix-in's benchmark leaks, when the benchmark faces are searched."""
    if MIXIN and BENCHMARK_FACES_SEARCHED:
        return [results("mixin/benchmark_leaks.csv")]
    return []


def embed_shards(wildcards):
    return expand(
        results("{space}/{dataset}/{shard}.h5"),
        space=wildcards.space,
        dataset=wildcards.dataset,
        shard=EMBED_SHARDS[wildcards.dataset],
    )


def recognizer_of_space(wildcards):
    """The config key of the model the embedding space `wildcards.space` is embedded with."""
    return stage("embed").SPACES[wildcards.space]


def embed_settings_json(wildcards):
    return settings_json(
        "embed",
        dataset=wildcards.dataset,
        recognizer=recognizer_of_space(wildcards),
    )


def embed_shard_size(wildcards):
    return EMBED_SHARD_SIZE[wildcards.dataset]


def demo_assets(wildcards):
    """The embedded demo's data and models, when the config asks for them."""
    return [f"{config['demo']}/built.txt"] if config["demo"] else []


def model_files(wildcards):
    """Every file of every configured model that its loader reads (what hash_models hashes),
    or the demo's sign that it built them."""
    files = []
    for key, value in config["models"].items():
        path = Path(value).expanduser() if value else None
        if path is None:
            continue
        if built_by_the_demo(config, path):
            files += demo_assets(wildcards)
        else:
            files += [
                str(p) for p in models.files_read(path, models.BY_KEY[f"models.{key}"])
            ]
    return list(dict.fromkeys(files))


def generation_runtime(wildcards, attempt):
    """Minutes for one generation shard: its images at cluster.seconds_per_image, twice
    over for a slow node, plus model loading; half as much again on each retry. The last
    shard asks for what its own identities need, not a full shard's time."""
    per_shard = config["plan"]["identities_per_shard"]
    left = INPUT_COUNTS["digiface"] - int(wildcards.shard) * per_shard
    images = max(1, min(per_shard, left)) * config["plan"]["images_per_identity"]
    minutes = 10 + 2 * images * config["cluster"]["seconds_per_image"] / 60
    return round(minutes * (1 + 0.5 * (attempt - 1)))


def job_benchmarks(wildcards):
    """The benchmark file of every job the card sums the seconds of: each job of the run
    before it, one per rule and wildcards (the report's figures run beside the card)."""
    datasets = ["digiface", "ffhq", *(["gallery"] if config["gallery"]["root"] else [])]
    jobs = [("demo_assets", "")] if config["demo"] else []
    jobs.append(("index_digiface", ""))
    jobs += [("index_real", dataset) for dataset in datasets if dataset != "digiface"]
    spaces = ["embeddings"]
    if config["evaluation"]["recognizer"]:
        spaces.append("evaluation/embeddings")
        jobs += [("embed_generated", str(shard)) for shard in GENERATION_SHARDS]
    for space in spaces:
        for dataset in datasets:
            jobs += [
                ("embed", f"{space}/{dataset}/{shard}")
                for shard in EMBED_SHARDS[dataset]
            ]
            jobs.append(("merge_embeddings", f"{space}/{dataset}"))
    jobs += [(rule, "") for rule in ("estimate_delta", "plan", "hash_models")]
    jobs += [("generate", str(shard)) for shard in GENERATION_SHARDS]
    if BENCHMARK_FACES_SEARCHED:
        jobs.append(("embed_benchmarks", COMPARED_SPACE))
    jobs += [(rule, "") for rule in ("aggregate", "evaluate")]
    if MIXIN:
        jobs.append(("sample_mixin", ""))
        if BENCHMARK_FACES_SEARCHED:
            jobs.append(("mixin_leaks", ""))
    jobs += [(f"export_{format}", "") for format in config["export"]["formats"]]
    return [job_benchmark(rule, wildcards) for rule, wildcards in jobs]


def real_faces():
    """The embeddings of every real face: FFHQ's, and the gallery's when there is one."""
    gallery = [results("embeddings/gallery.h5")] if config["gallery"]["root"] else []
    return [results("embeddings/ffhq.h5"), *gallery]


def real_faces_for(section, settings=None):
    """The real faces, as an input of a rule whose `<section>.max_real_similarity` gate is
    set (in `settings`, a sweep variant's config, by default the run's); nothing when it is
    off, so turning it on or off reruns only that rule."""
    if (settings or config)[section]["max_real_similarity"] is None:
        return []
    return real_faces()


def compared_embeddings(wildcards):
    """What `evaluate` compares, all in one model's space: with evaluation.recognizer set,
    everything embedded again with it (embed and merge_embeddings in the space
    evaluation/embeddings, embed_generated); else the
    generator's ArcFace embeddings the run already has."""
    space = COMPARED_SPACE
    generated = (
        expand(
            results("evaluation/embeddings/generated/{shard}.h5"),
            shard=GENERATION_SHARDS,
        )
        if config["evaluation"]["recognizer"]
        else [results("embeddings/generated.h5")]
    )
    return {
        "generated": generated,
        "digiface": results(f"{space}/digiface.h5"),
        "ffhq": results(f"{space}/ffhq.h5"),
        "gallery": (
            [results(f"{space}/gallery.h5")] if config["gallery"]["root"] else []
        ),
    }


# --- Training and benchmark (workflow/rules/train.smk) -----------------------------------------

# The sub-runs trained: the run's own dataset (prefix ""), with export.mixin its real
# mix-in's (mixin/), and the DigiFace baseline's; those benchmarked besides: the backbones of
# benchmark.checkpoints.
TRAINED_RUNS = (
    [""]
    + (["mixin/"] if MIXIN else [])
    + (
        [f"baseline/{config['train']['baseline']}/"]
        if config["train"]["baseline"]
        else []
    )
)
BENCHMARKED_RUNS = TRAINED_RUNS + [
    f"checkpoints/{name}/" for name in config["benchmark"]["checkpoints"]
]


def training_export(wildcards):
    """The export a sub-run trains on: the run's own (train.data's format), or the baseline's
    RecordIO of the DigiFace sources."""
    if wildcards.run in ("", "mixin/"):
        return results(f"export/{config['train']['data']}")
    return results(f"{wildcards.run}export/recordio")


def training_settings_json(wildcards):
    """train's config slice for a sub-run: train.mixin_mode is in none (the mix-in's sub-run
    is told how to train by --classes and --init), train.finetune only in the one that
    fine-tunes. So trying mix against finetune reruns that sub-run alone, not the
    synthetic-only recognizer or the baseline."""
    settings = json.loads(settings_json("train"))
    settings["train"].pop("mixin_mode")
    if not finetuned_backbone(wildcards):
        settings["train"].pop("finetune")
    return json.dumps(settings, sort_keys=True)


def training_classes(wildcards):
    """The identities a sub-run trains on (train's --classes): the run's own, the synthetic
    ones (beside the mix-in's sub-run, the synthetic-only figure); mixin/, both, or for a
    fine-tuning the real ones alone; the baseline's export holds no other."""
    if wildcards.run == "":
        return "synthetic"
    if wildcards.run == "mixin/" and config["train"]["mixin_mode"] == "finetune":
        return "real"
    return "all"


def finetuned_backbone(wildcards):
    """The backbone mixin/ fine-tunes (train.mixin_mode finetune): the synthetic-only one, the
    pre-training DigiFace-1M's study fine-tunes after, trained once for both rows."""
    if wildcards.run == "mixin/" and config["train"]["mixin_mode"] == "finetune":
        return results("train/backbone.pt")
    return []


def training_real_leaks(wildcards):
    """The mix-in's identities flagged as benchmark leaks, left out of mixin/'s training with
    train.exclude_benchmark_leaks."""
    if wildcards.run == "mixin/" and config["train"]["exclude_benchmark_leaks"]:
        return mixin_leak_list(wildcards)
    return []


def ijb_files(wildcards):
    """IJB's meta files, when benchmark.ijb is set: a changed file re-benchmarks."""
    ijb = config["benchmark"]["ijb"]
    if ijb is None:
        return []
    return [
        str(path) for path in layout.ijb_meta_files(ijb["root"], ijb["target"]).values()
    ]


def benchmark_files(wildcards):
    """The verification files (the demo's, its sign that it built them): a changed file
    re-embeds, retrains (its accuracies are logged) and re-benchmarks."""
    files = []
    for path in config["benchmark"]["bins"].values():
        if built_by_the_demo(config, Path(path).expanduser()):
            files += demo_assets(wildcards)
        else:
            files.append(path)
    return list(dict.fromkeys(files))


def training_leaks(wildcards):
    """The identities the certificate flags as benchmark leaks, left out of the run's own
    training (and its mix-in's) with train.exclude_benchmark_leaks; the baseline trains on
    every source."""
    if (
        wildcards.run in ("", "mixin/")
        and config["train"]["exclude_benchmark_leaks"]
        and config["benchmark"]["bins"]
    ):
        return results("evaluation/benchmark_leaks.csv")
    return []


def checkpoint_of(run):
    """The benchmark.checkpoints entry ({path, network}) of the sub-run checkpoints/<name>/,
    None for a sub-run trained here."""
    if not run.startswith("checkpoints/"):
        return None
    return config["benchmark"]["checkpoints"][run.split("/")[1]]


def trained_backbone(wildcards):
    entry = checkpoint_of(wildcards.run)  # ("checkpoint" is a Snakemake keyword)
    if entry is not None:
        return entry["path"]
    return results(f"{wildcards.run}train/backbone.pt")


def backbone_network(wildcards):
    entry = checkpoint_of(wildcards.run)
    return config["train"]["network"] if entry is None else entry["network"]


def training_threads():
    """A process per GPU with train.loader_workers loader processes each; on the CPU,
    train.cpu_threads computing beside the loaders."""
    train = config["train"]
    if train["gpus"] == 0:
        return train["cpu_threads"] + train["loader_workers"]
    return train["gpus"] * (1 + train["loader_workers"])


def training_memory(wildcards, attempt):
    """MB of host memory for a training job: 8 GB per process (PyTorch and the CUDA context,
    pinned batches; a CPU process training an IResNet-18 peaked at 1.4 GB, measured by
    scripts/benchmark_training.py --tiny) and 1 GB per loader worker, doubled on a retry in
    case the first attempt was killed for memory."""
    train = config["train"]
    processes = max(1, train["gpus"])
    return (8000 + 1000 * train["loader_workers"]) * processes * attempt


def training_runtime(wildcards, attempt):
    """Minutes for a training job: every planned image it trains on (the synthetic ones, the
    mix-in's real ones, or both) of every epoch (or train.max_steps' batches) at
    train.images_per_second per GPU, 1.5 times over, plus 20 for start-up and the
    evaluations; the same on a retry, which resumes from the checkpoint."""
    train = config["train"]
    gpus = max(1, train["gpus"])
    real = MIXIN["identities"] * MIXIN["images_per_identity"] if MIXIN else 0
    synthetic = INPUT_COUNTS["digiface"] * config["plan"]["images_per_identity"]
    # A fine-tuning trains on the real images alone; the synthetic-only run, on those alone.
    if finetuned_backbone(wildcards):
        synthetic = 0
    elif wildcards.run != "mixin/":
        real = 0
    images = (synthetic + real) * train["epochs"]
    if train["max_steps"] is not None:
        images = min(images, train["max_steps"] * train["batch_size"] * gpus)
    return round(20 + 1.5 * images / (train["images_per_second"] * gpus) / 60)


def benchmark_embeddings(wildcards):
    """The faces of benchmark.bins embedded in the space `evaluate` compares in (as in
    compared_embeddings), its input when a recognizer is trained and tested on them: the
    certificate then searches them for leaks too. Nothing otherwise, so that a run without
    training embeds no benchmark and evaluates as before."""
    if not BENCHMARK_FACES_SEARCHED:
        return []
    return [results(f"{COMPARED_SPACE}/benchmarks.h5")]


# --- The training's report page (workflow/rules/report.smk, rule report_training) -------------


def benchmarked_results(wildcards):
    """The benchmark.json of every sub-run: the table's rows."""
    return [results(f"{run}benchmark.json") for run in BENCHMARKED_RUNS]


def training_metrics(wildcards):
    """The metrics.jsonl of every sub-run trained here: the curves."""
    return [results(f"{run}train/metrics.jsonl") for run in TRAINED_RUNS]


def generation_benchmarks(wildcards):
    """The benchmark file of every generation shard: the generation's GPU-hours."""
    return [job_benchmark("generate", str(shard)) for shard in GENERATION_SHARDS]


def training_benchmarks(wildcards):
    """The benchmark file of every training job: each trained sub-run's GPU-hours."""
    return [job_benchmark("train", run=run) for run in TRAINED_RUNS]


# --- Sweeps (workflow/rules/sweep.smk, digi2real/sweep.py) -------------------------------------

# The variants of `sweep:`, checked (one line naming the key) and each resolved; none without
# sweep.settings.
try:
    SWEEP = sweeps.plan_sweep(
        config,
        INPUT_COUNTS["digiface"],
        " over ".join(reversed(CONFIG_FILES)) or "config",
    )
except Digi2RealError as error:
    raise WorkflowError(str(error)) from None
SWEEP_SHARDS = range(SWEEP.shards)
# Where a variant's files go, and its generation folder's (shared by the variants that agree on
# every key the plan and the generation read).
SWEEP_VARIANT = "sweep/{variant}/"
SWEEP_GENERATION = f"sweep/{sweeps.GENERATED}/{{generation}}/"


def sweep_identities_of_shard(shard):
    """The identities of sweep shard `shard`: the run's cut, the last one cut short."""
    per_shard = config["plan"]["identities_per_shard"]
    return max(0, min(per_shard, SWEEP.identities - shard * per_shard))


if workflow.is_main_process and SWEEP.variants:
    MEASURED = sweeps.measured_seconds_per_image(Path(RESULTS))
    if MEASURED is None:
        RATE = (config["cluster"]["seconds_per_image"], "cluster.seconds_per_image")
    else:
        RATE = (MEASURED[0], f"measured by {MEASURED[1]} generation jobs of this run")
    for line in sweeps.cost_lines(
        SWEEP, *RATE, [sweep_identities_of_shard(s) for s in SWEEP_SHARDS]
    ):
        print(line, file=sys.stderr)


def variant_config(wildcards):
    return SWEEP.variant(wildcards.variant).config


def generation_config(wildcards):
    return SWEEP.generations()[wildcards.generation]


def variant_generation(wildcards, path):
    """`path` in the generation folder of the variant `wildcards.variant`."""
    generation = SWEEP.variant(wildcards.variant).generation
    return results(SWEEP_GENERATION.format(generation=generation) + path)


def sweep_manifests(wildcards):
    return [
        variant_generation(wildcards, f"shards/{shard}/manifest.parquet")
        for shard in SWEEP_SHARDS
    ]


def sweep_plans(wildcards):
    return [variant_generation(wildcards, f"plan/{shard}.h5") for shard in SWEEP_SHARDS]


def sweep_compared_embeddings(wildcards):
    """compared_embeddings of a variant: its own generated images', the rest the run's."""
    shared = compared_embeddings(wildcards)
    if config["evaluation"]["recognizer"]:
        shared["generated"] = [
            variant_generation(wildcards, f"evaluation/embeddings/generated/{shard}.h5")
            for shard in SWEEP_SHARDS
        ]
    else:
        shared["generated"] = [results(f"{SWEEP_VARIANT}embeddings/generated.h5")]
    return {
        name: expand(paths, variant=wildcards.variant) for name, paths in shared.items()
    }


def sweep_donors(wildcards):
    """--donors of a generation shard: the same shard of the run and of every generation
    folder, whose images of an equal key it copies instead of generating them. A pattern the
    job's shell expands, so that adding a variant changes no other shard's params (which would
    rerun it); the shard's own folder and any that does not exist yet are passed over.
    """
    shard = f"shards/{wildcards.shard}"
    return f"--donors {results(shard)} {results(f'sweep/{sweeps.GENERATED}/*/{shard}')}"


def sweep_generation_runtime(wildcards, attempt):
    """generation_runtime of a sweep shard: its own identities and images per identity."""
    images = (
        max(1, sweep_identities_of_shard(int(wildcards.shard)))
        * generation_config(wildcards)["plan"]["images_per_identity"]
    )
    minutes = 10 + 2 * images * config["cluster"]["seconds_per_image"] / 60
    return round(minutes * (1 + 0.5 * (attempt - 1)))


def sweep_training_leaks(wildcards):
    """The variant's own benchmark leaks, left out of its training as the run's are."""
    settings = variant_config(wildcards)
    if settings["train"]["exclude_benchmark_leaks"] and settings["benchmark"]["bins"]:
        return results(f"{SWEEP_VARIANT}evaluation/benchmark_leaks.csv")
    return []


def sweep_training_settings_json(wildcards):
    """train's slice of a variant's config, as the run's own recognizer's (no mix-in)."""
    settings = json.loads(settings_json("train", variant_config(wildcards)))
    settings["train"].pop("mixin_mode")
    settings["train"].pop("finetune")
    return json.dumps(settings, sort_keys=True)


def sweep_training_runtime(wildcards, attempt):
    """training_runtime of a variant: its identities' images."""
    settings = variant_config(wildcards)
    train = settings["train"]
    gpus = max(1, train["gpus"])
    images = (
        SWEEP.identities * settings["plan"]["images_per_identity"] * train["epochs"]
    )
    if train["max_steps"] is not None:
        images = min(images, train["max_steps"] * train["batch_size"] * gpus)
    return round(20 + 1.5 * images / (train["images_per_second"] * gpus) / 60)


def sweep_variant_files(path):
    """`path` of every variant, in the summary's order."""
    return [
        results(SWEEP_VARIANT.format(variant=variant.name) + path)
        for variant in SWEEP.variants
    ]
