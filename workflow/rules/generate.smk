rule generate:
    input:
        plan=results("plan/{shard}.h5"),
        delta=results("delta.h5"),
    output:
        # The shard's commit record, written last. Its images live beside it but are not
        # declared: Snakemake would delete them before a rerun, and a rerun resumes from them.
        results("shards/{shard}/manifest.parquet"),
    log:
        results("logs/generate/{shard}.log"),
    benchmark:
        results("benchmarks/generate/{shard}.tsv")
    conda:
        "../../envs/gpu.yaml"
    container:
        CONTAINER
    envmodules:
        *ENVMODULES["gpu"],
    resources:
        runtime=generation_runtime,
    params:
        config=settings(stages.generate),
    shell:
        # exec: SIGTERM from SLURM reaches Python itself, which stops cleanly, rather than the
        # shell around it.
        "exec python -m digi2real generate --config {params.config:q} --plan {input.plan}"
        " --delta {input.delta} --out {output} > {log} 2>&1"
