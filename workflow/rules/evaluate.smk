rule embed_generated:
    input:
        results("shards/{shard}/manifest.parquet"),
    output:
        results("evaluation/embeddings/generated/{shard}.h5"),
    log:
        job_log("embed_generated", "{shard}"),
    benchmark:
        job_benchmark("embed_generated", "{shard}")
    conda:
        "../../envs/cpu.yaml"
    envmodules:
        *ENVMODULES["cpu"],
    params:
        config=settings_json("embed_generated"),
    shell:
        "python -m digi2real embed-generated --config {params.config:q} --manifest {input}"
        " --out {output} > {log} 2>&1"


rule evaluate:
    input:
        # The embeddings of one model: the generator's ArcFace, or evaluation.recognizer's.
        unpack(compared_embeddings),
        manifest=results("manifest.parquet"),
        plans=expand(results("plan/{shard}.h5"), shard=GENERATION_SHARDS),
    output:
        evaluation=results("evaluation.json"),
        tables=expand(
            results("evaluation/{table}.parquet"), table=stage("evaluate").TABLES
        ),
    log:
        job_log("evaluate"),
    benchmark:
        job_benchmark("evaluate")
    conda:
        "../../envs/cpu.yaml"
    envmodules:
        *ENVMODULES["cpu"],
    # numpy's matrix products, on the 2 cores the benchmark measured (README, "At scale")
    threads: 2
    params:
        # The evaluation's thresholds are read here only: changing them re-evaluates, nothing else.
        config=settings_json("evaluate"),
        tables=lambda wildcards, output: os.path.dirname(output.tables[0]),
        gallery=lambda wildcards, input: (
            f"--gallery {input.gallery}" if input.gallery else ""
        ),
    shell:
        "python -m digi2real evaluate --config {params.config:q} --manifest {input.manifest}"
        " --generated {input.generated} --digiface {input.digiface} --ffhq {input.ffhq}"
        " {params.gallery} --plans {input.plans} --out {output.evaluation}"
        " --tables {params.tables} > {log} 2>&1"
