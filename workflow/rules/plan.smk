rule plan:
    input:
        results("embeddings/digiface.h5"),
    output:
        expand(results("plan/{shard}.h5"), shard=GENERATION_SHARDS),
    log:
        results("logs/plan.log"),
    benchmark:
        results("benchmarks/plan.tsv")
    conda:
        "../../envs/cpu.yaml"
    container:
        CONTAINER
    envmodules:
        *ENVMODULES["cpu"],
    params:
        config=settings(stages.plan),
    shell:
        "python -m digi2real plan --config {params.config:q} --embeddings {input}"
        " --out {output} > {log} 2>&1"
