# The dataset's verdict: a recognizer trained on its export, then tested on real benchmarks.
# `run` is the prefix of a sub-run under the results: "" for the run's own dataset,
# "baseline/digiface/" for the same recipe on the DigiFace sources (train.baseline), "mixin/"
# for the dataset with its real mix-in (export.mixin, train.mixin_mode), and
# "checkpoints/<name>/" for a backbone trained elsewhere (benchmark.checkpoints).


rule train:
    input:
        export=training_export,
        leaks=training_leaks,
        real_leaks=training_real_leaks,
        init=finetuned_backbone,
        bins=benchmark_files,
    output:
        backbone=results("{run}train/backbone.pt"),
        metrics=results("{run}train/metrics.jsonl"),
    log:
        job_log("train", run="{run}"),
    benchmark:
        job_benchmark("train", run="{run}")
    conda:
        "../../envs/gpu.yaml"
    envmodules:
        *ENVMODULES["gpu"],
    # One process per GPU, each with its loader workers; on the CPU, train.cpu_threads.
    threads: training_threads()
    resources:
        gpu=config["train"]["gpus"],
        mem_mb=training_memory,
        runtime=training_runtime,
    params:
        config=training_settings_json,
        # Not an output: Snakemake would delete the checkpoint before the retry that resumes it.
        work=lambda wildcards, output: os.path.join(
            os.path.dirname(output.backbone), "work"
        ),
        leaks=lambda wildcards, input: f"--leaks {input.leaks}" if input.leaks else "",
        real_leaks=lambda wildcards, input: (
            f"--real-leaks {input.real_leaks}" if input.real_leaks else ""
        ),
        init=lambda wildcards, input: f"--init {input.init}" if input.init else "",
        classes=training_classes,
    shell:
        # exec: SIGTERM from SLURM reaches the trainer rather than the shell around it (with
        # train.gpus > 1, the trainer starts torchrun and its processes, which all get it too).
        "exec python -m digi2real train --config {params.config:q}"
        " --export {input.export} --work {params.work} --backbone {output.backbone}"
        " --metrics {output.metrics} --classes {params.classes} {params.leaks}"
        " {params.real_leaks} {params.init} > {log} 2>&1"


rule benchmark:
    input:
        backbone=trained_backbone,
        bins=benchmark_files,
        ijb=ijb_files,
    output:
        results("{run}benchmark.json"),
    log:
        job_log("benchmark", run="{run}"),
    benchmark:
        job_benchmark("benchmark", run="{run}")
    conda:
        "../../envs/gpu.yaml"
    envmodules:
        *ENVMODULES["gpu"],
    resources:
        gpu=lambda wildcards: 1 if config["train"]["gpus"] else 0,
    params:
        config=settings_json("benchmark"),
        network=backbone_network,
    shell:
        "python -m digi2real benchmark --config {params.config:q} --backbone {input.backbone}"
        " --network {params.network} --out {output} > {log} 2>&1"
