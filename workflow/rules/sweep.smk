# A sweep (config `sweep:`, digi2real/sweep.py): each variant a sub-run under
# results/sweep/<variant>/, made by the run's own rules used again with the variant's settings
# and paths (`use rule ... as sweep_<rule>`). The index, the embeddings, Δ and the model hashes
# are the run's; the plan and the images are a generation folder's,
# results/sweep/generated/<generation>/, shared by the variants that agree on every key they
# read; the rest is each variant's own.


wildcard_constraints:
    variant="|".join(map(re.escape, (variant.name for variant in SWEEP.variants))),
    generation="|".join(map(re.escape, SWEEP.generations())),


use rule plan as sweep_plan with:
    input:
        digiface=results("embeddings/digiface.h5"),
        real=lambda wildcards: real_faces_for("plan", generation_config(wildcards)),
    output:
        expand(
            results(SWEEP_GENERATION + "plan/{shard}.h5"),
            shard=SWEEP_SHARDS,
            allow_missing=True,
        ),
    log:
        job_log("plan", run=SWEEP_GENERATION),
    benchmark:
        job_benchmark("plan", run=SWEEP_GENERATION)
    params:
        config=lambda wildcards: settings_json("plan", generation_config(wildcards)),
        identities=f"--identities {SWEEP.identities}",


use rule generate as sweep_generate with:
    input:
        plan=results(SWEEP_GENERATION + "plan/{shard}.h5"),
        delta=results("delta.h5"),
        models=results("models.json"),
    output:
        results(SWEEP_GENERATION + "shards/{shard}/manifest.parquet"),
    log:
        job_log("generate", "{shard}", run=SWEEP_GENERATION),
    benchmark:
        job_benchmark("generate", "{shard}", run=SWEEP_GENERATION)
    resources:
        runtime=sweep_generation_runtime,
    params:
        config=lambda wildcards: settings_json("generate", generation_config(wildcards)),
        donors=sweep_donors,


use rule embed_generated as sweep_embed_generated with:
    input:
        results(SWEEP_GENERATION + "shards/{shard}/manifest.parquet"),
    output:
        results(SWEEP_GENERATION + "evaluation/embeddings/generated/{shard}.h5"),
    log:
        job_log("embed_generated", "{shard}", run=SWEEP_GENERATION),
    benchmark:
        job_benchmark("embed_generated", "{shard}", run=SWEEP_GENERATION)
    params:
        config=lambda wildcards: settings_json(
            "embed_generated", generation_config(wildcards)
        ),


use rule aggregate as sweep_aggregate with:
    input:
        manifests=sweep_manifests,
        real=lambda wildcards: real_faces_for("quality", variant_config(wildcards)),
    output:
        manifest=results(SWEEP_VARIANT + "manifest.parquet"),
        csv=results(SWEEP_VARIANT + "manifest.csv"),
        embeddings=results(SWEEP_VARIANT + "embeddings/generated.h5"),
    log:
        job_log("aggregate", run=SWEEP_VARIANT),
    benchmark:
        job_benchmark("aggregate", run=SWEEP_VARIANT)
    params:
        config=lambda wildcards: settings_json("aggregate", variant_config(wildcards)),
        # The manifest's archives are named from the results folder: a generation folder's.
        results=RESULTS,


use rule evaluate as sweep_evaluate with:
    input:
        unpack(sweep_compared_embeddings),
        benchmarks=benchmark_embeddings,
        manifest=results(SWEEP_VARIANT + "manifest.parquet"),
        plans=sweep_plans,
    output:
        evaluation=results(SWEEP_VARIANT + "evaluation.json"),
        tables=expand(
            results(SWEEP_VARIANT + "evaluation/{table}.parquet"),
            table=stage("evaluate").TABLES,
            allow_missing=True,
        ),
        benchmark_leaks=results(
            SWEEP_VARIANT + f"evaluation/{stage('evaluate').BENCHMARK_LEAKS}"
        ),
    log:
        job_log("evaluate", run=SWEEP_VARIANT),
    benchmark:
        job_benchmark("evaluate", run=SWEEP_VARIANT)
    params:
        config=lambda wildcards: settings_json("evaluate", variant_config(wildcards)),


# The variant's certificate: its page, table and figures (no mix-in: a variant is synthetic).
use rule report as sweep_report with:
    input:
        manifest=results(SWEEP_VARIANT + "manifest.parquet"),
        evaluation=results(SWEEP_VARIANT + "evaluation.json"),
        tables=expand(
            results(SWEEP_VARIANT + "evaluation/{table}.parquet"),
            table=stage("evaluate").TABLES,
            allow_missing=True,
        ),
        mixin=[],
        mixin_leaks=[],
    output:
        samples=results(SWEEP_VARIANT + "samples.png"),
        certificate=results(SWEEP_VARIANT + "report/certificate.html"),
        certificate_table=results(SWEEP_VARIANT + "report/certificate.csv"),
        figures=[
            results(SWEEP_VARIANT + f"report/{figure}.png")
            for figure in stage("report").FIGURES
        ],
    log:
        job_log("report", run=SWEEP_VARIANT),
    benchmark:
        job_benchmark("report", run=SWEEP_VARIANT)
    params:
        config=lambda wildcards: settings_json("report", variant_config(wildcards)),
        results=RESULTS,


# With train.enabled, each variant's recognizer: trained on its own export (train.data's
# format) as the run's own is, then benchmarked.
use rule export_recordio as sweep_export_recordio with:
    input:
        manifest=results(SWEEP_VARIANT + "manifest.parquet"),
        mixin=[],
    output:
        directory(results(SWEEP_VARIANT + "export/recordio")),
    log:
        job_log("export_recordio", run=SWEEP_VARIANT),
    benchmark:
        job_benchmark("export_recordio", run=SWEEP_VARIANT)
    params:
        config=lambda wildcards: settings_json(
            "export_recordio", variant_config(wildcards)
        ),
        results=RESULTS,


use rule export_webdataset as sweep_export_webdataset with:
    input:
        manifest=results(SWEEP_VARIANT + "manifest.parquet"),
        mixin=[],
    output:
        directory(results(SWEEP_VARIANT + "export/webdataset")),
    log:
        job_log("export_webdataset", run=SWEEP_VARIANT),
    benchmark:
        job_benchmark("export_webdataset", run=SWEEP_VARIANT)
    params:
        config=lambda wildcards: settings_json(
            "export_webdataset", variant_config(wildcards)
        ),
        results=RESULTS,


use rule train as sweep_train with:
    input:
        export=results(SWEEP_VARIANT + f"export/{config['train']['data']}"),
        leaks=sweep_training_leaks,
        real_leaks=[],
        init=[],
        bins=benchmark_files,
    output:
        backbone=results(SWEEP_VARIANT + "train/backbone.pt"),
        metrics=results(SWEEP_VARIANT + "train/metrics.jsonl"),
    log:
        job_log("train", run=SWEEP_VARIANT),
    benchmark:
        job_benchmark("train", run=SWEEP_VARIANT)
    resources:
        gpu=config["train"]["gpus"],
        mem_mb=training_memory,
        runtime=sweep_training_runtime,
    params:
        config=sweep_training_settings_json,
        classes="synthetic",


use rule benchmark as sweep_benchmark with:
    input:
        backbone=results(SWEEP_VARIANT + "train/backbone.pt"),
        bins=benchmark_files,
        ijb=ijb_files,
    output:
        results(SWEEP_VARIANT + "benchmark.json"),
    log:
        job_log("benchmark", run=SWEEP_VARIANT),
    benchmark:
        job_benchmark("benchmark", run=SWEEP_VARIANT)
    params:
        config=lambda wildcards: settings_json("benchmark", variant_config(wildcards)),
        network=lambda wildcards: variant_config(wildcards)["train"]["network"],


# The variants compared: summary.csv and the report's sweep page.
rule report_sweep:
    input:
        # Each variant's certificate is made before the comparison links to them.
        certificates=sweep_variant_files("report/certificate.html"),
        evaluations=sweep_variant_files("evaluation.json"),
        manifests=sweep_variant_files("manifest.parquet"),
        benchmarks=(
            sweep_variant_files("benchmark.json") if config["train"]["enabled"] else []
        ),
    output:
        summary=results(f"sweep/{sweeps.SUMMARY}"),
        page=report(
            results("sweep/report/sweep.html"),
            caption="../report/sweep.rst",
            category="4. Sweep",
        ),
        figures=report(
            results("sweep/report/settings.png"),
            caption="../report/sweep_settings.rst",
            category="4. Sweep",
        ),
        samples=report(
            results("sweep/report/samples.png"),
            caption="../report/sweep_samples.rst",
            category="4. Sweep",
        ),
    log:
        job_log("report_sweep"),
    benchmark:
        job_benchmark("report_sweep")
    conda:
        "../../envs/cpu.yaml"
    envmodules:
        *ENVMODULES["cpu"],
    params:
        config=settings_json("report_sweep"),
        variants=json.dumps(sweeps.described(SWEEP), sort_keys=True),
        results=RESULTS,
        benchmarks=lambda wildcards, input: (
            f"--benchmarks {input.benchmarks}" if input.benchmarks else ""
        ),
    shell:
        "python -m digi2real report-sweep --config {params.config:q}"
        " --results {params.results} --variants {params.variants:q}"
        " --evaluations {input.evaluations} --manifests {input.manifests}"
        " {params.benchmarks} --summary {output.summary} --page {output.page}"
        " --figures {output.figures} --samples {output.samples} > {log} 2>&1"
