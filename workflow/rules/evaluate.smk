rule evaluate:
    input:
        manifest=results("manifest.parquet"),
        generated=results("embeddings/generated.h5"),
        digiface=results("embeddings/digiface.h5"),
        ffhq=results("embeddings/ffhq.h5"),
        plans=expand(results("plan/{shard}.h5"), shard=GENERATION_SHARDS),
    output:
        evaluation=results("evaluation.json"),
        tables=expand(
            results("evaluation/{table}.parquet"), table=stages.evaluate.TABLES
        ),
    log:
        results("logs/evaluate.log"),
    threads: 4  # numpy's matrix products; capped by --cores locally
    benchmark:
        results("benchmarks/evaluate.tsv")
    conda:
        "../../envs/cpu.yaml"
    container:
        CONTAINER
    envmodules:
        *ENVMODULES["cpu"],
    params:
        # The evaluation's thresholds are read here only: changing them re-evaluates, nothing else.
        config=settings(stages.evaluate),
        tables=lambda wildcards, output: os.path.dirname(output.tables[0]),
    shell:
        "python -m digi2real evaluate --config {params.config:q} --manifest {input.manifest}"
        " --generated {input.generated} --digiface {input.digiface} --ffhq {input.ffhq}"
        " --plans {input.plans} --out {output.evaluation} --tables {params.tables} > {log} 2>&1"
