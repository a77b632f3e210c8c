rule demo_assets:
    output:
        f"{config['demo']}/built.txt" if config["demo"] else "demo/built.txt",
    log:
        results("logs/demo_assets.log"),
    benchmark:
        results("benchmarks/demo_assets.tsv")
    conda:
        "../../envs/cpu.yaml"
    container:
        CONTAINER
    envmodules:
        *ENVMODULES["cpu"],
    shell:
        "python -m digi2real demo-assets $(dirname {output}) > {log} 2>&1"


rule index:
    input:
        demo_assets,
    output:
        results("index/{dataset}.parquet"),
    log:
        results("logs/index/{dataset}.log"),
    benchmark:
        results("benchmarks/index/{dataset}.tsv")
    conda:
        "../../envs/cpu.yaml"
    container:
        CONTAINER
    envmodules:
        *ENVMODULES["cpu"],
    params:
        config=lambda wildcards: settings(wildcards.dataset),
    shell:
        "python -m digi2real index {wildcards.dataset} --config {params.config:q} --out {output} > {log} 2>&1"
