rule hash_models:
    input:
        model_files,
    output:
        results("models.json"),
    log:
        job_log("hash_models"),
    benchmark:
        job_benchmark("hash_models")
    conda:
        "../../envs/cpu.yaml"
    envmodules:
        *ENVMODULES["cpu"],
    params:
        config=settings_json("hash_models"),
    shell:
        "python -m digi2real hash-models --config {params.config:q} --out {output} > {log} 2>&1"


rule generate:
    input:
        plan=results("plan/{shard}.h5"),
        delta=results("delta.h5"),
        models=results("models.json"),
    output:
        # The shard's commit record, written last. Its images live beside it but are not
        # declared: Snakemake would delete them before a rerun, and a rerun reuses those whose
        # key (settings, models, Δ, condition, seed) still matches.
        results("shards/{shard}/manifest.parquet"),
    log:
        job_log("generate", "{shard}"),
    benchmark:
        job_benchmark("generate", "{shard}")
    conda:
        "../../envs/gpu.yaml"
    envmodules:
        *ENVMODULES["gpu"],
    # The threads the job computes with (generation.cpu_threads, fixed so that a rerun on
    # other CPUs is bitwise the same): one drives the GPU, one stores and checks the previous
    # batch meanwhile.
    threads: config["generation"]["cpu_threads"]
    resources:
        runtime=generation_runtime,
    params:
        config=settings_json("generate"),
        # A sweep's generation (sweep_generate): --donors, the shards that may hold its images.
        donors="",
    shell:
        # exec: SIGTERM from SLURM reaches Python itself, which stops cleanly, rather than the
        # shell around it.
        "exec python -m digi2real generate --config {params.config:q} --plan {input.plan}"
        " --delta {input.delta} --models {input.models} --out {output} {params.donors}"
        " > {log} 2>&1"
