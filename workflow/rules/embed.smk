# One rule for each embedding space (the wildcard `space`, its folder): the generator's
# ArcFace's, `embeddings/`, and evaluation.recognizer's, `evaluation/embeddings/`.
rule embed:
    input:
        results("index/{dataset}.parquet"),
    output:
        results("{space}/{dataset}/{shard}.h5"),
    log:
        job_log("embed", "{space}/{dataset}/{shard}"),
    benchmark:
        job_benchmark("embed", "{space}/{dataset}/{shard}")
    conda:
        "../../envs/cpu.yaml"
    envmodules:
        *ENVMODULES["cpu"],
    params:
        config=embed_settings_json,
        recognizer=recognizer_of_space,
        shard_size=embed_shard_size,
    shell:
        "python -m digi2real embed {wildcards.dataset} --config {params.config:q}"
        " --recognizer {params.recognizer} --index {input} --shard {wildcards.shard}"
        " --shard-size {params.shard_size} --out {output} > {log} 2>&1"


rule merge_embeddings:
    input:
        index=results("index/{dataset}.parquet"),
        shards=embed_shards,
    output:
        results("{space}/{dataset}.h5"),
    log:
        job_log("merge_embeddings", "{space}/{dataset}"),
    benchmark:
        job_benchmark("merge_embeddings", "{space}/{dataset}")
    conda:
        "../../envs/cpu.yaml"
    envmodules:
        *ENVMODULES["cpu"],
    shell:
        "python -m digi2real merge-embeddings --index {input.index} --out {output}"
        " {input.shards} > {log} 2>&1"


# The faces of benchmark.bins (aligned 112x112 crops), embedded in the space `evaluate`
# compares in (the wildcard `space`), so that its leakage search covers them.
rule embed_benchmarks:
    input:
        benchmark_files,
    output:
        results("{space}/benchmarks.h5"),
    log:
        job_log("embed_benchmarks", "{space}"),
    benchmark:
        job_benchmark("embed_benchmarks", "{space}")
    conda:
        "../../envs/cpu.yaml"
    envmodules:
        *ENVMODULES["cpu"],
    params:
        config=lambda wildcards: settings_json(
            "embed_benchmarks", recognizer=recognizer_of_space(wildcards)
        ),
        recognizer=recognizer_of_space,
    shell:
        "python -m digi2real embed-benchmarks --config {params.config:q}"
        " --recognizer {params.recognizer} --out {output} > {log} 2>&1"
