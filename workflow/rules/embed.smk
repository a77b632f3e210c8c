rule embed:
    input:
        results("index/{dataset}.parquet"),
    output:
        results("embeddings/{dataset}/{shard}.h5"),
    log:
        results("logs/embed/{dataset}/{shard}.log"),
    benchmark:
        results("benchmarks/embed/{dataset}/{shard}.tsv")
    conda:
        "../../envs/cpu.yaml"
    container:
        CONTAINER
    envmodules:
        *ENVMODULES["cpu"],
    params:
        config=embed_settings,
        shard_size=embed_shard_size,
    shell:
        "python -m digi2real embed {wildcards.dataset} --config {params.config:q} --index {input}"
        " --shard {wildcards.shard} --shard-size {params.shard_size} --out {output} > {log} 2>&1"


rule merge_embeddings:
    input:
        index=results("index/{dataset}.parquet"),
        shards=embed_shards,
    output:
        results("embeddings/{dataset}.h5"),
    log:
        results("logs/merge_embeddings/{dataset}.log"),
    benchmark:
        results("benchmarks/merge_embeddings/{dataset}.tsv")
    conda:
        "../../envs/cpu.yaml"
    container:
        CONTAINER
    envmodules:
        *ENVMODULES["cpu"],
    shell:
        "python -m digi2real merge-embeddings --index {input.index} --out {output}"
        " {input.shards} > {log} 2>&1"
